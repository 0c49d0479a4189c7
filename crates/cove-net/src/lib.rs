//! cove networks on the host. A network is a Linux bridge with the host's address on it, one
//! TAP device per VM on it, one dnsmasq (DHCP and DNS for `NAME.<domain>`, [`dns`]) and one
//! nftables table ([`nft`]: NAT out where allowed, isolation always).
//!
//! Every host object is recorded in the store (`cove_state::net`) before it is created and
//! forgotten after it is removed, so `network rm`, `delete` and the command after a crash
//! remove exactly what may exist. Objects a host reboot took away are forgotten when found
//! missing ([`list`]) and made again when a VM on the network starts ([`prepare_vm`]).
//! Changes to one network are serialised by a lock file in its directory.

pub mod caps;
mod clone;
pub mod dns;
pub mod guard;
pub mod ip;
pub mod nft;

pub use clone::{NicMove, is_held, release_vm, restore_moves};
use clone::{hold_tap, release_tap};
use cove_state::net::{Attachment, HostObject, NetStoreError, NetworkRecord, ObjectKind, Subnet};
use cove_state::{Paths, Store, StoreError, VmName};
use cove_util::tool::ToolError;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The DNS domain of a network's VMs: `db.cove`.
pub const DEFAULT_DOMAIN: &str = "cove";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "cove networks need {0}. VMs without `--network` keep user-mode networking and need none of this"
    )]
    Privileges(caps::Missing),
    #[error("`{0}` is not a network name: {1}")]
    BadName(String, #[source] cove_state::NameError),
    #[error("network `{0}` still has VMs on it: {1}; `cove delete` them first")]
    InUse(String, String),
    #[error(
        "`{vm}` resumes from a snapshot of `{owner}`, which is not on network `{network}`: the \
         guest's NIC there cannot be found to move it; start `{vm}` cold (`cove start {vm}` \
         after `cove stop {vm}`)"
    )]
    NoSourceNic {
        vm: String,
        owner: String,
        network: String,
    },
    #[error(transparent)]
    Store(#[from] NetStoreError),
    #[error(transparent)]
    State(#[from] StoreError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A network and what exists of it on the host right now.
#[derive(Debug, Clone)]
pub struct NetworkStatus {
    pub record: NetworkRecord,
    /// Bridge, rules and dnsmasq all present.
    pub up: bool,
    pub vms: Vec<Attachment>,
}

/// Refuses unless this process can manage networks, naming what is missing.
pub fn require_privileges() -> Result<(), NetError> {
    let missing = caps::missing();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(NetError::Privileges(missing))
    }
}

/// Where a network's files live (dnsmasq's config, host files, leases, log; the rules file).
pub fn dir(paths: &Paths, network: &str) -> PathBuf {
    paths.state.join("networks").join(network)
}

fn dns_files(paths: &Paths, network: &str) -> dns::DnsFiles {
    dns::DnsFiles {
        dir: dir(paths, network),
    }
}

/// Creates a network and brings it up; on failure nothing of it is left.
pub fn create(
    paths: &Paths,
    name: &str,
    subnet: Option<Subnet>,
    nat: bool,
) -> Result<NetworkRecord, NetError> {
    VmName::new(name).map_err(|e| NetError::BadName(name.to_owned(), e))?;
    require_privileges()?;
    let mut store = Store::open(paths)?;
    let net = store.create_network(name, subnet, nat, DEFAULT_DOMAIN)?;
    if let Err(e) = bring_up(&mut store, paths, &net) {
        if let Err(undo) = teardown(&mut store, paths, &net) {
            tracing::warn!(network = name, error = %undo, "undoing a failed create");
        } else {
            store.delete_network(name)?;
        }
        return Err(e);
    }
    Ok(net)
}

/// Removes a network and everything of it on the host. Refused while VMs are on it.
pub fn remove(paths: &Paths, name: &str) -> Result<(), NetError> {
    let mut store = Store::open(paths)?;
    let net = store.get_network(name)?;
    let vms = store.attachments(Some(name), None)?;
    if !vms.is_empty() {
        let names: Vec<_> = vms.iter().map(|a| a.vm.as_str()).collect();
        return Err(NetError::InUse(name.to_owned(), names.join(", ")));
    }
    require_privileges()?;
    teardown(&mut store, paths, &net)?;
    store.delete_network(name)?;
    let _ = std::fs::remove_dir_all(dir(paths, name));
    Ok(())
}

/// Every network with what exists of it; recorded objects the host no longer has (after a
/// reboot, or removed by hand) are forgotten here.
pub fn list(paths: &Paths) -> Result<Vec<NetworkStatus>, NetError> {
    let mut store = Store::open(paths)?;
    let mut out = Vec::new();
    for net in store.list_networks()? {
        let _lock = lock(paths, &net.name)?;
        for object in store.objects(Some(&net.name))? {
            if !object_exists(paths, &object) {
                store.forget_object(object.kind, &object.name)?;
            }
        }
        let present = store.objects(Some(&net.name))?;
        let has = |k: ObjectKind, name: &str| present.iter().any(|o| o.kind == k && o.name == name);
        let dnsmasq = dns_files(paths, &net.name).pid_file();
        out.push(NetworkStatus {
            // By name: a held TAP's table is no network's rules.
            up: has(ObjectKind::Bridge, &net.bridge())
                && has(ObjectKind::Nft, &net.nft_table())
                && has(ObjectKind::Dnsmasq, &dnsmasq.to_string_lossy()),
            vms: store.attachments(Some(&net.name), None)?,
            record: net,
        });
    }
    Ok(out)
}

/// One network as the host has it, for `cove doctor`.
#[derive(Debug, Clone)]
pub struct Health {
    pub record: NetworkRecord,
    pub bridge_up: bool,
    pub dnsmasq: Option<u32>,
    /// `None` when the rules cannot be read (without CAP_NET_ADMIN).
    pub table_present: Option<bool>,
    pub vms: usize,
}

/// What exists of every network on the host, read only: unlike [`list`], nothing is
/// forgotten or changed, and it works without privileges (the rules then are unknown).
pub fn health(paths: &Paths) -> Result<Vec<Health>, NetError> {
    let store = Store::open(paths)?;
    // Listing nftables needs CAP_NET_ADMIN alone.
    let can_read_rules = !caps::missing().capabilities.contains(&"CAP_NET_ADMIN");
    let mut out = Vec::new();
    for net in store.list_networks()? {
        out.push(Health {
            bridge_up: ip::is_up(&net.bridge()),
            dnsmasq: dns::running(&dns_files(paths, &net.name)),
            table_present: can_read_rules.then(|| nft::exists(&net.nft_table())),
            vms: store.attachments(Some(&net.name), None)?.len(),
            record: net,
        });
    }
    Ok(out)
}

/// Puts a VM being created on its networks: addresses and names now (so peers resolve it at
/// once), its TAPs when it starts ([`prepare_vm`]).
pub fn attach_vm(paths: &Paths, vm: &str, networks: &[String]) -> Result<(), NetError> {
    if networks.is_empty() {
        return Ok(());
    }
    require_privileges()?;
    let mut store = Store::open(paths)?;
    for network in networks {
        let net = store.get_network(network)?;
        let _lock = lock(paths, network)?;
        store.attach(network, vm)?;
        refresh_names(&store, paths, &net)?;
    }
    Ok(())
}

/// Makes sure everything a starting VM needs exists (after a host reboot nothing does): its
/// networks up and its TAPs on them. Returns its attachments in the order of `networks`,
/// which is the order of its NICs.
///
/// With `hold`, its TAPs drop everything the guest sends until [`release_vm`]: a clone
/// resumes speaking with its source's MAC and address, which must never reach the network
/// (the bridge would learn the source's MAC on the clone's port, peers its ARP answers).
/// Without, a hold left by an earlier run is lifted.
pub fn prepare_vm(
    paths: &Paths,
    vm: &str,
    networks: &[String],
    hold: bool,
) -> Result<Vec<Attachment>, NetError> {
    if networks.is_empty() {
        return Ok(Vec::new());
    }
    require_privileges()?;
    let mut store = Store::open(paths)?;
    let mut out = Vec::new();
    for network in networks {
        let net = store.get_network(network)?;
        // A clone or a VM recorded before its attachment: attached now.
        let a = {
            let _lock = lock(paths, network)?;
            store.attach(network, vm)?
        };
        bring_up(&mut store, paths, &net)?;
        if hold {
            hold_tap(&mut store, paths, &a)?;
        } else {
            release_tap(&mut store, paths, &a)?;
        }
        out.push(a);
    }
    Ok(out)
}

/// Takes a VM off all its networks: its TAPs removed, its names gone.
pub fn detach_vm(paths: &Paths, vm: &str) -> Result<(), NetError> {
    let mut store = Store::open(paths)?;
    let attachments = store.attachments(None, Some(vm))?;
    if attachments.is_empty() {
        return Ok(());
    }
    require_privileges()?;
    for a in attachments {
        let net = store.get_network(&a.network)?;
        release_tap(&mut store, paths, &a)?;
        let _lock = lock(paths, &a.network)?;
        ip::delete_link(&a.tap)?;
        store.forget_object(ObjectKind::Tap, &a.tap)?;
        store.detach(&a.network, vm)?;
        refresh_names(&store, paths, &net)?;
        // Its lease, and the name dnsmasq gave it, go only with a restart.
        dns::restart(&dns_files(paths, &a.network))?;
    }
    Ok(())
}

/// The address of a VM on its first network, for checks run from the host (`db:5432`).
pub fn address_of(paths: &Paths, vm: &str) -> Result<Option<std::net::Ipv4Addr>, NetError> {
    let store = Store::open(paths)?;
    Ok(store.attachments(None, Some(vm))?.first().map(|a| a.ip))
}

/// Creates whatever of the network is missing: bridge, rules, dnsmasq, the TAPs of its VMs.
/// Each object is recorded before it is made.
fn bring_up(store: &mut Store, paths: &Paths, net: &NetworkRecord) -> Result<(), NetError> {
    let _lock = lock(paths, &net.name)?;
    let files = dns_files(paths, &net.name);
    let record = |store: &mut Store, kind, name: &str| {
        store.record_object(&HostObject {
            kind,
            name: name.to_owned(),
            network: net.name.clone(),
        })
    };
    if net.nat {
        // Per network namespace; libvirt and Incus switch it on the same way.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| NetError::Io {
            what: "enabling IPv4 forwarding for NAT (/proc/sys/net/ipv4/ip_forward)".into(),
            source,
        })?;
    }
    let bridge = net.bridge();
    record(store, ObjectKind::Bridge, &bridge)?;
    // 52:56:<id>:00:00:01 is no guest's: guests' last three bytes are their address's, and
    // an address ending .0.0.1 is only ever a network's first, the host's.
    let mac = format!("52:56:{:02x}:00:00:01", net.id & 0xff);
    ip::ensure_bridge(&bridge, &mac, net.subnet.gateway(), net.subnet.prefix)?;
    let table = net.nft_table();
    record(store, ObjectKind::Nft, &table)?;
    nft::apply(net, &files.dir.join("rules.nft"))?;
    let vms = store.attachments(Some(&net.name), None)?;
    dns::write_files(net, &files, &vms)?;
    if dns::running(&files).is_none() {
        record(
            store,
            ObjectKind::Dnsmasq,
            &files.pid_file().to_string_lossy(),
        )?;
        dns::start(&files)?;
    }
    for a in &vms {
        record(store, ObjectKind::Tap, &a.tap)?;
        ip::ensure_tap(&a.tap, &bridge)?;
    }
    Ok(())
}

