//! The contract between cove on the host and the guests it boots, defined once.
//!
//! Every fact a guest and the host must agree on lives here: the lines cove's init prints on
//! the console, the virtio-serial port the agent listens on, the label of the root filesystem,
//! the serial of a data disk and the kernel argument that mounts it. The init scripts cove puts
//! into images are written with `@NAME@` placeholders that [`render_script`] fills from these
//! constants, so a script cannot drift from the code that reads its output.

mod arch;
pub use arch::{Arch, UnknownArch};

/// Name of the virtio-serial port the guest agent listens on.
pub const AGENT_PORT_NAME: &str = "org.cove.agent";

/// Where the agent binary lives in every image (absolute, as the guest sees it).
pub const AGENT_PATH: &str = "/usr/lib/cove/cove-agent";

/// The ext4 label of every image's root filesystem; the initramfs finds root by it.
pub const ROOT_LABEL: &str = "cove-root";

/// The virtio serial of the root disk (`/sys/block/vdX/serial`).
pub const ROOT_DISK_SERIAL: &str = "cove-root";

/// The kernel argument naming a data disk to mount: `cove.disk=<serial>:<path>`.
pub const DISK_ARG: &str = "cove.disk";

/// The kernel argument naming a NIC on a cove network, by MAC: `cove.net=<mac>`. The
/// initramfs brings that NIC up with DHCP (the network's dnsmasq knows the MAC).
pub const NET_ARG: &str = "cove.net";

/// The MAC of the user-mode NIC (QEMU's default for the first NIC without one); the initramfs
/// finds it by this, whatever the order the NICs were probed in.
pub const USER_NIC_MAC: &str = "52:54:00:12:34:56";

/// The user-mode network as the guest configures it statically (the initramfs, the kernel's
/// `ip=`, systemd-networkd in Debian images): its address and prefix, the gateway, and the DNS
/// forwarder. QEMU's slirp and passt (told these) both serve it.
pub mod user_net {
    pub const GUEST: &str = "10.0.2.15";
    pub const PREFIX_LEN: u8 = 24;
    pub const GATEWAY: &str = "10.0.2.2";
    pub const DNS: &str = "10.0.2.3";
}

/// The kernel argument for a NIC on a cove network.
pub fn net_arg(mac: &str) -> String {
    format!("{NET_ARG}={mac}")
}

/// What a data disk's virtio serial starts with (`data-<name>`).
pub const DATA_DISK_SERIAL_PREFIX: &str = "data-";

/// A virtio-blk serial is at most 20 bytes; a longer one is cut by QEMU and the guest would
/// not find the disk.
pub const MAX_SERIAL_LEN: usize = 20;

/// The longest data-disk name whose serial still fits in [`MAX_SERIAL_LEN`].
pub const MAX_DATA_DISK_NAME_LEN: usize = MAX_SERIAL_LEN - DATA_DISK_SERIAL_PREFIX.len();

/// The serial a data disk named `name` has in the guest (`/sys/block/vdX/serial`).
pub fn data_disk_serial(name: &str) -> String {
    format!("{DATA_DISK_SERIAL_PREFIX}{name}")
}

/// The kernel argument that makes cove's init mount the disk with `serial` on `mount`.
pub fn disk_arg(serial: &str, mount: &str) -> String {
    format!("{DISK_ARG}={serial}:{mount}")
}

/// The console lines cove's init (initramfs `/init` and the root filesystem's
/// `/sbin/cove-init`) and the agent print. The host reads them to judge a boot, `cove why`
/// to explain one, and the benchmarks to time one.
pub mod marker {
    /// Every line of cove's init starts with this.
    pub const PREFIX: &str = "cove-init:";
    /// The root filesystem's init has started the agent and the services: the guest is up.
    pub const READY: &str = "cove-init: ready";
    /// The init gave up; the reason follows on the same line.
    pub const FATAL: &str = "cove-init: FATAL:";
    /// The initramfs is loading kernel modules.
    pub const LOADING_MODULES: &str = "cove-init: loading modules";
    /// The initramfs is about to mount the root filesystem.
    pub const MOUNTING_ROOT: &str = "cove-init: mounting root";
    /// The agent has opened its port and serves.
    pub const AGENT_READY: &str = "cove-agent: ready";
    /// The kernel panicked: the guest is dead (printed by Linux itself).
    pub const KERNEL_PANIC: &str = "Kernel panic - not syncing:";
    /// The kernel handed over to the initramfs (printed by Linux itself).
    pub const KERNEL_RUN_INIT: &str = "Run /init as init process";
}

/// The placeholders an init script may use, with their values.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("@ROOT_LABEL@", ROOT_LABEL),
    ("@AGENT_PATH@", AGENT_PATH),
    ("@DISK_ARG@", DISK_ARG),
    ("@NET_ARG@", NET_ARG),
    ("@USER_NIC_MAC@", USER_NIC_MAC),
    ("@READY@", marker::READY),
    ("@FATAL@", marker::FATAL),
    ("@LOADING_MODULES@", marker::LOADING_MODULES),
    ("@MOUNTING_ROOT@", marker::MOUNTING_ROOT),
];

/// Fills the `@NAME@` placeholders of an init script with the contract's values.
///
/// ```
/// assert_eq!(cove_guest::render_script("findfs LABEL=@ROOT_LABEL@"), "findfs LABEL=cove-root");
/// ```
pub fn render_script(template: &str) -> String {
    PLACEHOLDERS
        .iter()
        .fold(template.to_owned(), |s, (from, to)| s.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_and_values_need_no_shell_quoting() {
        let all: String = PLACEHOLDERS.iter().map(|(p, _)| format!("{p} ")).collect();
        let out = render_script(&all);
        assert!(!out.contains('@'), "{out}");
        for (_, v) in PLACEHOLDERS {
            // The scripts put the values inside double quotes or bare words.
            assert!(!v.contains(['"', '\'', '$', '`', '\\', '@']), "{v}");
        }
    }

    #[test]
    fn the_longest_allowed_name_gives_a_serial_that_fits() {
        let name = "x".repeat(MAX_DATA_DISK_NAME_LEN);
        assert_eq!(data_disk_serial(&name).len(), MAX_SERIAL_LEN);
        assert_eq!(
            disk_arg("data-pg", "/var/lib/pg"),
            "cove.disk=data-pg:/var/lib/pg"
        );
    }
}
