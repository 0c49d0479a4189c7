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
    #[error("the VM did not start: {}{}", .0.message, render_tail(&.0.console_tail, .0.hint.as_deref()))]
    BootFailed(cove_api::Failure),
    #[error(
        "the supervisor of `{0}` does not answer on its control socket; `cove kill {0}` ends the VM"
    )]
    SupervisorUnreachable(String),
    #[error("unexpected answer from the supervisor: {0}")]
    Protocol(String),
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

fn render_tail(tail: &[String], hint: Option<&str>) -> String {
    let mut out = String::new();
    if !tail.is_empty() {
        out.push_str("\n  last console lines:");
        for line in tail {
            out.push_str("\n    | ");
            out.push_str(line);
        }
    }
    if let Some(hint) = hint {
        out.push_str("\n  next: ");
        out.push_str(hint);
    }
    out
}
