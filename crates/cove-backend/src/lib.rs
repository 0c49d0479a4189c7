//! The contract between cove's supervisor and a virtual machine monitor.
//!
//! A [`VmSpec`] says everything needed to launch one VM; a [`Backend`] turns it
//! into the command that runs the VMM and declares, through [`Capabilities`],
//! which runtime operations it supports, so that callers ask instead of
//! assuming. QEMU lives in `cove-qemu`; Firecracker or cloud-hypervisor would
//! be further implementations of the same trait.
//!
//! The lifecycle contract every backend follows:
//! - the VMM starts with its vCPUs paused and listens on the three unix
//!   sockets of the spec (control, console, agent) without waiting for a
//!   client; the supervisor connects all of them, then resumes the vCPUs, so
//!   the console log holds the guest's first byte;
//! - stopping is graceful first (if [`Capabilities::graceful_shutdown`]), then
//!   forced after a timeout.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

pub use cove_state::PortForward;
use serde::{Deserialize, Serialize};

/// The machine model the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// A minimal machine: no PCI, virtio over MMIO, ISA serial. Boots fastest.
    #[default]
    Microvm,
    /// A modern PC (PCI Express); for guests that need PCI.
    Q35,
}

impl Machine {
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Machine {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "microvm" => Ok(Machine::Microvm),
            "q35" => Ok(Machine::Q35),
            other => Err(BackendError::UnknownMachine(other.to_owned())),
        }
    }
}

/// How vCPUs execute guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation; works everywhere, much slower.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Accel {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(BackendError::UnknownAccel(other.to_owned())),
        }
    }
}

/// A disk besides the root disk, e.g. a persistent data disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDisk {
    /// A qcow2 image.
    pub path: PathBuf,
    /// Visible in the guest as `/sys/block/vdX/serial`; guests find data disks
    /// by it, so it must be unique within a VM (at most 20 bytes for virtio-blk).
    pub serial: String,
}

/// Where guest RAM lives. File-backed RAM is what makes snapshots and clones cheap: a VM that
/// may be snapshotted keeps its RAM in a file shared with the VMM, and a VM restored from a
/// snapshot maps the snapshot's memory file privately (copy-on-write), so clones share it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Memory {
    /// Anonymous memory of the VMM process.
    #[default]
    Anonymous,
    /// A file the VMM maps shared: the guest's RAM is the file's content.
    SharedFile(PathBuf),
    /// A saved memory file mapped privately: reads come from the file (one page-cache copy for
    /// every VM mapping it), writes stay in the VM.
    PrivateFile(PathBuf),
}

/// A host folder shared into the guest through a vhost-user-fs daemon (virtiofsd) that already
/// listens on `socket`; the guest mounts it by `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDir {
    pub socket: PathBuf,
    /// At most 36 bytes, letters, digits, `-` and `_` (virtio-fs limits the tag).
    pub tag: String,
}

/// Everything needed to launch one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The compressed kernel (bzImage).
    pub kernel: PathBuf,
    /// The uncompressed ELF kernel; booted through its PVH entry point instead
    /// of `kernel` when present and the machine supports it (faster).
    pub vmlinux: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// The image's own kernel arguments, appended after the backend's.
    pub cmdline_extra: String,
    /// The VM's copy-on-write qcow2 overlay of its image.
    pub root_disk: PathBuf,
    /// Attached after the root disk, in this order.
    pub data_disks: Vec<DataDisk>,
    /// Host ports forwarded to guest ports over user-mode networking.
    pub ports: Vec<PortForward>,
    pub machine: Machine,
    pub accel: Accel,
    /// The VMM's control socket (QMP for QEMU); the VMM listens on it.
    pub qmp_socket: PathBuf,
    /// The guest's serial console; the VMM listens on it.
    pub console_socket: PathBuf,
    /// The guest agent's virtio-serial port; the VMM listens on it.
    pub agent_socket: PathBuf,
    /// Where guest RAM lives.
    #[serde(default)]
    pub memory: Memory,
    /// Start waiting for a saved device state instead of booting (the memory file is then the
    /// snapshot's, [`Memory::PrivateFile`]).
    #[serde(default)]
    pub incoming: bool,
    /// Host folders (virtio-fs); guest memory becomes shareable when there is one.
    #[serde(default)]
    pub shares: Vec<SharedDir>,
}

/// What a backend can do at run time. Callers check these instead of
/// assuming: e.g. `graceful_shutdown == false` means "stop" goes straight to
/// the forced path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Can ask the guest to power off (ACPI power button); only useful if the
    /// guest handles it.
    pub graceful_shutdown: bool,
    /// Can save a running VM to a file and restore it.
    pub snapshots: bool,
    /// Can give the guest a virtio-vsock device (also needs host support).
    pub vsock: bool,
    /// Can boot an uncompressed kernel through its PVH entry point.
    pub pvh_boot: bool,
    /// Can add or remove devices while the VM runs.
    pub hotplug: bool,
    /// Starts with vCPUs paused until told to continue (see the crate docs).
    pub start_paused: bool,
}

/// Why a backend could not produce a VMM command.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The VMM binary is not installed.
    #[error("{binary} was not found on $PATH; install it (on Debian: `apt-get install {package}`)")]
    BinaryNotFound {
        binary: &'static str,
        package: &'static str,
    },
    #[error("unknown machine type {0:?}; use `microvm` or `q35`")]
    UnknownMachine(String),
    #[error("unknown accelerator {0:?}; use `kvm` or `tcg`")]
    UnknownAccel(String),
    /// The spec asks for something this backend cannot do.
    #[error("the {backend} backend cannot {what}; {hint}")]
    Unsupported {
        backend: &'static str,
        what: String,
        hint: String,
    },
    /// A value of the spec cannot be passed on safely (e.g. a path containing
    /// a character the VMM's option syntax cannot carry).
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
}

/// A virtual machine monitor cove can launch VMs with.
pub trait Backend: Send + Sync {
    /// A short lowercase name, e.g. `qemu`.
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// The command that launches the VMM for `spec`, with its vCPUs paused.
    /// The caller adds stdio and process hygiene and spawns it.
    fn command(&self, spec: &VmSpec) -> Result<Command, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_and_accel_round_trip_through_text() {
        for m in [Machine::Microvm, Machine::Q35] {
            assert_eq!(m.to_string().parse::<Machine>().unwrap(), m);
        }
        for a in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>().unwrap(), a);
        }
        let err = "pc".parse::<Machine>().unwrap_err().to_string();
        assert!(err.contains("microvm"), "{err}");
    }

    #[test]
    fn missing_binary_error_names_the_package() {
        let err = BackendError::BinaryNotFound {
            binary: "qemu-system-x86_64",
            package: "qemu-system-x86",
        };
        assert!(err.to_string().contains("apt-get install qemu-system-x86"));
    }
}
