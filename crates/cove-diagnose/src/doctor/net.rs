//! `cove doctor`'s network checks: whether this process may manage cove networks (or exactly
//! what it lacks), and for each network whether what isolates it and serves it exists on the
//! host. The caller finds the facts (cove-net); this only judges them.

use super::{Check, Level};
use serde::Serialize;

/// What the caller found of cove networks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkFacts {
    /// What this process lacks to manage networks, said for people; `None`: nothing.
    pub missing: Option<String>,
    /// The records could not be read (said for people).
    pub unreadable: Option<String>,
    pub networks: Vec<NetworkHealth>,
}

/// One network as the host has it right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkHealth {
    pub name: String,
    pub bridge: String,
    /// The bridge exists and is administratively up.
    pub bridge_up: bool,
    /// The pid of the network's dnsmasq when it runs.
    pub dnsmasq: Option<u32>,
    /// The nftables table holding the network's isolation (and NAT) rules.
    pub table: String,
    /// Whether the table exists; `None` when it cannot be read (without CAP_NET_ADMIN).
    pub table_present: Option<bool>,
    /// VMs on the network.
    pub vms: usize,
}

const REPAIR: &str =
    "start a VM on it (`cove start VM`): a start makes whatever of its network is missing";

/// The checks of [`NetworkFacts`].
pub fn checks(facts: &NetworkFacts) -> Vec<Check> {
    let mut out = vec![match &facts.missing {
        None => Check::new(
            "network privileges",
            Level::Ok,
            "CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE; ip, nft and dnsmasq found",
            None,
        ),
        Some(missing) => Check::new(
            "network privileges",
            Level::Warn,
            format!("`--network` is unavailable: it needs {missing}"),
            Some("run cove as root for cove networks; user-mode networking needs none of this"),
        ),
    }];
    if let Some(why) = &facts.unreadable {
        out.push(Check::new(
            "networks",
            Level::Warn,
            format!("cannot read the network records: {why}"),
            None,
        ));
    }
    out.extend(facts.networks.iter().map(network));
    out
}

fn network(n: &NetworkHealth) -> Check {
    let name = format!("network {}", n.name);
    let bridge = if n.bridge_up {
        format!("bridge {} up", n.bridge)
    } else {
        format!("bridge {} down or absent", n.bridge)
    };
    let dnsmasq = match n.dnsmasq {
        Some(pid) => format!("dnsmasq pid {pid}"),
        None => "no dnsmasq".to_owned(),
    };
    let table = match n.table_present {
        Some(true) => format!("nftables table {} present", n.table),
        Some(false) => format!("nftables table {} ABSENT", n.table),
        None => format!("nftables table {} unreadable", n.table),
    };
    let detail = format!("{bridge}, {dnsmasq}, {table}; {} VM(s)", n.vms);
    if n.bridge_up && n.table_present == Some(false) {
        return Check::new(
            &name,
            Level::Fail,
            format!("{detail}: its VMs are NOT isolated (nor NATed)"),
            Some(REPAIR),
        );
    }
    if n.table_present.is_none() {
        return Check::new(
            &name,
            Level::Warn,
            format!("{detail}: isolation cannot be checked without CAP_NET_ADMIN"),
            Some("run `sudo cove doctor`"),
        );
    }
    match (
        n.bridge_up,
        n.dnsmasq.is_some(),
        n.table_present == Some(true),
    ) {
        (true, true, true) => Check::new(&name, Level::Ok, detail, None),
        // After a host reboot nothing of a network exists until a VM on it starts.
        (false, false, false) => Check::new(
            &name,
            Level::Ok,
            format!("{detail}: down, made again when a VM on it starts"),
            None,
        ),
        (true, false, _) => Check::new(
            &name,
            Level::Warn,
            format!(
                "{detail}: no DHCP or DNS, so new guests get no address and names do not resolve"
            ),
            Some(REPAIR),
        ),
        _ => Check::new(
            &name,
            Level::Warn,
            format!("{detail}: partly up"),
            Some(REPAIR),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(bridge_up: bool, dnsmasq: Option<u32>, table: Option<bool>) -> NetworkHealth {
        NetworkHealth {
            name: "lab".into(),
            bridge: "covebr1".into(),
            bridge_up,
            dnsmasq,
            table: "cove_net1".into(),
            table_present: table,
            vms: 2,
        }
    }

    fn judge(h: NetworkHealth) -> Check {
        checks(&NetworkFacts {
            networks: vec![h],
            ..Default::default()
        })
        .pop()
        .unwrap()
    }

    #[test]
    fn a_bridge_up_without_its_rules_fails_as_unisolated() {
        let c = judge(health(true, Some(7), Some(false)));
        assert_eq!(c.status, Level::Fail);
        assert!(c.detail.contains("cove_net1 ABSENT") && c.detail.contains("NOT isolated"));
        let up = judge(health(true, Some(7), Some(true)));
        assert_eq!(up.status, Level::Ok);
        assert!(up.detail.contains("covebr1 up") && up.detail.contains("dnsmasq pid 7"));
        // Down whole after a reboot is no fault; a dead dnsmasq on a live bridge is.
        assert_eq!(judge(health(false, None, Some(false))).status, Level::Ok);
        assert_eq!(judge(health(true, None, Some(true))).status, Level::Warn);
        assert_eq!(judge(health(true, Some(7), None)).status, Level::Warn);
    }

    #[test]
    fn missing_privileges_are_named_and_are_a_warning() {
        let c = checks(&NetworkFacts {
            missing: Some("the capabilities CAP_NET_ADMIN".into()),
            ..Default::default()
        });
        assert_eq!(c[0].status, Level::Warn);
        assert!(c[0].detail.contains("CAP_NET_ADMIN"));
    }
}
