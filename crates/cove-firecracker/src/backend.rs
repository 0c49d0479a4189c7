//! [`Firecracker`] behind cove's [`Backend`] boundary, and
//! [`FirecrackerControl`], its runtime control over the API socket.
//!
//! Launching paused maps onto Firecracker's API naturally: the process
//! starts with only its API socket; [`Backend::connect`] sends the whole
//! configuration (machine, boot source, drives, vsock) and
//! [`VmmControl::resume`] sends `InstanceStart`. The serial console is the
//! process's stdio, wired to one end of a socket pair at launch.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cove_backend::{
    Backend, BackendError, BackendKind, BoxFuture, Capabilities, ConnectMode, Connected,
    DiskFormat, HostProbe, Launch, Memory, Transports, VmSpec, VmmControl, render_command, sockets,
};
use tokio::net::UnixStream;

use crate::api::{
    AGENT_VSOCK_PORT, ActionType, ApiRequest, InstanceActionInfo, MemoryBackend, MemoryBackendType,
    NetworkOverride, SnapshotCreateParams, SnapshotLoadParams, SnapshotType, Vm, VmConfig,
    VmRunState,
};
use crate::http;

const BINARY: &str = "firecracker";
/// How long Firecracker may take to open its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest agent may take to accept on its vsock port, per try.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Firecracker backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Firecracker;

fn unsupported(what: &str, hint: &str) -> BackendError {
    BackendError::Unsupported {
        backend: "firecracker",
        what: what.into(),
        hint: hint.into(),
    }
}

/// `firecracker` on `$PATH`.
pub fn find_binary() -> Result<PathBuf, BackendError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(BINARY))
        .find(|p| p.is_file())
        .ok_or(BackendError::BinaryNotFound {
            binary: BINARY,
            package: "firecracker (from its GitHub releases; Debian does not ship it)",
        })
}

/// Why Firecracker cannot boot on a host as `host` found it, if it cannot.
pub fn cannot_boot(host: &HostProbe, binary: Result<PathBuf, BackendError>) -> Option<String> {
    if !host.kvm() {
        return Some(format!(
            "Firecracker runs guests only under KVM, and KVM does not run vCPUs here ({})",
            host.accel.reason
        ));
    }
    binary.err().map(|e| e.to_string())
}

