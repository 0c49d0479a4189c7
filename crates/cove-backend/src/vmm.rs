//! The boundary itself: [`Backend`] (host probing, disks, launching,
//! connecting, process checks) and [`VmmControl`] (a running VMM's runtime
//! control), with [`Capabilities`] saying which of them a backend really
//! offers.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;

use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

use crate::host::HostProbe;
use crate::{BackendError, BackendKind, Transports, VmSpec};

type AliveFn<'a> = &'a (dyn Fn() -> bool + Send + Sync);

/// A boxed future, so the traits stay object-safe (`dyn Backend`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend can do at run time. Callers check these instead of
/// assuming (the supervisor, `stop`, snapshots and `create` all do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Can ask the guest to power off (ACPI power button, Ctrl-Alt-Del);
    /// when false, `stop` goes from the agent straight to `quit`.
    pub graceful_shutdown: bool,
    /// [`VmmControl::save_state`] and [`VmmControl::restore_state`] work
    /// (with [`crate::Memory`] files and [`VmSpec::incoming`]).
    pub snapshots: bool,
    /// The agent channel is a vsock (else a virtio-serial port).
    pub vsock: bool,
    /// Can boot an uncompressed kernel ([`VmSpec::vmlinux`]).
    pub pvh_boot: bool,
    /// Can add or remove devices while the VM runs.
    pub hotplug: bool,
    /// A new supervisor can take over a VMM whose supervisor died (its
    /// console and control channels can be connected again).
    pub adopt: bool,
    /// Can run guests without KVM (software emulation).
    pub software_emulation: bool,
    /// Can plug its user-mode NIC into a stream socket ([`crate::UserNet::StreamFd`]), so the
    /// supervisor runs passt for it instead of the VMM's own user-mode stack.
    pub user_net_stream: bool,
    /// Started as root, can open its files and devices and then drop to [`crate::RunAs`]
    /// before the guest runs.
    #[serde(default)]
    pub drop_privileges: bool,
}

/// The on-disk format of a backend's root and data disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Copy-on-write over a backing file; growable in place.
    Qcow2,
    /// A plain file, block for block.
    Raw,
}

impl DiskFormat {
    /// The file name extension disks of this format carry.
    pub fn extension(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "img",
        }
    }
}

/// A VMM ready to spawn, with its vCPUs to stay paused until
/// [`VmmControl::resume`].
#[derive(Debug)]
pub struct Launch {
    /// The caller adds stdio and process hygiene, and spawns it.
    pub command: Command,
    /// The command as a shell would take it back, for the VM's record of
    /// what ran (`cove why`, humans).
    pub description: String,
    /// The VMM's serial console is its stdin/stdout (Firecracker): the
    /// caller wires them to a socket and keeps the other end as the console.
    pub console_on_stdio: bool,
}

/// Whether the VMM was just launched by this supervisor or is taken over
/// from one that died.
#[derive(Debug, Clone, Copy)]
pub enum ConnectMode<'a> {
    Launched(&'a VmSpec),
    Adopted,
}

/// The channels of a VMM once connected.
pub struct Connected {
    pub control: Box<dyn VmmControl>,
    /// The guest's serial console, both ways; `None` when it is the VMM's
    /// stdio ([`Launch::console_on_stdio`]).
    pub console: Option<UnixStream>,
}

