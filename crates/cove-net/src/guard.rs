//! One host-wide nftables table, `inet cove_guard`, that keeps every process running under a
//! VMM identity (QEMU and passt drop to one when cove runs as root, `cove_backend::RunAs`) off
//! link-local addresses. A guest's user-mode traffic leaves the host from those processes'
//! sockets, and 169.254.169.254 is where clouds serve instance metadata, credentials included;
//! Debian 12's passt has no filter of its own. The rule matches the socket's owner, so nothing
//! else on the host is touched, and replacing the table is one `nft` transaction, the same
//! whoever applies it (any number of supervisors may, at once).

use std::ops::RangeInclusive;
use std::process::Command;

/// The table's name (family `inet`).
pub const TABLE: &str = "cove_guard";

/// The whole table, refusing link-local destinations (IPv4 169.254.0.0/16, IPv6 fe80::/10) to
/// sockets owned by `uids`; a refused connect fails at once (ICMP unreachable) instead of
/// hanging the guest's client.
pub fn ruleset(uids: RangeInclusive<u32>) -> String {
    let owner = format!("meta skuid {}-{}", uids.start(), uids.end());
    // `add` then `delete` makes the delete succeed whether or not the table existed; the whole
    // text is one transaction, so the rules are never missing while being replaced.
    format!(
        "add table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         # Written by cove: no VMM-side process reaches link-local addresses (cloud metadata).\n\
         table inet {TABLE} {{\n    \
         chain output {{\n        \
         type filter hook output priority filter; policy accept;\n        \
         {owner} ip daddr 169.254.0.0/16 reject\n        \
         {owner} ip6 daddr fe80::/10 reject\n    \
         }}\n\
         }}\n"
    )
}

/// `nft` reading [`ruleset`] from its standard input; the caller spawns it (the supervisor does
/// while the VMM starts) and writes the ruleset to it.
pub fn apply_command() -> Command {
    let mut cmd = crate::command("nft");
    cmd.args(["-f", "-"]);
    cmd
}

/// Whether the table is in place (`None`: `nft` could not be asked).
pub fn present() -> Option<bool> {
    let out = crate::output("nft", &["list", "table", "inet", TABLE]).ok()?;
    Some(out.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_name_only_the_vmm_identities_and_link_local_addresses() {
        let text = ruleset(100..=199);
        assert!(text.starts_with("add table inet cove_guard\ndelete table inet cove_guard\n"));
        assert_eq!(text.matches("meta skuid 100-199 ").count(), 2, "{text}");
        assert!(text.contains("ip daddr 169.254.0.0/16 reject"), "{text}");
        assert!(text.contains("ip6 daddr fe80::/10 reject"), "{text}");
        assert!(text.contains("hook output"), "{text}");
    }

    /// The table applies with the real `nft` (where this runs with CAP_NET_ADMIN, in a network
    /// namespace of its own so the host's rules are not touched).
    #[test]
    fn nft_accepts_the_table() {
        let unshare = Command::new("unshare").args(["--net", "true"]).status();
        if !unshare.is_ok_and(|s| s.success()) {
            eprintln!("no network namespace here (needs CAP_SYS_ADMIN): nothing to apply");
            return;
        }
        let mut script = std::env::temp_dir();
        script.push(format!("cove-guard-{}.nft", std::process::id()));
        std::fs::write(&script, ruleset(100..=199)).unwrap();
        // Twice: applying again replaces the table.
        let out = Command::new("unshare")
            .args(["--net", "sh", "-c"])
            .arg(format!(
                "nft -f {0} && nft -f {0} && nft list table inet {TABLE}",
                script.display()
            ))
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&script);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(listed.matches("reject").count(), 2, "{listed}");
    }
}