impl Backend for Firecracker {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // SendCtrlAltDel: the guest powers off if its i8042 driver and
            // init handle the key press.
            graceful_shutdown: true,
            // The API saves and loads (`save_state`/`restore_state`, tested
            // against the contract double), but cove's snapshot layout keeps
            // RAM in a shared memory file the supervisor copies, and
            // Firecracker writes its own memory file: until the layout
            // carries that, the supervisor is told not to offer snapshots.
            snapshots: false,
            vsock: true,
            pvh_boot: true,
            hotplug: false,
            // The console is the process's stdio, held by the supervisor
            // that launched it: a new supervisor cannot reconnect it.
            adopt: false,
            software_emulation: false,
            // Its only NICs are TAPs.
            user_net_stream: false,
            // Firecracker drops privileges through its jailer (chroot, namespaces, uid), which
            // needs the files moved into the jail; not wired yet.
            drop_privileges: false,
        }
    }

    fn disk_format(&self) -> DiskFormat {
        DiskFormat::Raw
    }

    fn probe_host(&self, cache_dir: &Path, fresh: bool) -> HostProbe {
        let mut probe = HostProbe::measure(cache_dir, fresh);
        probe.cannot_boot = cannot_boot(&probe, find_binary());
        probe
    }

    fn identity(&self) -> String {
        match find_binary().and_then(|b| Ok((std::fs::metadata(&b)?, b))) {
            Ok((m, binary)) => {
                use std::os::unix::fs::MetadataExt;
                format!("{}:{}:{}", binary.display(), m.size(), m.mtime())
            }
            Err(_) => "absent".into(),
        }
    }

    fn create_root_disk(&self, base: &Path, disk: &Path) -> Result<(), BackendError> {
        // Firecracker opens raw files only: the VM gets its own sparse copy
        // (a reflink where the filesystem has them, so no data is copied).
        copy_sparse(base, disk)
    }

    fn create_child_disk(&self, base: &Path, disk: &Path) -> Result<(), BackendError> {
        copy_sparse(base, disk)
    }

    fn disk_written_bytes(&self, _disk: &Path) -> Result<u64, BackendError> {
        Err(unsupported(
            "tell what a guest wrote to its root disk (a raw copy has no overlay)",
            "recreate the VM with --force only if its root disk holds nothing you need",
        ))
    }

    fn import_data_disk(&self, _raw: &Path, _disk: &Path) -> Result<(), BackendError> {
        Err(unsupported(
            "make data disks",
            "cove's data disks are qcow2 files shared by VMs; use the qemu backend",
        ))
    }

    fn grow_disk(&self, _disk: &Path, _size_bytes: u64) -> Result<(), BackendError> {
        Err(unsupported(
            "grow data disks",
            "cove's data disks are qcow2 files shared by VMs; use the qemu backend",
        ))
    }

    fn launch(&self, spec: &VmSpec, host: &HostProbe) -> Result<Launch, BackendError> {
        host.require_bootable("firecracker")?;
        // Refuse what Firecracker cannot do before anything runs.
        let config = VmConfig::for_spec(spec)?;
        let mut command = Command::new(find_binary()?);
        command
            .arg("--api-sock")
            .arg(&spec.transports.vmm)
            .arg("--id")
            .arg(&spec.name);
        let mut description = render_command(&command);
        description.push_str("# then, through the API socket, this configuration:\n");
        description.push_str(
            &serde_json::to_string_pretty(&config).expect("the configuration serializes"),
        );
        description.push('\n');
        Ok(Launch {
            command,
            description,
            console_on_stdio: true,
        })
    }

    fn connect<'a>(
        &'a self,
        transports: &'a Transports,
        mode: ConnectMode<'a>,
        alive: &'a (dyn Fn() -> bool + Send + Sync),
    ) -> BoxFuture<'a, Result<Connected, BackendError>> {
        Box::pin(async move {
            let ConnectMode::Launched(spec) = mode else {
                return Err(unsupported(
                    "take over a VM whose supervisor died",
                    "its console was the dead supervisor's; `cove kill` it and start it again",
                ));
            };
            let api = transports.vmm.clone();
            // Wait for the API socket; the connection itself is dropped,
            // every request opens its own.
            sockets::connect_when_ready(&api, SOCKET_TIMEOUT, alive)
                .await
                .map_err(|source| BackendError::Connect {
                    channel: "API",
                    path: api.clone(),
                    source,
                })?;
            let memory = match &spec.memory {
                Memory::PrivateFile(file) | Memory::SharedFile(file) => Some(file.clone()),
                Memory::Anonymous => None,
            };
            let mut control = FirecrackerControl::new(api, memory);
            // A restore reopens the VM's own TAPs, not those the snapshot's VM had.
            control.taps = spec.taps.iter().map(|t| t.ifname.clone()).collect();
            // A VMM that waits for a saved state must stay unconfigured:
            // Firecracker loads a snapshot only into a fresh process.
            if !spec.incoming {
                for request in VmConfig::for_spec(spec)?.requests() {
                    control.call("configure the VM", &request).await?;
                }
            }
            Ok(Connected {
                control: Box::new(control),
                console: None,
            })
        })
    }

    fn connect_agent<'a>(
        &'a self,
        transports: &'a Transports,
    ) -> BoxFuture<'a, Result<UnixStream, BackendError>> {
        Box::pin(async move {
            crate::vsock::connect(&transports.agent, AGENT_VSOCK_PORT, AGENT_CONNECT_TIMEOUT)
                .await
                .map_err(|source| BackendError::Connect {
                    channel: "agent (vsock)",
                    path: transports.agent.clone(),
                    source,
                })
        })
    }

    fn is_ours(&self, pid: u32, transports: &Transports) -> bool {
        cove_backend::process::cmdline_contains(pid, &transports.vmm.to_string_lossy())
    }
}

