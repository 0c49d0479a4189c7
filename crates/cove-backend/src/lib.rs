//! The boundary between cove and a virtual machine monitor.
//!
//! Everything VMM-specific sits behind [`Backend`] (probing the host,
//! making disks, launching paused, connecting the control, console and agent
//! channels, telling its own process from a reused pid, killing) and
//! [`VmmControl`] (resume, pause, power-off, quit, save and restore state). A
//! backend declares through [`Capabilities`] what it offers, and callers ask
//! instead of assuming. QEMU lives in `cove-qemu`; nothing above this crate
//! names its protocols or arguments.
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
mod vmm;

pub use cove_guest::Arch;

pub use error::BackendError;
pub use host::{AccelChoice, HostProbe};
pub use model::{
    Accel, BackendKind, DataDisk, Machine, Memory, PortForward, RunAs, SharedDir, Tap, Transports,
    UserNet, VmSpec,
};
pub use vmm::{
    Backend, BoxFuture, Capabilities, ConnectMode, Connected, DiskFormat, Launch, VmmControl,
    render_command, shell_quote,
};

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
