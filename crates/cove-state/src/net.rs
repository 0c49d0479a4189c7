//! Records of cove networks: the networks, which VM sits on which (its address, MAC and TAP),
//! and every host object cove creates for them (bridges, TAPs, nftables tables, dnsmasq).
//!
//! A host object is recorded *before* it is created and forgotten only after it is gone, so
//! `network rm`, `delete` and the next command after a crash remove exactly what may exist.
//! The host side (creating and removing the objects) is `cove-net`; this module only keeps
//! the records, inside the same SQLite file as the VMs so one transaction covers both.

use crate::store::{Store, StoreError, now};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    id INTEGER UNIQUE NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS net_attachments (
    network TEXT NOT NULL,
    vm TEXT NOT NULL,
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    tap TEXT NOT NULL UNIQUE,
    PRIMARY KEY (network, vm),
    UNIQUE (network, ip)
);
CREATE TABLE IF NOT EXISTS net_objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    network TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"#;

/// An IPv4 subnet in CIDR notation, `10.117.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a usable subnet: give an IPv4 network in CIDR notation with a prefix from /16 to /29 and no host bits, e.g. 10.117.5.0/24"
)]
pub struct SubnetError(pub String);

impl Subnet {
    fn mask(self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The host address `n` of the subnet (0 is the network address).
    pub fn host(self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n < self.size() - 1).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// Addresses in the subnet, network and broadcast included.
    pub fn size(self) -> u32 {
        1 << (32 - self.prefix)
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(self, other: Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The host's own address on the network (gateway, DNS and DHCP server): the first.
    pub fn gateway(self) -> Ipv4Addr {
        self.host(1).expect("a /29 or larger has a first host")
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SubnetError(s.to_owned());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(16..=29).contains(&prefix) {
            return Err(bad());
        }
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 || network.is_loopback() {
            return Err(bad());
        }
        Ok(subnet)
    }
}

impl TryFrom<String> for Subnet {
    type Error = SubnetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One cove network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// A VM name's rules (letters, digits, `-`, `_`; it names files).
    pub name: String,
    /// Small and unique among networks: it names the host objects (`covebr<id>`).
    pub id: u32,
    pub subnet: Subnet,
    /// Whether guests may reach the world through the host (masquerade).
    pub nat: bool,
    /// Guests are `NAME.<domain>` on this network.
    pub domain: String,
    pub created_at: i64,
}

impl NetworkRecord {
    /// The Linux bridge (names are at most 15 bytes).
    pub fn bridge(&self) -> String {
        format!("{BRIDGE_PREFIX}{}", self.id)
    }

    /// The nftables table (family `inet`) holding every rule of this network.
    pub fn nft_table(&self) -> String {
        format!("cove_net{}", self.id)
    }
}

/// Every cove bridge's name starts with this; the isolation rules match it.
pub const BRIDGE_PREFIX: &str = "covebr";

/// A VM on a network: the address dnsmasq gives it, its MAC (how dnsmasq knows it) and its TAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub vm: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub tap: String,
}

/// A host object cove creates for a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Bridge,
    Tap,
    /// An nftables table: family `inet` (a network's rules), `netdev` (a held TAP).
    Nft,
    /// A dnsmasq instance; the name is its pid file.
    Dnsmasq,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Bridge => "bridge",
            ObjectKind::Tap => "tap",
            ObjectKind::Nft => "nft",
            ObjectKind::Dnsmasq => "dnsmasq",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "bridge" => ObjectKind::Bridge,
            "tap" => ObjectKind::Tap,
            "nft" => ObjectKind::Nft,
            "dnsmasq" => ObjectKind::Dnsmasq,
            other => return Err(StoreError::Corrupt(format!("unknown object kind {other}"))),
        })
    }
}

/// A recorded host object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostObject {
    pub kind: ObjectKind,
    pub name: String,
    pub network: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NetStoreError {
    #[error("a network named `{0}` already exists; `cove network ls` shows them")]
    Exists(String),
    #[error(
        "no network named `{0}`; `cove network ls` shows them, `cove network create {0}` makes it"
    )]
    NoSuchNetwork(String),
    #[error(
        "subnet {0} overlaps network `{1}` ({2}); pick another with `--subnet`, e.g. 10.117.200.0/24"
    )]
    Overlap(Subnet, String, Subnet),
    #[error("network `{0}` ({1}) has no free address left for another VM")]
    Full(String, Subnet),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// The first /24 under which cove picks subnets when none is given: 10.117.<id>.0/24.
const DEFAULT_BASE: [u8; 2] = [10, 117];

