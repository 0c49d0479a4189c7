//! Requirement profiles: which kernel options a use (virtio boot, the agent, PostgreSQL,
//! Tailscale, QEMU microvm, …) needs, and why.
//!
//! User profiles come from a TOML file of this shape:
//!
//! ```toml
//! [[profile]]
//! name = "myapp"
//! description = "what the profile is for"
//!
//! [[profile.require]]
//! option = "TUN"                 # one option …
//! why = "myapp opens /dev/net/tun"
//!
//! [[profile.require]]
//! any_of = ["NF_TABLES", "IP_NF_IPTABLES"]   # … or alternatives
//! why = "myapp installs firewall rules"
//! builtin = true                 # optional: `=m` does not count
//! ```

use serde::{Deserialize, Serialize};

use super::KernelError;
use super::config::bare_name;

/// One requirement: any of `options` must be enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// A single option (without `CONFIG_`); shorthand for `any_of = [option]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
    /// Alternatives: the requirement holds when any of them is enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<String>,
    /// Why the option is needed (shown to the user).
    pub why: String,
    /// Only `=y` counts (needed before any module could be loaded).
    #[serde(default)]
    pub builtin: bool,
}

impl Requirement {
    fn new(options: &[&str], why: &str) -> Requirement {
        Requirement {
            option: None,
            any_of: options.iter().map(|s| s.to_string()).collect(),
            why: why.to_string(),
            builtin: false,
        }
    }

    fn builtin(mut self) -> Requirement {
        self.builtin = true;
        self
    }

    /// The alternatives, `CONFIG_` prefixes stripped.
    pub fn alternatives(&self) -> Vec<String> {
        self.option
            .iter()
            .chain(self.any_of.iter())
            .map(|o| bare_name(o).to_string())
            .collect()
    }
}

/// A named set of requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "require")]
    pub requires: Vec<Requirement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    profile: Vec<Profile>,
}

/// Parse user profiles from TOML text (format in the module docs).
pub fn parse_profiles(text: &str) -> Result<Vec<Profile>, KernelError> {
    let file: ProfileFile =
        toml::from_str(text).map_err(|e| KernelError::BadProfile(e.to_string()))?;
    for p in &file.profile {
        if let Some(r) = p.requires.iter().find(|r| r.alternatives().is_empty()) {
            return Err(KernelError::BadProfile(format!(
                "profile `{}`: requirement `{}` names no option (set `option` or `any_of`)",
                p.name, r.why
            )));
        }
    }
    Ok(file.profile)
}

/// Names of the built-in profiles.
pub const BUILTIN_PROFILES: &[&str] = &[
    "virtio",
    "virtio-direct",
    "agent-serial",
    "agent-vsock",
    "net",
    "postgres",
    "tailscale",
    "microvm",
    "pvh",
];

