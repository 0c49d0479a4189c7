//! Errors of VM lifecycle operations; each says what happened and what to do.

use cove_state::VmState;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] cove_state::StoreError),
    #[error(transparent)]
    Path(#[from] cove_state::paths::PathError),
    #[error(transparent)]
    Image(#[from] crate::boot_image::ImageError),
    #[error("{0}")]
    BadResources(String),
    #[error("`{0}` is already {1}; `cove stop {0}` first, or `cove restart {0}`")]
    AlreadyRunning(String, VmState),
    #[error("`{0}` is {1}; stop it first (`cove stop {0}`) or pass --force")]
    Running(String, VmState),
    #[error(
        "host port {addr} is not free ({detail}); pick another host port or stop what uses it (`ss -ltnp`)"
    )]
    PortTaken { addr: String, detail: String },
    /// The tool's error (command, status, output) is part of the message, then the next step.
    #[error("{tool}; {fix}")]
    Tool {
        tool: cove_util::ToolError,
        fix: &'static str,
    },
    /// The boot failed; the supervisor's judgement of why (`cove why`'s rules) and its evidence.
    #[error("the VM did not start: {}", .0.render())]
    BootFailed(cove_api::Failure),
    /// A request to a running VM's supervisor failed; which one, and how (unreachable, another
    /// API version, refused with its reason).
    #[error("{op} `{vm}` failed")]
    Control {
        vm: String,
        op: ControlOp,
        #[source]
        source: cove_api::ClientError,
    },
    #[error(
        "`{vm}` is still {state} after it was killed, so it was not reported killed; see `cove \
         show {vm}` and its supervisor log, and end its processes by hand if they remain"
    )]
    KillUnconfirmed {
        vm: String,
        state: VmState,
        /// Why the supervisor itself did not carry out the kill, when it did not.
        #[source]
        supervisor: Option<Box<LifecycleError>>,
    },
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Backend(#[from] cove_backend::BackendError),
    #[error(
        "data disk `{disk}` of `{vm}` is also used by {}; nothing was deleted (delete those VMs \
         first, or delete `{vm}` without --purge to keep the disk)",
        users.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
    )]
    DiskInUse {
        disk: String,
        vm: String,
        users: Vec<String>,
    },
    #[error(transparent)]
    Network(#[from] cove_net::NetError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl LifecycleError {
    /// The VM's supervisor could not be talked to at all (not yet listening, or gone).
    pub fn supervisor_unreachable(&self) -> bool {
        matches!(self, LifecycleError::Control { source, .. } if source.is_unreachable())
    }
}

/// The supervisor request a [`LifecycleError::Control`] was part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    WaitReady,
    Stop,
    Kill,
    Snapshot,
}

impl std::fmt::Display for ControlOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ControlOp::WaitReady => "waiting for the boot of",
            ControlOp::Stop => "stopping",
            ControlOp::Kill => "killing",
            ControlOp::Snapshot => "snapshotting",
        })
    }
}
