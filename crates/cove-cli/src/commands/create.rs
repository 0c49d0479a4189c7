//! `cove create NAME --image IMG`: a VM ready to start.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_state::{PortForward, VmName};
use cove_supervisor::data_disk::DiskRequest;
use cove_supervisor::lifecycle::{self, CreateOptions};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name: letters, digits, `-` and `_`, at most 40 characters.
    pub name: VmName,
    /// The image to boot (a tag such as `minimal`, or an id).
    #[arg(long, short = 'i', default_value = "minimal")]
    pub image: String,
    #[command(flatten)]
    pub resources: Resources,
    /// The machine model: `microvm` (fastest boot) or `q35` (PCI).
    #[arg(long, default_value = "microvm")]
    pub machine: cove_backend::Machine,
    /// Forward a host port to a guest port: `HOST:GUEST` or `ADDR:HOST:GUEST`
    /// (bound to 127.0.0.1 unless an address is given).
    #[arg(long = "publish", short = 'p', value_parser = parse_port)]
    pub ports: Vec<PortForward>,
    /// Attach a persistent data disk: `NAME[:SIZE][:/mount/point]`, created
    /// empty (ext4) if it does not exist; it outlives the VM.
    #[arg(long = "disk", value_parser = parse_disk)]
    pub disks: Vec<DiskRequest>,
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
            disk.size_bytes = parse_memory(part)? * 1024 * 1024;
        }
    }
    cove_supervisor::data_disk::validate_name(&disk.name)?;
    Ok(disk)
}

#[derive(Debug, clap::Args)]
pub struct Resources {
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Memory, e.g. `256M` or `1G` (a plain number is MiB).
    #[arg(long, default_value = "256M", value_parser = parse_memory)]
    pub memory: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let record = lifecycle::create(
        &ctx.paths,
        &CreateOptions {
            name: args.name,
            image: args.image,
            cpus: args.resources.cpus,
            memory_mib: args.resources.memory,
            machine: args.machine,
            ports: args.ports,
            disks: args.disks,
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

/// `256M`, `1G`, `1.5G`, `512` (MiB) → MiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.char_indices().last() {
        Some((i, 'G' | 'g')) => (&t[..i], 1024.0),
        Some((i, 'M' | 'm')) => (&t[..i], 1.0),
        _ => (t, 1.0),
    };
    let value: f64 = number
        .trim_end_matches(['i', 'I'])
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 256M or 2G"))?;
    let mib = (value * scale).round();
    if !(1.0..=1_048_576.0).contains(&mib) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(mib as u64)
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
        assert_eq!(parse_memory("1.5GiB".trim_end_matches("iB")), Ok(1536));
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("0").is_err());
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