/// A built-in profile by name.
pub fn builtin_profile(name: &str) -> Option<Profile> {
    let (description, requires) = match name {
        "virtio" => (
            "boot from a virtio disk with cove's initramfs",
            vec![
                Requirement::new(&["VIRTIO"], "virtio device core"),
                Requirement::new(
                    &["VIRTIO_PCI", "VIRTIO_MMIO"],
                    "a virtio transport: PCI on q35, MMIO on microvm",
                ),
                Requirement::new(&["VIRTIO_BLK"], "the root disk is a virtio-blk device"),
                Requirement::new(&["EXT4_FS"], "the root filesystem is ext4"),
                Requirement::new(
                    &["DEVTMPFS"],
                    "/dev is a devtmpfs (there is no udev in the initramfs)",
                )
                .builtin(),
                Requirement::new(&["BLK_DEV_INITRD"], "cove boots through an initramfs").builtin(),
                Requirement::new(
                    &["RD_GZIP", "RD_ZSTD", "RD_XZ", "RD_LZ4"],
                    "the kernel must unpack the compressed initramfs",
                )
                .builtin(),
                Requirement::new(&["BINFMT_ELF"], "init and the agent are ELF binaries").builtin(),
                Requirement::new(&["PROC_FS"], "init mounts /proc").builtin(),
                Requirement::new(&["SYSFS"], "init finds devices in /sys").builtin(),
                Requirement::new(&["TMPFS"], "/run and /tmp are tmpfs"),
            ],
        ),
        // A kernel cove built boots without an initramfs: the kernel itself must reach the
        // root disk, so what the initramfs would load must be built in.
        "virtio-direct" => (
            "boot from a virtio disk without an initramfs (a kernel cove built)",
            vec![
                Requirement::new(&["VIRTIO"], "virtio device core").builtin(),
                Requirement::new(
                    &["VIRTIO_PCI", "VIRTIO_MMIO"],
                    "a virtio transport: PCI on q35, MMIO on microvm",
                )
                .builtin(),
                Requirement::new(&["VIRTIO_BLK"], "the root disk is a virtio-blk device").builtin(),
                Requirement::new(&["EXT4_FS"], "the kernel mounts the ext4 root itself").builtin(),
                Requirement::new(&["DEVTMPFS"], "/dev is a devtmpfs (there is no udev)").builtin(),
                Requirement::new(&["BINFMT_ELF"], "init and the agent are ELF binaries").builtin(),
                Requirement::new(&["PROC_FS"], "init mounts /proc").builtin(),
                Requirement::new(&["SYSFS"], "init finds devices in /sys").builtin(),
                Requirement::new(&["TMPFS"], "/run and /tmp are tmpfs").builtin(),
            ],
        ),
        "agent-serial" => (
            "the cove agent over a virtio-serial port",
            vec![Requirement::new(
                &["VIRTIO_CONSOLE"],
                "the agent talks over the virtio-serial port org.cove.agent (/dev/vport*)",
            )],
        ),
        "agent-vsock" => (
            "the cove agent over virtio-vsock",
            vec![
                Requirement::new(&["VSOCKETS"], "AF_VSOCK sockets for the agent"),
                Requirement::new(
                    &["VIRTIO_VSOCKETS"],
                    "the virtio-vsock transport (without it the device is enumerated but never bound)",
                ),
            ],
        ),
        "net" => (
            "guest networking over virtio-net",
            vec![
                Requirement::new(&["VIRTIO_NET"], "the guest NIC is virtio-net"),
                Requirement::new(&["INET"], "TCP/IP networking").builtin(),
                Requirement::new(&["UNIX"], "Unix domain sockets"),
            ],
        ),
        "postgres" => (
            "PostgreSQL server",
            vec![
                Requirement::new(
                    &["SYSVIPC"],
                    "initdb and the postmaster call shmget/semget (System V IPC); without it: `shmget: Function not implemented`",
                )
                .builtin(),
                Requirement::new(
                    &["TMPFS"],
                    "dynamic_shared_memory_type=posix uses shm_open on /dev/shm (tmpfs)",
                ),
                Requirement::new(&["FUTEX"], "PostgreSQL's locking uses futexes").builtin(),
                Requirement::new(&["UNIX"], "local connections use a Unix socket"),
                Requirement::new(&["INET"], "TCP connections").builtin(),
            ],
        ),
        "tailscale" => (
            "Tailscale (kernel-mode networking)",
            vec![
                Requirement::new(&["TUN"], "tailscaled creates its interface on /dev/net/tun"),
                Requirement::new(
                    &["NETFILTER"],
                    "tailscaled installs firewall rules; without it: `could not get iptables version`",
                ),
                Requirement::new(
                    &["NF_TABLES", "IP_NF_IPTABLES"],
                    "tailscaled programs nftables or iptables",
                ),
                Requirement::new(&["NF_CONNTRACK"], "stateful rules track connections"),
            ],
        ),
        "microvm" => (
            "QEMU's microvm machine type",
            vec![
                Requirement::new(&["VIRTIO_MMIO"], "microvm has only virtio-mmio devices"),
                Requirement::new(
                    &["ACPI", "VIRTIO_MMIO_CMDLINE_DEVICES"],
                    "microvm describes its devices in ACPI tables (acpi=on) or on the command line (virtio_mmio.device=, needs VIRTIO_MMIO_CMDLINE_DEVICES)",
                )
                .builtin(),
                Requirement::new(&["SERIAL_8250"], "the console is a 16550 UART").builtin(),
                Requirement::new(
                    &["SERIAL_8250_CONSOLE"],
                    "console=ttyS0 on the 16550 UART",
                )
                .builtin(),
            ],
        ),
        "pvh" => (
            "booting an uncompressed vmlinux directly (PVH entry point)",
            vec![Requirement::new(&["PVH"], "QEMU enters an ELF vmlinux through its PVH note").builtin()],
        ),
        _ => return None,
    };
    Some(Profile {
        name: name.to_string(),
        description: description.to_string(),
        requires,
    })
}

/// Resolve profile names against the built-in profiles and, first, the user's profile file
/// (a user profile with a built-in's name replaces it).
pub fn resolve_profiles(
    names: &[String],
    user_file: Option<&std::path::Path>,
) -> Result<Vec<Profile>, KernelError> {
    let user = match user_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| KernelError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            parse_profiles(&text)?
        }
        None => Vec::new(),
    };
    // No names: every user profile if a file was given, else the boot essentials.
    if names.is_empty() {
        if !user.is_empty() {
            return Ok(user);
        }
        return Ok(["virtio", "agent-serial"]
            .iter()
            .filter_map(|n| builtin_profile(n))
            .collect());
    }
    names
        .iter()
        .map(|n| {
            user.iter()
                .find(|p| p.name == *n)
                .cloned()
                .or_else(|| builtin_profile(n))
                .ok_or_else(|| KernelError::UnknownProfile(n.clone()))
        })
        .collect()
}