/// A running Firecracker's control through its API socket.
pub struct FirecrackerControl {
    api: PathBuf,
    /// The guest memory file a restore maps (the spec's), if any.
    memory: Option<PathBuf>,
    /// `InstanceStart` was sent (or a snapshot loaded): resuming is then
    /// `PATCH /vm`.
    started: AtomicBool,
    /// The VM's TAP devices in NIC order, overriding the snapshot's at a restore.
    pub taps: Vec<String>,
}

impl FirecrackerControl {
    pub fn new(api: PathBuf, memory: Option<PathBuf>) -> Self {
        Self {
            api,
            memory,
            started: AtomicBool::new(false),
            taps: Vec::new(),
        }
    }

    async fn call(&self, what: &'static str, request: &ApiRequest) -> Result<(), BackendError> {
        http::send(&self.api, request)
            .await
            .map(drop)
            .map_err(|e| BackendError::control(what, e))
    }

    async fn set_state(&self, what: &'static str, state: VmRunState) -> Result<(), BackendError> {
        self.call(what, &ApiRequest::new("PATCH", "/vm", &Vm { state }))
            .await
    }

    async fn load_snapshot(&self, state: &Path) -> Result<(), BackendError> {
        let load = SnapshotLoadParams {
            snapshot_path: state.to_owned(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: self.memory.clone().unwrap_or_else(|| memory_file(state)),
            },
            resume_vm: false,
            network_overrides: self
                .taps
                .iter()
                .enumerate()
                .map(|(i, tap)| NetworkOverride {
                    iface_id: crate::api::iface_id(i),
                    host_dev_name: tap.clone(),
                })
                .collect(),
        };
        self.call(
            "load a snapshot",
            &ApiRequest::new("PUT", "/snapshot/load", &load),
        )
        .await?;
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Firecracker keeps guest memory apart from the device state: beside it.
pub fn memory_file(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".mem");
    PathBuf::from(name)
}

impl VmmControl for FirecrackerControl {
    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if self.started.load(Ordering::SeqCst) {
                return self.set_state("resume", VmRunState::Resumed).await;
            }
            let start = InstanceActionInfo {
                action_type: ActionType::InstanceStart,
            };
            self.call("start", &ApiRequest::new("PUT", "/actions", &start))
                .await?;
            self.started.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.set_state("pause", VmRunState::Paused))
    }

    fn power_off(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let press = InstanceActionInfo {
                action_type: ActionType::SendCtrlAltDel,
            };
            self.call(
                "send Ctrl-Alt-Del",
                &ApiRequest::new("PUT", "/actions", &press),
            )
            .await
        })
    }

    fn quit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async {
            Err(BackendError::control(
                "quit",
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Firecracker's API has no quit; the process is killed instead",
                ),
            ))
        })
    }

    fn save_state<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            // Firecracker snapshots only a paused VM.
            self.set_state("pause", VmRunState::Paused).await?;
            let create = SnapshotCreateParams {
                snapshot_path: path.to_owned(),
                mem_file_path: memory_file(path),
                snapshot_type: SnapshotType::Full,
            };
            self.call(
                "save its state",
                &ApiRequest::new("PUT", "/snapshot/create", &create),
            )
            .await
        })
    }

    fn restore_state<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.load_snapshot(path))
    }
}

/// [`cove_util::sparse::copy_sparse`], its failure with the next step.
fn copy_sparse(from: &Path, to: &Path) -> Result<(), BackendError> {
    cove_util::sparse::copy_sparse(from, to).map_err(|e| BackendError::Tool {
        source: e.into(),
        fix: "check free space in the data directory (`cove doctor`)",
    })
}
