//! The arm64 piece of the QEMU command line: `qemu-system-aarch64 -M virt`, kept apart from
//! the x86-64 argv so that each architecture's choices are read in one place. Everything
//! else (sockets, disks, network, the agent's virtio-serial port) is shared in `argv.rs`,
//! with virtio on PCI as on q35.

use cove_backend::{Accel, Arch};

pub(crate) const BINARY: &str = "qemu-system-aarch64";
pub(crate) const PACKAGE: &str = "qemu-system-arm";

/// Kernel arguments every arm64 guest gets, before the image's own: the console is the
/// `virt` machine's PL011 (`ttyAMA0`); `reboot`/`panic` as on x86-64. No `tsc=`: arm64 has
/// the architected timer, which TCG keeps steady.
pub(crate) fn base_cmdline() -> String {
    format!("console={} panic=-1", Arch::Arm64.console())
}

/// The accelerator an arm64 guest really gets: KVM only on an arm64 host; everywhere else
/// TCG, whatever the host's KVM probe said (x86-64 KVM cannot run arm64 code).
pub(crate) fn accel(asked: Accel) -> Accel {
    if Arch::host() == Arch::Arm64 {
        asked
    } else {
        Accel::Tcg
    }
}

/// `-M` and `-cpu`. The machine's default GIC (v2) serves up to 8 vCPUs. Under TCG a
/// Cortex-A72 rather than `max`: `max` carries pointer authentication, whose emulation
/// costs every function return a QARMA computation; the cloud kernel needs nothing
/// beyond ARMv8.0.
pub(crate) fn machine_args(accel: Accel) -> [&'static str; 4] {
    match accel {
        Accel::Kvm => ["-M", "virt", "-cpu", "host"],
        Accel::Tcg => ["-M", "virt", "-cpu", "cortex-a72"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arm64_guest_on_an_x86_host_always_gets_tcg() {
        if Arch::host() == Arch::Amd64 {
            assert_eq!(accel(Accel::Kvm), Accel::Tcg);
        }
        assert_eq!(accel(Accel::Tcg), Accel::Tcg);
        assert_eq!(machine_args(Accel::Tcg)[3], "cortex-a72");
        assert!(base_cmdline().starts_with("console=ttyAMA0 "));
    }
}
