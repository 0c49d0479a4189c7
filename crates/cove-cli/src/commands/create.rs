//! `cove create NAME --image IMG`: a VM ready to start.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_state::{PortForward, VmName};
use cove_util::ByteSize;
use cove_vm::data_disk::DiskRequest;
use cove_vm::lifecycle::{self, CreateOptions};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name: letters, digits, `-` and `_`, at most 40 characters.
    pub name: VmName,
    /// The image to boot (a tag such as `minimal`, or an id).
    #[arg(long, short = 'i', default_value = "minimal", add = crate::complete::image())]
    pub image: String,
    #[command(flatten)]
    pub resources: Resources,
    /// The machine model: `microvm` (fastest boot) or `q35` (PCI); arm64 images always run on `virt`.
    #[arg(long, default_value = "microvm")]
    pub machine: cove_backend::Machine,
    /// The VMM: `qemu` (KVM or software emulation) or `firecracker` (needs
    /// a KVM that runs vCPUs; `cove doctor` says whether this host has one).
    #[arg(long, default_value = "qemu")]
    pub backend: cove_backend::BackendKind,
    /// Forward a host port to a guest port: `HOST:GUEST` or `ADDR:HOST:GUEST`
    /// (bound to 127.0.0.1 unless an address is given).
    #[arg(long = "publish", short = 'p', value_parser = parse_port)]
    pub ports: Vec<PortForward>,
    /// Attach a persistent data disk: `NAME[:SIZE][:/mount/point]`, created
    /// empty (ext4) if it does not exist; it outlives the VM.
    #[arg(long = "disk", value_parser = parse_disk)]
    pub disks: Vec<DiskRequest>,
    /// Share a host folder: `HOST_DIR:GUEST_PATH[:ro|rw]` (read-only unless `:rw`), through
    /// virtiofs; host changes are seen in the guest at once. Repeatable.
    #[arg(long = "mount", value_parser = parse_mount)]
    pub mounts: Vec<cove_state::HostMount>,
    /// Create it from a snapshot (`NAME@TAG`) instead of an image: a clone with the snapshot's
    /// settings, restored rather than booted at its first start (as `cove clone --no-start`).
    #[arg(
        long,
        value_name = "NAME@TAG",
        conflicts_with_all = ["image", "machine", "disks", "mounts", "cpus", "memory"]
    )]
    pub from: Option<String>,
    /// Put the VM on a cove network (`cove network create NAME`) besides its user-mode NIC:
    /// peers and the host reach it as `NAME.cove`. Repeatable; needs root (CAP_NET_ADMIN).
    #[arg(long = "network", add = crate::complete::network())]
    pub networks: Vec<String>,
    /// Let the guest reach services on the host's loopback, the host's 127.0.0.1 appearing as
    /// 10.0.2.2 in the guest. Off by default: a guest is not trusted with the host's local
    /// services (a database trusting localhost, other VMs' forwarded ports).
    #[arg(long, conflicts_with = "networks")]
    pub host_loopback: bool,
}

fn parse_mount(text: &str) -> Result<cove_state::HostMount, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    cove_state::HostMount::parse(text, &cwd)
}

/// `pgdata:1G:/var/lib/postgresql`, `pgdata:/srv`, `scratch:512M`.
pub fn parse_disk(text: &str) -> Result<DiskRequest, String> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default().to_owned();
    let mut disk = DiskRequest {
        name,
        size_bytes: 1 << 30,
        mount: None,
    };
    for part in parts {
        if part.starts_with('/') {
            disk.mount = Some(part.to_owned());
        } else {
            disk.size_bytes = parse_size(part)?;
        }
    }
    cove_vm::data_disk::validate_name(&disk.name)?;
    Ok(disk)
}

#[derive(Debug, clap::Args)]
pub struct Resources {
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Memory, e.g. `256M` or `1G` (a unit is required).
    #[arg(long, default_value = "256M", value_parser = parse_memory)]
    pub memory: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    if let Some(origin) = &args.from {
        let record =
            cove_vm::snapshot::create_clone_with_ports(&ctx.paths, origin, &args.name, args.ports)?;
        if ctx.json {
            output::print_json(&record)?;
        } else {
            println!(
                "created {} from {origin}; `cove start {}` restores it",
                record.name, record.name
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let record = lifecycle::create(
        &ctx.paths,
        &CreateOptions {
            name: args.name,
            image: args.image,
            cpus: args.resources.cpus,
            memory_mib: args.resources.memory,
            machine: args.machine,
            backend: args.backend,
            ports: args.ports,
            disks: args.disks,
            mounts: args.mounts,
            networks: args.networks,
            host_loopback: args.host_loopback,
        },
    )?;
    if ctx.json {
        output::print_json(&record)?;
    } else {
        println!(
            "created {} ({} CPU, {}, image {}); start it with `cove start {}`",
            record.name,
            record.cpus,
            output::mib(record.memory_mib),
            record.image_name,
            record.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A memory size (`256M`, `1.5G`; see [`ByteSize`]) in whole MiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let mib = ByteSize::parse(text)
        .and_then(ByteSize::whole_mib)
        .map_err(|e| e.to_string())?;
    if mib == 0 {
        return Err(format!("`{text}` is no memory at all; give a VM e.g. 256M"));
    }
    Ok(mib)
}

/// A disk or filesystem size (`512M`, `4G`; see [`ByteSize`]) in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    match ByteSize::parse(text) {
        Ok(b) if b.bytes() == 0 => Err(format!("`{text}` is an empty disk; give e.g. 1G")),
        Ok(b) => Ok(b.bytes()),
        Err(e) => Err(e.to_string()),
    }
}

/// `8080:80`, `0.0.0.0:8080:80`.
pub fn parse_port(text: &str) -> Result<PortForward, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (addr, host, guest) = match parts.as_slice() {
        [h, g] => ("127.0.0.1", *h, *g),
        [a, h, g] => (*a, *h, *g),
        _ => return Err(format!("`{text}` is not HOST:GUEST or ADDR:HOST:GUEST")),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))
    };
    addr.parse::<std::net::IpAddr>()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    Ok(PortForward {
        host_addr: addr.to_owned(),
        host_port: port(host)?,
        guest_port: port(guest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256M"), Ok(256));
        assert_eq!(parse_memory("1G"), Ok(1024));
        assert_eq!(parse_memory("1.5GiB"), Ok(1536));
        assert!(parse_memory("512").unwrap_err().contains("512M"));
        assert!(parse_memory("1000K").is_err());
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("0M").is_err());
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert!(parse_size("4096").is_err());
    }

    #[test]
    fn ports_bind_to_loopback_unless_asked() {
        let p = parse_port("8080:80").unwrap();
        assert_eq!(
            (p.host_addr.as_str(), p.host_port, p.guest_port),
            ("127.0.0.1", 8080, 80)
        );
        assert_eq!(parse_port("0.0.0.0:1:2").unwrap().host_addr, "0.0.0.0");
        assert!(parse_port("80").is_err());
        assert!(parse_port("x:80").is_err());
        assert!(parse_port("localhost:1:2").is_err());
    }
}
