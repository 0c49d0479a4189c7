//! One dnsmasq per network: DHCP (a fixed address per VM, by MAC) and DNS (`NAME.<domain>`).
//!
//! Why dnsmasq: it is what libvirt and Incus run for the same job, so its behaviour is known
//! and well-kept; it does DHCP and DNS in one small process bound to one interface; and it
//! rereads its host files on SIGHUP, so names follow VMs as they come and go without a restart
//! that could drop a guest's DHCP exchange.
//!
//! Names come from cove's records only: the host file (`addn-hosts`) it rewrites as VMs come and
//! go. dnsmasq would also serve the names of its leases, which outlive the VM: it names a lease
//! after the host-file entry of its address (and after the dhcp-host line or the guest, which
//! cove gives no names, `dhcp-ignore-names`), and keeps that name when the entry is gone, even
//! across a restart when there is a leases file. So there is no leases file (`leasefile-ro`;
//! every address is a static reservation with an infinite lease, which dnsmasq grants again
//! from the host lines alone) and a VM taken off the network restarts its dnsmasq
//! ([`restart`]), dropping the leases held in memory with it.
//!
//! It runs as cove's own user (`user=`) instead of dropping to `nobody`: its files live in
//! cove's private (0700) state directory, which `nobody` cannot read after the drop.

use crate::NetError;
use cove_state::net::{Attachment, NetworkRecord};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The files of one network's dnsmasq, all in the network's directory.
pub struct DnsFiles {
    pub dir: PathBuf,
}

impl DnsFiles {
    pub fn conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }
    /// `IP NAME.DOMAIN NAME` lines (DNS).
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    /// `MAC,IP,infinite` lines (DHCP).
    pub fn dhcp_hosts(&self) -> PathBuf {
        self.dir.join("dhcp-hosts")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }
}

pub fn config(net: &NetworkRecord, files: &DnsFiles, user: &str) -> String {
    let s = net.subnet;
    let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - s.prefix));
    let mut c = vec![
        format!("# Written by cove for network `{}`.", net.name),
        format!("pid-file={}", files.pid_file().display()),
        format!("user={user}"),
        format!("interface={}", net.bridge()),
        "bind-interfaces".into(),
        "except-interface=lo".into(),
        format!("listen-address={}", s.gateway()),
        // No /etc/hosts, no /etc/dnsmasq.conf: only what cove says.
        "no-hosts".into(),
        format!("addn-hosts={}", files.hosts().display()),
        format!("domain={}", net.domain),
        format!("local=/{}/", net.domain),
        "domain-needed".into(),
        "bogus-priv".into(),
        // Addresses only from dhcp-host entries: a guest unknown to cove gets none.
        format!("dhcp-range={},static,{mask},infinite", s.network),
        format!("dhcp-hostsfile={}", files.dhcp_hosts().display()),
        // Leases only in memory, names only from the host file (see the module's comment).
        "leasefile-ro".into(),
        "dhcp-ignore-names".into(),
        "dhcp-authoritative".into(),
        "no-ping".into(),
        format!("dhcp-option=option:domain-search,{}", net.domain),
        format!("log-facility={}", files.log().display()),
    ];
    if net.nat {
        c.push(format!("dhcp-option=option:router,{}", s.gateway()));
    } else {
        // No way out: no router, and no upstream resolver to forward names to.
        c.push("dhcp-option=option:router".into());
        c.push("no-resolv".into());
    }
    c.join("\n") + "\n"
}

/// The DNS and DHCP host files for the network's current VMs.
pub fn host_files(net: &NetworkRecord, vms: &[Attachment]) -> (String, String) {
    let mut hosts = format!("{} host.{}\n", net.subnet.gateway(), net.domain);
    let mut dhcp = String::new();
    for a in vms {
        hosts += &format!("{} {}.{} {}\n", a.ip, a.vm, net.domain, a.vm);
        dhcp += &format!("{},{},infinite\n", a.mac, a.ip);
    }
    (hosts, dhcp)
}

/// The pid of the network's dnsmasq when it runs: its pid file names a live process whose
/// command line is dnsmasq with this network's config (a recycled pid is not ours).
pub fn running(files: &DnsFiles) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(files.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = format!("--conf-file={}", files.conf().display());
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == conf.as_bytes());
    (ours && cove_util::process::alive(pid)).then_some(pid)
}

/// Starts dnsmasq (it daemonizes once it has bound its sockets, so a bind failure is our error).
pub fn start(files: &DnsFiles) -> Result<(), NetError> {
    let conf = format!("--conf-file={}", files.conf().display());
    crate::run("dnsmasq", &[conf.as_str()])?;
    Ok(())
}

/// Makes dnsmasq reread its host files.
pub fn reload(files: &DnsFiles) {
    if let Some(pid) = running(files) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
}

/// Restarts the network's dnsmasq when it runs, so that it forgets its leases (a SIGHUP
/// rereads the host files but keeps every lease with its name).
pub fn restart(files: &DnsFiles) -> Result<(), NetError> {
    if running(files).is_some() {
        stop(files)?;
        start(files)?;
    }
    Ok(())
}

/// Stops the network's dnsmasq: SIGTERM, then SIGKILL after two seconds.
pub fn stop(files: &DnsFiles) -> Result<(), NetError> {
    let Some(pid) = running(files) else {
        let _ = std::fs::remove_file(files.pid_file());
        return Ok(());
    };
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while cove_util::process::alive(pid) {
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(files.pid_file());
    Ok(())
}

/// Writes the config and host files, atomically each.
pub fn write_files(
    net: &NetworkRecord,
    files: &DnsFiles,
    vms: &[Attachment],
) -> Result<(), NetError> {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into());
    let (hosts, dhcp) = host_files(net, vms);
    // A leases file of an earlier cove, whose names would come back were it ever read again.
    let _ = std::fs::remove_file(files.dir.join("leases"));
    for (path, text) in [
        (files.conf(), config(net, files, &user)),
        (files.hosts(), hosts),
        (files.dhcp_hosts(), dhcp),
    ] {
        write(&path, &text)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), NetError> {
    crate::write_private(path, text.as_bytes()).map_err(|source| NetError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn config_and_host_files_say_what_dnsmasq_serves() {
        let net = NetworkRecord {
            name: "lab".into(),
            id: 2,
            subnet: "10.117.2.0/24".parse().unwrap(),
            nat: false,
            domain: "cove".into(),
            created_at: 0,
        };
        let files = DnsFiles {
            dir: "/s/networks/lab".into(),
        };
        let c = config(&net, &files, "root");
        assert!(c.contains("interface=covebr2\n"));
        assert!(c.contains("listen-address=10.117.2.1\n"));
        assert!(c.contains("dhcp-range=10.117.2.0,static,255.255.255.0,infinite\n"));
        assert!(c.contains("no-resolv\n") && c.contains("dhcp-option=option:router\n"));
        // No lease database whose names could outlive a VM.
        assert!(c.contains("leasefile-ro\n") && c.contains("dhcp-ignore-names\n"));
        assert!(!c.contains("dhcp-leasefile"));
        let a = Attachment {
            network: "lab".into(),
            vm: "db".into(),
            ip: Ipv4Addr::new(10, 117, 2, 2),
            mac: "52:56:02:75:02:02".into(),
            tap: "cvt2-2".into(),
        };
        let (hosts, dhcp) = host_files(&net, &[a]);
        assert!(hosts.contains("10.117.2.2 db.cove db\n"));
        assert_eq!(dhcp, "52:56:02:75:02:02,10.117.2.2,infinite\n");
    }
}