impl Store {
    /// Records a new network, choosing its id (and its subnet when `subnet` is `None`).
    pub fn create_network(
        &mut self,
        name: &str,
        subnet: Option<Subnet>,
        nat: bool,
        domain: &str,
    ) -> Result<NetworkRecord, NetStoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing = list_networks_in(&tx)?;
        if existing.iter().any(|n| n.name == name) {
            return Err(NetStoreError::Exists(name.to_owned()));
        }
        let id = (1..).find(|i| existing.iter().all(|n| n.id != *i)).unwrap();
        let subnet = match subnet {
            Some(s) => s,
            None => (1..=254u8)
                .map(|third| Subnet {
                    network: Ipv4Addr::new(DEFAULT_BASE[0], DEFAULT_BASE[1], third, 0),
                    prefix: 24,
                })
                .find(|s| existing.iter().all(|n| !n.subnet.overlaps(*s)))
                .ok_or(NetStoreError::Full(
                    name.to_owned(),
                    Subnet {
                        network: Ipv4Addr::new(10, 117, 0, 0),
                        prefix: 16,
                    },
                ))?,
        };
        if let Some(n) = existing.iter().find(|n| n.subnet.overlaps(subnet)) {
            return Err(NetStoreError::Overlap(subnet, n.name.clone(), n.subnet));
        }
        let record = NetworkRecord {
            name: name.to_owned(),
            id,
            subnet,
            nat,
            domain: domain.to_owned(),
            created_at: now(),
        };
        tx.execute(
            "INSERT INTO networks (name, id, record) VALUES (?1, ?2, ?3)",
            params![
                name,
                id,
                serde_json::to_string(&record).expect("serializes")
            ],
        )?;
        tx.commit()?;
        Ok(record)
    }

    pub fn get_network(&self, name: &str) -> Result<NetworkRecord, NetStoreError> {
        self.conn
            .query_row("SELECT record FROM networks WHERE name = ?1", [name], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|j| decode_network(&j))
            .transpose()?
            .ok_or_else(|| NetStoreError::NoSuchNetwork(name.to_owned()))
    }

    pub fn list_networks(&self) -> Result<Vec<NetworkRecord>, NetStoreError> {
        list_networks_in(&self.conn)
    }

    /// Forgets a network; its attachments and objects must have been removed first.
    pub fn delete_network(&mut self, name: &str) -> Result<(), NetStoreError> {
        self.conn
            .execute("DELETE FROM networks WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Puts `vm` on `network` (or returns its existing attachment): the lowest free address
    /// after the gateway, a MAC derived from network id and address, a TAP named after both.
    pub fn attach(&mut self, network: &str, vm: &str) -> Result<Attachment, NetStoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(a) = attachment_in(&tx, network, vm)? {
            return Ok(a);
        }
        let net = tx
            .query_row(
                "SELECT record FROM networks WHERE name = ?1",
                [network],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|j| decode_network(&j))
            .transpose()?
            .ok_or_else(|| NetStoreError::NoSuchNetwork(network.to_owned()))?;
        let used: Vec<Ipv4Addr> = {
            let mut stmt = tx.prepare("SELECT ip FROM net_attachments WHERE network = ?1")?;
            let rows = stmt.query_map([network], |r| r.get::<_, String>(0))?;
            rows.filter_map(|ip| ip.ok()?.parse().ok()).collect()
        };
        let (n, ip) = (2..net.subnet.size())
            .filter_map(|n| Some((n, net.subnet.host(n)?)))
            .find(|(_, ip)| !used.contains(ip))
            .ok_or_else(|| NetStoreError::Full(network.to_owned(), net.subnet))?;
        let o = u32::from(ip).to_be_bytes();
        // Locally administered (0x02), unicast; unique per network id and address.
        let mac = format!(
            "52:56:{:02x}:{:02x}:{:02x}:{:02x}",
            net.id & 0xff,
            o[1],
            o[2],
            o[3]
        );
        let a = Attachment {
            network: network.to_owned(),
            vm: vm.to_owned(),
            ip,
            mac,
            // At most 15 bytes: "cvt" + id (≤ 5 digits) + "-" + host number (≤ 5 digits).
            tap: format!("cvt{}-{n}", net.id),
        };
        tx.execute(
            "INSERT INTO net_attachments (network, vm, ip, mac, tap) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![a.network, a.vm, a.ip.to_string(), a.mac, a.tap],
        )?;
        tx.commit()?;
        Ok(a)
    }

    pub fn detach(&mut self, network: &str, vm: &str) -> Result<(), NetStoreError> {
        self.conn.execute(
            "DELETE FROM net_attachments WHERE network = ?1 AND vm = ?2",
            [network, vm],
        )?;
        Ok(())
    }

    /// The attachments of a network (`network = Some`) or of a VM (`vm = Some`), by address.
    pub fn attachments(
        &self,
        network: Option<&str>,
        vm: Option<&str>,
    ) -> Result<Vec<Attachment>, NetStoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT network, vm, ip, mac, tap FROM net_attachments \
             WHERE (?1 IS NULL OR network = ?1) AND (?2 IS NULL OR vm = ?2) ORDER BY network, vm",
        )?;
        let rows = stmt.query_map(params![network, vm], attachment_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Records a host object before it is created.
    pub fn record_object(&mut self, object: &HostObject) -> Result<(), NetStoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO net_objects (kind, name, network) VALUES (?1, ?2, ?3)",
            params![object.kind.as_str(), object.name, object.network],
        )?;
        Ok(())
    }

    /// Forgets a host object once it is gone.
    pub fn forget_object(&mut self, kind: ObjectKind, name: &str) -> Result<(), NetStoreError> {
        self.conn.execute(
            "DELETE FROM net_objects WHERE kind = ?1 AND name = ?2",
            [kind.as_str(), name],
        )?;
        Ok(())
    }

    /// The recorded host objects, of one network or all.
    pub fn objects(&self, network: Option<&str>) -> Result<Vec<HostObject>, NetStoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, name, network FROM net_objects WHERE (?1 IS NULL OR network = ?1) \
             ORDER BY network, kind, name",
        )?;
        let rows = stmt.query_map(params![network], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (kind, name, network) = r?;
            out.push(HostObject {
                kind: ObjectKind::parse(&kind)?,
                name,
                network,
            });
        }
        Ok(out)
    }
}