/// Removes every recorded object of the network, forgetting each once it is gone.
fn teardown(store: &mut Store, paths: &Paths, net: &NetworkRecord) -> Result<(), NetError> {
    let _lock = lock(paths, &net.name)?;
    // TAPs before the bridge, dnsmasq before the bridge it listens on.
    let order = [
        ObjectKind::Tap,
        ObjectKind::Dnsmasq,
        ObjectKind::Nft,
        ObjectKind::Bridge,
    ];
    let objects = store.objects(Some(&net.name))?;
    for kind in order {
        for o in objects.iter().filter(|o| o.kind == kind) {
            remove_object(paths, o)?;
            store.forget_object(o.kind, &o.name)?;
        }
    }
    Ok(())
}

fn remove_object(paths: &Paths, o: &HostObject) -> Result<(), NetError> {
    match o.kind {
        ObjectKind::Bridge | ObjectKind::Tap => ip::delete_link(&o.name),
        ObjectKind::Nft => nft::delete(&o.name),
        ObjectKind::Dnsmasq => dns::stop(&dns_files(paths, &o.network)),
    }
}

fn object_exists(paths: &Paths, o: &HostObject) -> bool {
    match o.kind {
        ObjectKind::Bridge | ObjectKind::Tap => ip::link_exists(&o.name),
        ObjectKind::Nft => nft::exists(&o.name),
        ObjectKind::Dnsmasq => dns::running(&dns_files(paths, &o.network)).is_some(),
    }
}

