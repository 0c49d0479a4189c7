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
//!
//! Also here, because every backend shares them: the typed values a VM
//! record stores ([`BackendKind`], [`Machine`], [`Accel`], [`PortForward`]),
//! host probing ([`host`]: does KVM really run vCPUs, the TSC frequency),
//! process hygiene ([`process`]) and waiting for a VMM's sockets
//! ([`sockets`]). This crate depends on no other cove crate.

mod error;
pub mod host;
mod model;
pub mod process;
pub mod sockets;

use std::process::Command;

pub use cove_guest::Arch;
use serde::{Deserialize, Serialize};

pub use error::BackendError;
pub use host::{AccelChoice, HostProbe};
pub use model::{Accel, BackendKind, DataDisk, Machine, Memory, PortForward, SharedDir, VmSpec};

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
    fn typed_values_round_trip_through_text() {
        for m in [Machine::Microvm, Machine::Q35] {
            assert_eq!(m.to_string().parse::<Machine>().unwrap(), m);
        }
        for a in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>().unwrap(), a);
        }
        for b in BackendKind::ALL {
            assert_eq!(b.to_string().parse::<BackendKind>().unwrap(), b);
        }
        let err = "pc".parse::<Machine>().unwrap_err().to_string();
        assert!(err.contains("microvm"), "{err}");
        let err = "xen".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("firecracker"), "{err}");
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