/// A virtual machine monitor cove can run VMs with.
///
/// The lifecycle every backend follows:
/// - [`Backend::launch`] gives a command that starts the VMM with its vCPUs
///   paused, listening on the spec's [`Transports`] without waiting for a
///   client;
/// - the supervisor spawns it, records its pid, then
///   [`Backend::connect`]s the control and console channels and
///   [`Backend::connect_agent`], and only then [`VmmControl::resume`]s, so
///   the console log holds the guest's first byte;
/// - stopping is the agent's power-off first, then
///   [`VmmControl::power_off`] (if [`Capabilities::graceful_shutdown`]),
///   then [`VmmControl::quit`], then [`Backend::kill`].
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    fn capabilities(&self) -> Capabilities;
    fn disk_format(&self) -> DiskFormat;

    /// What this host offers this backend: the accelerator, the TSC
    /// frequency, and whether it can boot at all. Cached per host boot under
    /// `cache_dir` unless `fresh`.
    fn probe_host(&self, cache_dir: &Path, fresh: bool) -> HostProbe;

    /// The VMM binary's identity (path, size, mtime; `absent` when not
    /// installed): a snapshot's device state loads only into the VMM that
    /// wrote it.
    fn identity(&self) -> String;

    /// Makes a VM's own root disk from an image's root filesystem (raw):
    /// copy-on-write where the format allows.
    fn create_root_disk(&self, base: &Path, disk: &Path) -> Result<(), BackendError>;
    /// Makes `disk` a copy-on-write child of a disk of this backend's own
    /// format (a snapshot's): its writes its own, the base never changed.
    fn create_child_disk(&self, base: &Path, disk: &Path) -> Result<(), BackendError>;
    /// How many bytes a disk made by [`Backend::create_root_disk`] holds of
    /// its own (what the guest wrote), read without disturbing a running VMM.
    fn disk_written_bytes(&self, disk: &Path) -> Result<u64, BackendError>;
    /// Turns a freshly made raw filesystem into a data disk at `disk`.
    fn import_data_disk(&self, raw: &Path, disk: &Path) -> Result<(), BackendError>;
    /// Grows a disk to `size_bytes` (never shrinks).
    fn grow_disk(&self, disk: &Path, size_bytes: u64) -> Result<(), BackendError>;

    /// The command that runs the VMM for `spec` on a host as `host` found it.
    fn launch(&self, spec: &VmSpec, host: &HostProbe) -> Result<Launch, BackendError>;

    /// Connects the VMM's control channel and the console (retrying while
    /// the VMM starts, giving up when `alive` says it exited).
    /// [`ConnectMode::Launched`] carries the spec the VMM was launched with:
    /// a backend configured through its API gets its configuration then; the
    /// vCPUs stay paused.
    fn connect<'a>(
        &'a self,
        transports: &'a Transports,
        mode: ConnectMode<'a>,
        alive: AliveFn<'a>,
    ) -> BoxFuture<'a, Result<Connected, BackendError>>;

    /// Opens the guest agent's channel, ready for the agent protocol.
    fn connect_agent<'a>(
        &'a self,
        transports: &'a Transports,
    ) -> BoxFuture<'a, Result<UnixStream, BackendError>>;

    /// True when `pid` is this backend's VMM for these transports, not a
    /// process that reused a recorded pid.
    fn is_ours(&self, pid: u32, transports: &Transports) -> bool;

    /// Ends the VMM at once (its whole process group).
    fn kill(&self, pid: u32) -> io::Result<()> {
        crate::process::kill_group(pid, libc::SIGKILL)
    }
}

/// Runtime control of one running VMM.
pub trait VmmControl: Send + Sync {
    /// Starts (or continues) the vCPUs.
    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Stops the vCPUs; the VM keeps its memory and devices.
    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Asks the guest to power off; it does only if it handles the request.
    fn power_off(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Makes the VMM exit at once (the guest gets no say).
    fn quit(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Pauses the VM and writes its device state to `path` (RAM kept in a
    /// shared [`crate::Memory`] file stays out); on return the VM is paused
    /// with its disks flushed, and [`VmmControl::resume`] runs it again.
    /// Backends without [`Capabilities::snapshots`] answer
    /// [`BackendError::Unsupported`].
    fn save_state<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Loads device state saved by [`VmmControl::save_state`] into a VMM
    /// launched with [`VmSpec::incoming`]; the VM stays paused.
    fn restore_state<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// Renders a command as a shell would take it back: each argument quoted
/// where needed, so the recorded line reruns the VMM exactly.
pub fn render_command(cmd: &Command) -> String {
    let args = std::iter::once(cmd.get_program()).chain(cmd.get_args());
    let mut line = args
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    line.push('\n');
    line
}

pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:,=+-@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_are_quoted_only_where_a_shell_needs_it() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(
            shell_quote("file=/a/b.qcow2,if=none"),
            "file=/a/b.qcow2,if=none"
        );
        assert_eq!(
            shell_quote("console=ttyS0 panic=-1"),
            "'console=ttyS0 panic=-1'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_traits_are_object_safe() {
        fn check(_: Option<&dyn super::Backend>, _: Option<&dyn super::VmmControl>) {}
        check(None, None);
    }
}
