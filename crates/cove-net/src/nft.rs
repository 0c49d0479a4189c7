//! The nftables rules of one network, all in one table of its own (`inet cove_net<id>`), so
//! removing the network is deleting that table, and nothing cove does touches anyone else's
//! rules. Applied with `nft -f` from a file in the network's directory (kept for inspection).

use crate::{NetError, run};
use cove_state::net::{BRIDGE_PREFIX, NetworkRecord};
use std::path::Path;

/// The table's whole definition. Isolation by default:
/// - input: a guest reaches the host only at the network's own address (DNS, DHCP and
///   whatever the host serves there), never the host's other addresses or its loopback;
/// - forward: traffic stays on its bridge or, with NAT, goes out to a non-cove interface;
///   nothing crosses from one cove network to another (each network's table drops that, and a
///   packet must pass every table's hook), nothing from outside reaches in unless it answers,
///   and nothing goes out to a link-local address: on a cloud host 169.254.169.254 is the
///   instance's metadata service (credentials included), reached through the host's route.
pub fn ruleset(net: &NetworkRecord) -> String {
    let br = net.bridge();
    let gw = net.subnet.gateway();
    let subnet = net.subnet;
    let table = net.nft_table();
    let mut forward = vec![
        format!("iifname \"{br}\" oifname \"{br}\" accept"),
        format!("iifname \"{br}\" oifname \"{BRIDGE_PREFIX}*\" drop"),
        format!("oifname \"{br}\" iifname \"{BRIDGE_PREFIX}*\" drop"),
        format!("iifname \"{br}\" ip daddr 169.254.0.0/16 drop"),
        format!("oifname \"{br}\" ct state established,related accept"),
        format!("oifname \"{br}\" drop"),
    ];
    let mut nat = String::new();
    if net.nat {
        forward.push(format!("iifname \"{br}\" ip saddr {subnet} accept"));
        nat = format!(
            "\n    chain postrouting {{\n        type nat hook postrouting priority srcnat; policy accept;\n        \
             ip saddr {subnet} oifname != \"{br}\" masquerade\n    }}"
        );
    }
    forward.push(format!("iifname \"{br}\" drop"));
    let forward = forward.join("\n        ");
    format!(
        "# Written by cove for network `{name}`; `cove network rm {name}` deletes the table.\n\
         table inet {table} {{\n    \
         chain input {{\n        type filter hook input priority filter; policy accept;\n        \
         iifname \"{br}\" udp dport 67 accept\n        \
         iifname \"{br}\" ip daddr {gw} accept\n        \
         iifname \"{br}\" drop\n    }}\n    \
         chain forward {{\n        type filter hook forward priority filter; policy accept;\n        \
         {forward}\n    }}{nat}\n}}\n",
        name = net.name
    )
}

/// Replaces the table with [`ruleset`] atomically (one `nft -f` transaction).
pub fn apply(net: &NetworkRecord, file: &Path) -> Result<(), NetError> {
    // `add` then `delete` makes the delete succeed whether or not the table existed, and the
    // whole file is one transaction: the old rules are never gone while the new are missing.
    let text = format!(
        "add table inet {t}\ndelete table inet {t}\n{}",
        ruleset(net),
        t = net.nft_table()
    );
    crate::write_private(file, text.as_bytes()).map_err(|source| NetError::Io {
        what: format!("writing {}", file.display()),
        source,
    })?;
    run("nft", &["-f".as_ref(), file.as_os_str()])?;
    Ok(())
}

const HOLD_PREFIX: &str = "cove_hold_";

/// The table that holds a TAP: `cove_hold_<tap>` (`-` is not for table names).
pub fn hold_table(tap: &str) -> String {
    format!("{HOLD_PREFIX}{}", tap.replace('-', "_"))
}

/// The family of one of cove's tables: a hold is `netdev`, a network's rules `inet`.
fn family(table: &str) -> &'static str {
    if table.starts_with(HOLD_PREFIX) {
        "netdev"
    } else {
        "inet"
    }
}

/// A table dropping every frame that enters the host from `tap`, at its ingress hook: before
/// the bridge sees it, learns its MAC or forwards it. Family `netdev`, which sees every
/// ethertype: an `inet` ingress chain sees only IP, and let through the ARP and RARP
/// announcements with the source's MAC that a restored guest (and QEMU for it) sends, after
/// which the bridge sent the source's traffic to the clone.
pub fn hold_ruleset(tap: &str) -> String {
    format!(
        "# Written by cove: `{tap}` is held until its guest has moved to its own MAC and address.\n\
         table netdev {t} {{\n    chain ingress {{\n        \
         type filter hook ingress device \"{tap}\" priority filter; policy drop;\n    }}\n}}\n",
        t = hold_table(tap)
    )
}

/// Holds `tap` ([`hold_ruleset`]), in one `nft -f` transaction; holding it again is no change.
pub fn hold(tap: &str, file: &Path) -> Result<(), NetError> {
    let text = format!(
        "add table netdev {t}\ndelete table netdev {t}\n{}",
        hold_ruleset(tap),
        t = hold_table(tap)
    );
    crate::write_private(file, text.as_bytes()).map_err(|source| NetError::Io {
        what: format!("writing {}", file.display()),
        source,
    })?;
    run("nft", &["-f".as_ref(), file.as_os_str()])?;
    Ok(())
}

pub fn exists(table: &str) -> bool {
    crate::output("nft", &["list", "table", family(table), table]).is_ok_and(|o| o.status.success())
}

/// Deletes the table; a table already gone is success.
pub fn delete(table: &str) -> Result<(), NetError> {
    if exists(table) {
        run("nft", &["delete", "table", family(table), table])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(nat: bool) -> NetworkRecord {
        NetworkRecord {
            name: "lab".into(),
            id: 3,
            subnet: "10.117.3.0/24".parse().unwrap(),
            nat,
            domain: "cove".into(),
            created_at: 0,
        }
    }

    #[test]
    fn nat_network_masquerades_and_isolates() {
        let r = ruleset(&net(true));
        assert!(r.contains("table inet cove_net3 {"));
        assert!(r.contains("iifname \"covebr3\" ip daddr 10.117.3.1 accept"));
        assert!(r.contains("iifname \"covebr3\" oifname \"covebr*\" drop"));
        assert!(r.contains("ip saddr 10.117.3.0/24 oifname != \"covebr3\" masquerade"));
        // Drops to other cove bridges and to link-local addresses (cloud metadata) come
        // before the NAT accept.
        let nat_accept = r.find("ip saddr 10.117.3.0/24 accept");
        assert!(r.find("oifname \"covebr*\" drop") < nat_accept);
        let metadata = r.find("iifname \"covebr3\" ip daddr 169.254.0.0/16 drop");
        assert!(metadata.is_some() && metadata < nat_accept, "{r}");
    }

    #[test]
    fn a_held_tap_drops_all_it_brings_in_before_the_bridge() {
        let r = hold_ruleset("cvt3-12");
        assert!(r.contains("table netdev cove_hold_cvt3_12 {"));
        assert_eq!(family(&hold_table("cvt3-12")), "netdev");
        assert_eq!(family("cove_net3"), "inet");
        assert!(r.contains("hook ingress device \"cvt3-12\" priority filter; policy drop;"));
        assert!(!r.contains("accept"));
    }

    #[test]
    fn no_nat_network_forwards_nothing_out() {
        let r = ruleset(&net(false));
        assert!(!r.contains("masquerade") && !r.contains("ip saddr 10.117.3.0/24 accept"));
        assert!(r.contains("iifname \"covebr3\" drop\n    }"));
    }
}