type AttachmentRow = Result<Attachment, StoreError>;

fn attachment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttachmentRow> {
    let ip: String = r.get(2)?;
    Ok(match ip.parse() {
        Ok(ip) => Ok(Attachment {
            network: r.get(0)?,
            vm: r.get(1)?,
            ip,
            mac: r.get(3)?,
            tap: r.get(4)?,
        }),
        Err(_) => Err(StoreError::Corrupt(format!("bad address {ip}"))),
    })
}

fn attachment_in(
    conn: &rusqlite::Connection,
    network: &str,
    vm: &str,
) -> Result<Option<Attachment>, NetStoreError> {
    Ok(conn
        .query_row(
            "SELECT network, vm, ip, mac, tap FROM net_attachments WHERE network = ?1 AND vm = ?2",
            [network, vm],
            attachment_row,
        )
        .optional()?
        .transpose()?)
}

fn list_networks_in(conn: &rusqlite::Connection) -> Result<Vec<NetworkRecord>, NetStoreError> {
    let mut stmt = conn.prepare("SELECT record FROM networks ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode_network(&r?)?);
    }
    Ok(out)
}

fn decode_network(json: &str) -> Result<NetworkRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{e} in {json}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Paths;

    #[test]
    fn subnets_parse_and_refuse_what_cannot_be_a_network() {
        let s: Subnet = "10.117.5.0/24".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 117, 5, 1));
        assert_eq!(s.host(254), Some(Ipv4Addr::new(10, 117, 5, 254)));
        assert_eq!(s.host(255), None);
        for bad in [
            "10.117.5.1/24",
            "10.117.5.0",
            "10.0.0.0/8",
            "10.0.0.0/30",
            "127.0.0.0/24",
            "x/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        assert!(s.overlaps("10.117.0.0/16".parse().unwrap()));
        assert!(!s.overlaps("10.117.6.0/24".parse().unwrap()));
    }

    #[test]
    fn networks_get_distinct_ids_and_subnets_and_vms_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Paths::under(dir.path())).unwrap();
        let a = store.create_network("a", None, true, "cove").unwrap();
        let b = store.create_network("b", None, false, "cove").unwrap();
        assert_ne!(a.id, b.id);
        assert!(!a.subnet.overlaps(b.subnet));
        assert!(matches!(
            store.create_network("a", None, true, "cove"),
            Err(NetStoreError::Exists(_))
        ));
        assert!(matches!(
            store.create_network("c", Some(a.subnet), true, "cove"),
            Err(NetStoreError::Overlap(..))
        ));
        let x = store.attach("a", "x").unwrap();
        let y = store.attach("a", "y").unwrap();
        assert_eq!(x.ip, a.subnet.host(2).unwrap());
        assert_ne!(x.ip, y.ip);
        assert_ne!(x.mac, y.mac);
        assert!(x.tap.len() <= 15);
        assert_eq!(
            store.attach("a", "x").unwrap(),
            x,
            "attaching twice is idempotent"
        );
        store.detach("a", "x").unwrap();
        assert_eq!(
            store.attach("a", "z").unwrap().ip,
            x.ip,
            "a freed address is reused"
        );
        assert!(matches!(
            store.attach("nope", "x"),
            Err(NetStoreError::NoSuchNetwork(_))
        ));
    }

    #[test]
    fn a_small_subnet_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Paths::under(dir.path())).unwrap();
        store
            .create_network("s", Some("10.9.9.0/29".parse().unwrap()), true, "cove")
            .unwrap();
        for i in 0..5 {
            store.attach("s", &format!("v{i}")).unwrap();
        }
        assert!(matches!(
            store.attach("s", "v9"),
            Err(NetStoreError::Full(..))
        ));
    }
}
