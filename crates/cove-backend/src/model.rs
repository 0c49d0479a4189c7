//! The typed values a VM record stores and a launch needs: which backend,
//! which machine, which accelerator, and the [`VmSpec`] of one launch.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use cove_guest::Arch;
use serde::{Deserialize, Serialize};

use crate::BackendError;

/// Which virtual machine monitor runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// QEMU (`qemu-system-x86_64`): KVM or TCG, microvm or q35.
    #[default]
    Qemu,
    /// Firecracker: KVM only, its own minimal machine, an HTTP API socket.
    Firecracker,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::Qemu, BackendKind::Firecracker];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Firecracker => "firecracker",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(BackendKind::Qemu),
            "firecracker" => Ok(BackendKind::Firecracker),
            other => Err(BackendError::UnknownBackend(other.to_owned())),
        }
    }
}

/// The machine model the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// A minimal machine: no PCI, virtio over MMIO, ISA serial. Boots fastest.
    #[default]
    Microvm,
    /// A modern PC (PCI Express); for guests that need PCI.
    Q35,
    /// QEMU's arm64 `virt` machine (PCI Express, PL011 console): the one machine of arm64
    /// guests (`qemu-system-aarch64`).
    Virt,
}

impl Machine {
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
            Machine::Virt => "virt",
        }
    }

    /// The guest architecture this machine emulates.
    pub fn arch(self) -> Arch {
        match self {
            Machine::Microvm | Machine::Q35 => Arch::Amd64,
            Machine::Virt => Arch::Arm64,
        }
    }

    /// The machine for a guest of `arch` when `asked` was requested (the default when
    /// nobody asked: `microvm`). An arm64 guest always gets `virt`; `virt` for an amd64 guest
    /// is refused.
    pub fn for_arch(arch: Arch, asked: Machine) -> Result<Machine, BackendError> {
        match (arch, asked) {
            (Arch::Arm64, Machine::Virt | Machine::Microvm) => Ok(Machine::Virt),
            (Arch::Amd64, Machine::Microvm | Machine::Q35) => Ok(asked),
            _ => Err(BackendError::InvalidSpec(format!(
                "machine `{asked}` cannot run an {arch} guest; {arch} guests run on `{}`",
                if arch == Arch::Arm64 {
                    "virt"
                } else {
                    "microvm` or `q35"
                }
            ))),
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
            "virt" => Ok(Machine::Virt),
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
    /// Software emulation (QEMU's TCG); works everywhere, much slower.
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

/// A host port forwarded to a guest port over user-mode networking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host_addr: String,
    pub host_port: u16,
    pub guest_port: u16,
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

/// Where a VMM's channels live: unix sockets the VMM listens on (or, for
/// Firecracker's hybrid vsock, a socket it listens on and multiplexes).
/// Each backend decides what goes over them; the supervisor only asks the
/// backend to connect ([`crate::Backend::connect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transports {
    /// The VMM's own control socket (QEMU: QMP; Firecracker: its HTTP API).
    pub vmm: PathBuf,
    /// The guest's serial console.
    pub console: PathBuf,
    /// The guest agent's channel (QEMU: a virtio-serial port; Firecracker:
    /// the host end of its vsock device).
    pub agent: PathBuf,
}

impl Transports {
    /// Every socket path, for length checks and clean-up before a launch.
    pub fn sockets(&self) -> [&PathBuf; 3] {
        [&self.vmm, &self.console, &self.agent]
    }
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
    /// The sockets the VMM listens on.
    pub transports: Transports,
    /// Where guest RAM lives.
    #[serde(default)]
    pub memory: Memory,
    /// Start waiting for a saved device state instead of booting (the memory file is then the
    /// snapshot's, [`Memory::PrivateFile`]); [`crate::VmmControl::restore_state`] loads it.
    #[serde(default)]
    pub incoming: bool,
    /// Host folders (virtio-fs); guest memory becomes shareable when there is one.
    #[serde(default)]
    pub shares: Vec<SharedDir>,
    /// NICs on cove networks, after the user-mode one, in this order.
    #[serde(default)]
    pub taps: Vec<Tap>,
    /// What the user-mode NIC is plugged into.
    #[serde(default)]
    pub user_net: UserNet,
    /// The identity the VMM drops to once it has opened everything it needs (only when cove
    /// runs as root, and only for a backend whose [`crate::Capabilities::drop_privileges`] says
    /// so); `None`: it keeps the caller's.
    #[serde(default)]
    pub run_as: Option<RunAs>,
}

/// An unprivileged uid and gid for one VMM. Nothing on the host belongs to them: the VMM opens
/// its disks, kernel, RAM file, sockets and devices before it drops to them, so a guest that
/// takes the VMM over holds only those open files, cannot open another, and (with a uid of its
/// own) cannot signal or trace another VM's VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Where VMM identities start: above the ranges Linux distributions give to users, system
    /// services and systemd-nspawn's per-container ranges (which end at 0x6FFFFFFF), below
    /// 2^31 (which some tools read as negative).
    pub const BASE: u32 = 0x7C00_0000;
    /// The last one: pids are below 2^22 (Linux's largest `pid_max`).
    pub const LAST: u32 = Self::BASE + 0x3F_FFFF;

    /// Every identity a VMM may run as (host rules match them: `cove_net::guard`).
    pub fn all() -> std::ops::RangeInclusive<u32> {
        Self::BASE..=Self::LAST
    }

    /// The identity for the VMM of the supervisor with pid `supervisor_pid`: pids are unique
    /// among running processes, so no two running supervisors hand out the same one. (An
    /// adopted VMM keeps the identity of the supervisor that died; a later supervisor given
    /// that pid again would share it, and the two VMMs could signal each other, nothing more.)
    pub fn for_supervisor(supervisor_pid: u32) -> Self {
        let id = Self::BASE + (supervisor_pid & (Self::LAST - Self::BASE));
        Self { uid: id, gid: id }
    }
}

/// The other end of the user-mode NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum UserNet {
    /// The VMM's own user-mode stack (QEMU: slirp), forwarding [`VmSpec::ports`] itself.
    #[default]
    Builtin,
    /// A connected stream socket the VMM inherits on this descriptor, whose other end a
    /// user-mode network daemon (passt) holds; the daemon owns the forwards and what the guest
    /// may reach. Only for a backend whose [`crate::Capabilities::user_net_stream`] says so.
    StreamFd(i32),
}

/// A NIC on a TAP device that already exists (cove-net made it, on a bridge); the VMM only
/// opens it by name, so it needs no privilege of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tap {
    pub ifname: String,
    /// The guest finds the NIC by it (`cove.net=` on the kernel command line) and the
    /// network's DHCP server knows the guest by it.
    pub mac: String,
}

#[cfg(test)]
mod tests {
    use super::RunAs;

    #[test]
    fn vmm_identities_are_distinct_per_supervisor_and_stay_below_2_pow_31() {
        // Linux's largest pid_max is 2^22.
        let last = RunAs::for_supervisor((1 << 22) - 1);
        assert_eq!(last.uid, RunAs::LAST);
        const { assert!(RunAs::LAST < 1 << 31) };
        assert!(RunAs::all().contains(&RunAs::for_supervisor(1 << 22).uid));
        assert_eq!(RunAs::for_supervisor(1).uid, RunAs::BASE + 1);
        assert_ne!(RunAs::for_supervisor(2), RunAs::for_supervisor(3));
        assert_eq!(RunAs::for_supervisor(9).gid, RunAs::for_supervisor(9).uid);
    }
}