/// The module an option builds, for options the built-in profiles name (`=m` checks).
pub fn module_for_option(option: &str) -> Option<&'static str> {
    Some(match bare_name(option) {
        "VIRTIO" => "virtio",
        "VIRTIO_RING" => "virtio_ring",
        "VIRTIO_PCI" => "virtio_pci",
        "VIRTIO_PCI_LEGACY" => "virtio_pci_legacy_dev",
        "VIRTIO_MMIO" => "virtio_mmio",
        "VIRTIO_BLK" => "virtio_blk",
        "VIRTIO_NET" => "virtio_net",
        "VIRTIO_CONSOLE" => "virtio_console",
        "VIRTIO_BALLOON" => "virtio_balloon",
        "HW_RANDOM_VIRTIO" => "virtio_rng",
        "SCSI_VIRTIO" => "virtio_scsi",
        "VSOCKETS" => "vsock",
        "VIRTIO_VSOCKETS" => "vmw_vsock_virtio_transport",
        "VIRTIO_VSOCKETS_COMMON" => "vmw_vsock_virtio_transport_common",
        "EXT4_FS" => "ext4",
        "JBD2" => "jbd2",
        "FS_MBCACHE" => "mbcache",
        "CRC16" => "crc16",
        "TUN" => "tun",
        "NF_TABLES" => "nf_tables",
        "NF_CONNTRACK" => "nf_conntrack",
        "IP_NF_IPTABLES" => "ip_tables",
        "IP_NF_FILTER" => "iptable_filter",
        "IP_NF_NAT" => "iptable_nat",
        "NF_NAT" => "nf_nat",
        "UNIX" => "unix",
        "FUSE_FS" => "fuse",
        "OVERLAY_FS" => "overlay",
        "SQUASHFS" => "squashfs",
        "XFS_FS" => "xfs",
        "BTRFS_FS" => "btrfs",
        "9P_FS" => "9p",
        "NET_9P_VIRTIO" => "9pnet_virtio",
        "FW_CFG_SYSFS" => "qemu_fw_cfg",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_exists_and_names_options() {
        for name in BUILTIN_PROFILES {
            let p = builtin_profile(name).unwrap();
            assert!(!p.requires.is_empty(), "{name}");
            assert!(p.requires.iter().all(|r| !r.alternatives().is_empty()));
        }
        assert!(builtin_profile("nope").is_none());
    }

    #[test]
    fn user_profiles_parse_from_toml() {
        let text = r#"
            [[profile]]
            name = "myapp"
            description = "demo"
            [[profile.require]]
            option = "CONFIG_TUN"
            why = "opens /dev/net/tun"
            [[profile.require]]
            any_of = ["NF_TABLES", "IP_NF_IPTABLES"]
            why = "firewall"
            builtin = true
        "#;
        let ps = parse_profiles(text).unwrap();
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].requires[0].alternatives(), vec!["TUN"]);
        assert_eq!(
            ps[0].requires[1].alternatives(),
            vec!["NF_TABLES", "IP_NF_IPTABLES"]
        );
        assert!(ps[0].requires[1].builtin);
        let bad = "[[profile]]\nname = \"x\"\n[[profile.require]]\nwhy = \"nothing\"\n";
        assert!(matches!(
            parse_profiles(bad),
            Err(KernelError::BadProfile(_))
        ));
        let typo = "[[profile]]\nname = \"x\"\n[[profile.require]]\nopton = \"TUN\"\nwhy = \"w\"\n";
        assert!(parse_profiles(typo).is_err());
    }

    #[test]
    fn profiles_resolve_user_first_then_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("profiles.toml");
        std::fs::write(
            &file,
            "[[profile]]\nname = \"postgres\"\n[[profile.require]]\noption = \"SHMEM\"\nwhy = \"mine\"\n",
        )
        .unwrap();
        let names = vec!["postgres".to_string(), "tailscale".to_string()];
        let ps = resolve_profiles(&names, Some(&file)).unwrap();
        assert_eq!(ps[0].requires[0].alternatives(), vec!["SHMEM"]);
        assert_eq!(ps[1], builtin_profile("tailscale").unwrap());
        let defaults = resolve_profiles(&[], None).unwrap();
        assert_eq!(defaults.len(), 2);
        assert!(matches!(
            resolve_profiles(&["nope".to_string()], None),
            Err(KernelError::UnknownProfile(_))
        ));
    }
}