/// Rewrites the network's host files and has its dnsmasq reread them (when it runs; a
/// network that is down gets them at its next start).
fn refresh_names(store: &Store, paths: &Paths, net: &NetworkRecord) -> Result<(), NetError> {
    let files = dns_files(paths, &net.name);
    ensure_dir(&files.dir)?;
    dns::write_files(net, &files, &store.attachments(Some(&net.name), None)?)?;
    dns::reload(&files);
    Ok(())
}

/// The network's lock, held until dropped.
fn lock(paths: &Paths, network: &str) -> Result<std::fs::File, NetError> {
    let d = dir(paths, network);
    ensure_dir(&d)?;
    let path = d.join("lock");
    let io = |source| NetError::Io {
        what: format!("locking {}", path.display()),
        source,
    };
    cove_util::lock::exclusive(&path).map_err(io)
}

fn ensure_dir(d: &Path) -> Result<(), NetError> {
    cove_state::files::private_dir_all(d).map_err(|source| NetError::Io {
        what: format!("creating {}", d.display()),
        source,
    })
}

/// Writes a file 0600 through a temporary name and a rename, so a reader (dnsmasq on SIGHUP,
/// `nft -f`) never sees half of it.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn command(program: &'static str) -> Command {
    Command::new(cove_util::path::which(program).unwrap_or_else(|| program.into()))
}

fn install_hint(program: &str) -> &'static str {
    caps::PROGRAMS
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(p, _)| match *p {
            "ip" => "apt-get install iproute2",
            "nft" => "apt-get install nftables",
            _ => "apt-get install dnsmasq-base",
        })
        .unwrap_or("install it")
}

/// Runs a network program and requires success.
pub(crate) fn run<S: AsRef<OsStr>>(program: &'static str, args: &[S]) -> Result<Output, NetError> {
    Ok(cove_util::tool::run(
        command(program).args(args),
        install_hint(program),
    )?)
}

/// Runs a network program, whatever its status.
pub(crate) fn output<S: AsRef<OsStr>>(
    program: &'static str,
    args: &[S],
) -> Result<Output, NetError> {
    Ok(cove_util::tool::output(
        command(program).args(args),
        install_hint(program),
    )?)
}
