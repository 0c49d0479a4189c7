//! What a cove network needs from the host, checked before anything is created, so that an
//! unprivileged user hears exactly what is missing instead of a failing `ip` command.

use std::fmt;

/// Linux capability numbers (`linux/capability.h`).
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// The capabilities and programs a network needs that this process lacks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Missing {
    pub capabilities: Vec<&'static str>,
    /// (program, Debian package)
    pub programs: Vec<(&'static str, &'static str)>,
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.capabilities.is_empty() && self.programs.is_empty()
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.capabilities.is_empty() {
            parts.push(format!(
                "the capabilities {} (bridges, TAPs and nftables need CAP_NET_ADMIN; dnsmasq's DHCP and DNS \
                 need CAP_NET_RAW and CAP_NET_BIND_SERVICE): run cove as root, e.g. `sudo cove …`",
                self.capabilities.join(", ")
            ));
        }
        if !self.programs.is_empty() {
            let pkgs: Vec<_> = self.programs.iter().map(|(_, p)| *p).collect();
            let progs: Vec<_> = self.programs.iter().map(|(p, _)| *p).collect();
            parts.push(format!(
                "the programs {} (`apt-get install {}`)",
                progs.join(", "),
                pkgs.join(" ")
            ));
        }
        write!(f, "{}", parts.join("; and "))
    }
}

/// The programs a network runs, with the Debian package of each.
pub const PROGRAMS: [(&str, &str); 3] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("dnsmasq", "dnsmasq-base"),
];

/// What this process lacks to manage networks.
pub fn missing() -> Missing {
    let eff = effective_caps().unwrap_or(0);
    let capabilities = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
        (CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    let programs = PROGRAMS
        .into_iter()
        .filter(|(p, _)| cove_util::path::which(p).is_none())
        .collect();
    Missing {
        capabilities,
        programs,
    }
}

/// Whether this process may change nftables rules, bridges and TAPs (CAP_NET_ADMIN).
pub fn has_net_admin() -> bool {
    effective_caps().is_some_and(|eff| eff & (1 << CAP_NET_ADMIN) != 0)
}

/// The effective capability set, from `/proc/self/status` (`CapEff:` in hex).
fn effective_caps() -> Option<u64> {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_proc_status() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t0000000000003000\n"),
            Some(0x3000)
        );
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn the_message_names_each_missing_capability_and_package() {
        let m = Missing {
            capabilities: vec!["CAP_NET_ADMIN"],
            programs: vec![("dnsmasq", "dnsmasq-base")],
        };
        let text = m.to_string();
        assert!(text.contains("CAP_NET_ADMIN") && text.contains("apt-get install dnsmasq-base"));
    }
}
