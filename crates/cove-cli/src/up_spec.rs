//! The file `cove up` and `cove down` read: an image, the VMs made from it,
//! and the checks each VM must pass. Loaded, then defaults filled, then
//! validated, so every mistake is reported against the file before anything
//! is built or booted.
//!
//! ```toml
//! image = "minimal"            # a built image, or an [image] table (see cove-image's spec)
//!
//! [[vm]]
//! name = "pg"
//! cpus = 2
//! memory = "1G"
//! ports = ["5432:5432"]
//! disks = [{ name = "pgdata", size = "2G", mount = "/var/lib/postgresql" }]
//!
//! [[vm.check]]
//! tcp = 5432
//! wait = "30s"
//! ```

use crate::commands::create::{parse_memory, parse_port, parse_size};
use anyhow::{Context, Result, bail};
use cove_backend::Machine;
use cove_check::Check;
use cove_image::ImageSpec;
use cove_state::{PortForward, VmName};
use cove_vm::data_disk::DiskRequest;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    image: toml::Value,
    #[serde(default)]
    vm: Vec<RawVm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    #[serde(default = "one")]
    cpus: u32,
    #[serde(default = "default_memory")]
    memory: String,
    #[serde(default)]
    machine: Option<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    disks: Vec<RawDisk>,
    /// Host folders: `"HOST_DIR:GUEST_PATH[:ro|rw]"`, host paths relative to the spec.
    #[serde(default)]
    mounts: Vec<String>,
    #[serde(default)]
    check: Vec<Check>,
    /// Seconds the guest may take to become ready.
    #[serde(default)]
    boot_timeout: Option<u64>,
    /// Cove networks the VM sits on (made by `up` when missing).
    #[serde(default)]
    networks: Vec<String>,
    /// Whether the guest may reach the host's loopback as 10.0.2.2 (`--host-loopback`).
    #[serde(default)]
    host_loopback: bool,
    /// VMs of this spec that must be up (running, agent answering) before this one starts.
    #[serde(default)]
    after: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    name: String,
    #[serde(default = "default_disk_size")]
    size: String,
    #[serde(default)]
    mount: Option<String>,
}

fn one() -> u32 {
    1
}
fn default_memory() -> String {
    "256M".into()
}
fn default_disk_size() -> String {
    "1G".into()
}

/// Where a spec's image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An image built before (`minimal` is built on demand).
    Named(String),
    /// Built (or found in the cache) from this spec.
    Spec(Box<ImageSpec>),
}

#[derive(Debug, Clone)]
pub struct DeclaredVm {
    pub name: VmName,
    pub cpus: u32,
    pub memory_mib: u64,
    pub machine: Machine,
    pub ports: Vec<PortForward>,
    pub disks: Vec<DiskRequest>,
    pub mounts: Vec<cove_state::HostMount>,
    pub checks: Vec<Check>,
    pub boot_timeout: u64,
    pub networks: Vec<String>,
    pub host_loopback: bool,
    pub after: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UpSpec {
    pub image: ImageSource,
    pub vms: Vec<DeclaredVm>,
}

/// A spec's `[image]` table as an image spec, read by the image spec's own parser (so its
/// checks and its relative paths, taken from `dir`, are the same as in an image spec file).
fn image_table(table: &toml::Value, path: &Path, dir: &Path) -> Result<ImageSpec> {
    Ok(ImageSpec::parse(&toml::to_string(table)?, path, dir)?)
}

/// The image spec in `path`: an image spec file, or a `cove up` spec whose `image` is an
/// `[image]` table, so `cove image build examples/postgres.toml` builds what `up` would.
pub fn load_image_spec(path: &Path) -> Result<ImageSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the spec {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Text that is not TOML falls through to the image spec's parser, whose error names it.
    let image = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|mut t| t.remove("image"));
    match image {
        Some(image @ toml::Value::Table(_)) => image_table(&image, path, dir),
        Some(toml::Value::String(name)) => bail!(
            "{} names the image `{name}` rather than declaring one: build `{name}` itself",
            path.display()
        ),
        _ => Ok(ImageSpec::parse(&text, path, dir)?),
    }
}

