//! [`QemuBackend`]: QEMU behind cove's [`Backend`] boundary, and
//! [`QemuControl`], its runtime control over QMP.

use std::path::Path;
use std::time::Duration;

use cove_backend::{
    Backend, BackendError, BackendKind, BoxFuture, Capabilities, ConnectMode, Connected,
    DiskFormat, HostProbe, Launch, Transports, VmmControl, render_command, sockets,
};
use tokio::net::UnixStream;

use crate::argv::Qemu;
use crate::qmp::QmpClient;

/// Environment variable with extra QEMU arguments, whitespace-separated: an
/// escape hatch for experiments and benchmarks (e.g. a second virtio-serial
/// port for qemu-guest-agent). Read where the VMM is launched and recorded
/// in its command line like everything else.
pub const EXTRA_ARGS_ENV: &str = "COVE_QEMU_EXTRA_ARGS";

/// How long QEMU may take to open its sockets.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The QEMU backend (`qemu-system-x86_64`).
#[derive(Debug, Clone, Copy, Default)]
pub struct QemuBackend;

impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            graceful_shutdown: true,
            // QMP `migrate` of device state to a file, RAM in a memory file
            // (`crate::save`).
            snapshots: true,
            // QEMU can, but the devices are not in the argv and these hosts
            // have no /dev/vhost-vsock; the agent uses virtio-serial.
            vsock: false,
            pvh_boot: true,
            hotplug: false,
            adopt: true,
            software_emulation: true,
            // `-netdev stream` (QEMU 7.2+) to passt's socket.
            user_net_stream: true,
            // `-runas` (`crate::argv`).
            drop_privileges: true,
        }
    }

    fn disk_format(&self) -> DiskFormat {
        DiskFormat::Qcow2
    }

    fn probe_host(&self, cache_dir: &Path, fresh: bool) -> HostProbe {
        let mut probe = HostProbe::measure(cache_dir, fresh);
        // TCG runs anywhere; only a missing QEMU stops this backend.
        probe.cannot_boot = Qemu::find(None).err().map(|e| e.to_string());
        probe
    }

    fn identity(&self) -> String {
        let Ok(qemu) = Qemu::find(None) else {
            return "absent".into();
        };
        match std::fs::metadata(&qemu.binary) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                format!("{}:{}:{}", qemu.binary.display(), m.size(), m.mtime())
            }
            Err(_) => "absent".into(),
        }
    }

    fn create_root_disk(&self, base: &Path, disk: &Path) -> Result<(), BackendError> {
        crate::disk::create_overlay(base, disk)
    }

    fn create_child_disk(&self, base: &Path, disk: &Path) -> Result<(), BackendError> {
        crate::disk::create_child(base, disk)
    }

    fn disk_written_bytes(&self, disk: &Path) -> Result<u64, BackendError> {
        crate::disk::written_bytes(disk)
    }

    fn import_data_disk(&self, raw: &Path, disk: &Path) -> Result<(), BackendError> {
        crate::disk::import_raw(raw, disk)
    }

    fn grow_disk(&self, disk: &Path, size_bytes: u64) -> Result<(), BackendError> {
        crate::disk::grow(disk, size_bytes)
    }

    fn launch(
        &self,
        spec: &cove_backend::VmSpec,
        host: &HostProbe,
    ) -> Result<Launch, BackendError> {
        let qemu = Qemu::find_for(spec.machine, host.tsc_khz)?;
        let mut command = qemu.command(spec)?;
        if let Ok(extra) = std::env::var(EXTRA_ARGS_ENV) {
            command.args(extra.split_whitespace());
        }
        let description = render_command(&command);
        Ok(Launch {
            command,
            description,
            console_on_stdio: false,
        })
    }

    fn connect<'a>(
        &'a self,
        transports: &'a Transports,
        _mode: ConnectMode<'a>,
        alive: &'a (dyn Fn() -> bool + Send + Sync),
    ) -> BoxFuture<'a, Result<Connected, BackendError>> {
        Box::pin(async move {
            // QEMU is configured by its command line: launched or adopted,
            // connecting is the same.
            let qmp = connect_socket("QMP", &transports.vmm, alive).await?;
            let qmp = QmpClient::from_stream(qmp, &transports.vmm)
                .await
                .map_err(|e| BackendError::control("negotiate QMP", e))?;
            let console = connect_socket("console", &transports.console, alive).await?;
            Ok(Connected {
                control: Box::new(QemuControl { qmp }),
                console: Some(console),
            })
        })
    }

    fn connect_agent<'a>(
        &'a self,
        transports: &'a Transports,
    ) -> BoxFuture<'a, Result<UnixStream, BackendError>> {
        // QEMU created every socket before QMP answered, so this connects at
        // once; the agent's handshake completes when the guest's agent starts.
        Box::pin(async move {
            UnixStream::connect(&transports.agent)
                .await
                .map_err(|source| BackendError::Connect {
                    channel: "agent",
                    path: transports.agent.clone(),
                    source,
                })
        })
    }

    fn is_ours(&self, pid: u32, transports: &Transports) -> bool {
        // The QMP socket path is unique to one VM and on QEMU's command line.
        cove_backend::process::cmdline_contains(pid, &transports.vmm.to_string_lossy())
    }
}

async fn connect_socket(
    channel: &'static str,
    path: &Path,
    alive: &(dyn Fn() -> bool + Send + Sync),
) -> Result<UnixStream, BackendError> {
    sockets::connect_when_ready(path, SOCKET_TIMEOUT, alive)
        .await
        .map_err(|source| BackendError::Connect {
            channel,
            path: path.to_owned(),
            source,
        })
}

/// A running QEMU's control over QMP.
pub struct QemuControl {
    qmp: QmpClient,
}

impl VmmControl for QemuControl {
    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.qmp
                .cont()
                .await
                .map_err(|e| BackendError::control("resume", e))
        })
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.qmp
                .stop()
                .await
                .map_err(|e| BackendError::control("pause", e))
        })
    }

    fn power_off(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.qmp
                .system_powerdown()
                .await
                .map_err(|e| BackendError::control("press the power button", e))
        })
    }

    fn quit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.qmp
                .quit()
                .await
                .map_err(|e| BackendError::control("quit", e))
        })
    }

    fn save_state<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.qmp
                .save_state(path)
                .await
                .map_err(|e| BackendError::control("save its state", e))
        })
    }

    fn restore_state<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.qmp
                .restore_state(path)
                .await
                .map_err(|e| BackendError::control("restore its state", e))
        })
    }
}
