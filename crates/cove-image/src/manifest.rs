//! What a built image is: the manifest stored as JSON in the image's store
//! row and as `manifest.json` in its directory.

use cove_guest::Arch;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which init the root filesystem runs after the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// cove's small script init (`/sbin/cove-init`): fast, starts the agent and the services.
    #[default]
    Cove,
    /// systemd, with cove-agent as a unit; slower to boot.
    Systemd,
}

/// A command the init keeps running, as `user`, logging to `/var/log/cove/<name>.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// A shell command line (run with `sh -c`).
    pub command: String,
    #[serde(default = "root")]
    pub user: String,
}

fn root() -> String {
    "root".to_owned()
}

/// Sizes in bytes of the image's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSizes {
    pub kernel: u64,
    pub vmlinux: Option<u64>,
    pub initrd: u64,
    /// Apparent size of the raw ext4 image (it is sparse on disk).
    pub rootfs: u64,
    /// Bytes of the files put into the root filesystem.
    pub rootfs_content: u64,
}

/// A built image. Every path is absolute, inside `Paths::images()/<id>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// sha256 over the spec and the content hashes of every input.
    pub id: String,
    pub name: String,
    /// The guest architecture; images made before arm64 support are `amd64`.
    #[serde(default)]
    pub arch: Arch,
    /// What the root filesystem was made from: `minimal`, `debian:bookworm`, `dir:…`, `tarball:…`.
    pub base: String,
    /// The bzImage.
    pub kernel: PathBuf,
    /// The uncompressed ELF kernel with a PVH entry, when one could be extracted;
    /// boots faster than `kernel` under QEMU.
    pub vmlinux: Option<PathBuf>,
    /// cove's initramfs; `None` when the kernel has every driver built in (a kernel cove
    /// built) and boots the root filesystem directly.
    pub initrd: Option<PathBuf>,
    /// Raw ext4, labelled `cove-root`, read-only: VMs put a qcow2 overlay on it.
    pub rootfs: PathBuf,
    pub kernel_version: String,
    /// sha256 of the bzImage, so `cove show` names exactly which kernel boots.
    #[serde(default)]
    pub kernel_sha256: Option<String>,
    /// How the kernel was made: `debian:<deb>`, `bzimage:<path>` or `build:<key> <source>`.
    #[serde(default)]
    pub kernel_origin: Option<String>,
    /// The kernel's `config-*` from its package, for `cove kernel check`.
    pub kernel_config: Option<PathBuf>,
    /// Kernel arguments this image needs on top of the backend's own.
    pub cmdline_extra: Vec<String>,
    /// Kernel modules in the initramfs, in load order.
    pub modules: Vec<String>,
    pub init: InitKind,
    /// Whether `/usr/lib/cove/cove-agent` is in the root filesystem.
    pub agent: bool,
    pub services: Vec<Service>,
    pub sizes: ImageSizes,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// How long the build took.
    pub build_seconds: f64,
}

/// File names inside an image directory.
pub mod files {
    pub const KERNEL: &str = "vmlinuz";
    pub const VMLINUX: &str = "vmlinux";
    pub const INITRD: &str = "initrd.cpio";
    pub const ROOTFS: &str = "rootfs.ext4";
    pub const CONFIG: &str = "kernel.config";
    pub const MANIFEST: &str = "manifest.json";
    pub const BUILD_LOG: &str = "build.log";
}