impl UpSpec {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the spec {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, dir).with_context(|| format!("in the spec {}", path.display()))
    }

    fn parse(text: &str, path: &Path, dir: &Path) -> Result<Self> {
        let raw: RawSpec = toml::from_str(text)?;
        let image = match raw.image {
            toml::Value::String(name) => ImageSource::Named(name),
            table @ toml::Value::Table(_) => {
                ImageSource::Spec(Box::new(image_table(&table, path, dir)?))
            }
            other => bail!("`image` must be an image name or an [image] table, not {other}"),
        };
        if raw.vm.is_empty() {
            bail!("no [[vm]] declared: add at least one `[[vm]]` with a `name`");
        }
        let mut vms = Vec::new();
        for vm in raw.vm {
            let name = VmName::new(&vm.name)?;
            if vms.iter().any(|v: &DeclaredVm| v.name == name) {
                bail!("VM `{name}` is declared twice");
            }
            let ports = vm
                .ports
                .iter()
                .map(|p| parse_port(p).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("ports of VM `{name}`"))?;
            let disks = vm
                .disks
                .into_iter()
                .map(|d| -> Result<DiskRequest> {
                    cove_vm::data_disk::validate_name(&d.name).map_err(anyhow::Error::msg)?;
                    if let Some(m) = d.mount.as_deref() {
                        cove_vm::data_disk::validate_mount(m)
                            .map_err(|e| anyhow::anyhow!("disk `{}`: {e}", d.name))?;
                    }
                    Ok(DiskRequest {
                        size_bytes: parse_size(&d.size).map_err(anyhow::Error::msg)?,
                        name: d.name,
                        mount: d.mount,
                    })
                })
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("disks of VM `{name}`"))?;
            vms.push(DeclaredVm {
                cpus: vm.cpus,
                memory_mib: parse_memory(&vm.memory)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("memory of VM `{name}`"))?,
                machine: vm.machine.as_deref().unwrap_or("microvm").parse()?,
                ports,
                disks,
                mounts: vm
                    .mounts
                    .iter()
                    .map(|m| cove_state::HostMount::parse(m, dir))
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("mounts of VM `{name}`"))?,
                checks: vm.check,
                networks: vm.networks,
                host_loopback: vm.host_loopback,
                after: vm.after,
                boot_timeout: match vm
                    .boot_timeout
                    .unwrap_or(cove_api::DEFAULT_BOOT_TIMEOUT_SECS)
                {
                    t @ 1..=crate::commands::MAX_TIMEOUT_SECS => t,
                    t => bail!(
                        "VM `{name}`: boot_timeout = {t} is out of range (1-{} seconds)",
                        crate::commands::MAX_TIMEOUT_SECS
                    ),
                },
                name,
            });
        }
        let vms = dependency_order(vms)?;
        Ok(Self { image, vms })
    }
}

/// The VMs in an order where each comes after those it names in `after` (declaration order
/// otherwise); an unknown name or a cycle is refused.
fn dependency_order(mut left: Vec<DeclaredVm>) -> Result<Vec<DeclaredVm>> {
    for vm in &left {
        for dep in &vm.after {
            if !left.iter().any(|v| v.name.as_str() == dep) || dep == vm.name.as_str() {
                bail!(
                    "VM `{}`: after = [\"{dep}\"] names no other [[vm]] of this spec",
                    vm.name
                );
            }
        }
    }
    let mut out: Vec<DeclaredVm> = Vec::new();
    while !left.is_empty() {
        let ready = left.iter().position(|vm| {
            vm.after
                .iter()
                .all(|d| out.iter().any(|o| o.name.as_str() == d))
        });
        match ready {
            Some(i) => out.push(left.remove(i)),
            None => bail!(
                "the `after` lists of {} form a cycle; one of them must start first",
                left.iter()
                    .map(|v| format!("`{}`", v.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UpSpec> {
        UpSpec::parse(text, Path::new("t.toml"), Path::new("/tmp"))
    }

    #[test]
    fn a_full_spec_reads() {
        let spec = parse(
            r#"
            image = "minimal"
            [[vm]]
            name = "pg"
            memory = "1G"
            ports = ["5432:5432"]
            disks = [{ name = "pgdata", size = "2G", mount = "/var/lib/postgresql" }]
            host_loopback = true
            [[vm.check]]
            tcp = 5432
            "#,
        )
        .unwrap();
        let vm = &spec.vms[0];
        assert!(vm.host_loopback);
        assert_eq!(vm.memory_mib, 1024);
        assert_eq!(vm.ports[0].host_port, 5432);
        assert_eq!(vm.disks[0].size_bytes, 2 << 30);
        assert_eq!(vm.checks.len(), 1);
        assert!(matches!(spec.image, ImageSource::Named(ref n) if n == "minimal"));
    }

    #[test]
    fn vms_come_up_after_what_they_name_and_cycles_are_refused() {
        let spec = parse(
            "image = \"minimal\"\n[[vm]]\nname = \"app\"\nafter = [\"db\"]\nnetworks = [\"lab\"]\n\
             [[vm]]\nname = \"db\"\nnetworks = [\"lab\"]\n",
        )
        .unwrap();
        let names: Vec<_> = spec.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["db", "app"]);
        assert_eq!(spec.vms[1].networks, ["lab"]);
        let cycle = parse(
            "image = \"minimal\"\n[[vm]]\nname = \"a\"\nafter = [\"b\"]\n[[vm]]\nname = \"b\"\nafter = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(format!("{cycle:#}").contains("cycle"), "{cycle:#}");
        let unknown =
            parse("image = \"minimal\"\n[[vm]]\nname = \"a\"\nafter = [\"zz\"]\n").unwrap_err();
        assert!(
            format!("{unknown:#}").contains("names no other"),
            "{unknown:#}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err("image = \"m\"").contains("no [[vm]]"));
        assert!(err("image = \"m\"\n[[vm]]\nname = \"a\"\nmemroy = \"1G\"").contains("memroy"));
        assert!(err("image = \"m\"\n[[vm]]\nname = \"../a\"").contains("may only contain"));
        assert!(
            err("image = \"m\"\n[[vm]]\nname = \"a\"\nports = [\"x\"]").contains("ports of VM")
        );
        assert!(
            err("image = \"m\"\n[[vm]]\nname = \"a\"\ndisks = [{name = \"d\", mount = \"rel\"}]")
                .contains("absolute")
        );
        assert!(err(
            "image = \"m\"\n[[vm]]\nname = \"a\"\ndisks = [{name = \"d\", mount = \"/srv x init=/bin/sh\"}]"
        )
        .contains("kernel's command line"));
        assert!(
            err("image = \"m\"\n[[vm]]\nname = \"a\"\nboot_timeout = 9223372036854775807")
                .contains("out of range")
        );
    }
}
