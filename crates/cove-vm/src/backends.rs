//! The one place that maps a recorded [`BackendKind`] to its implementation:
//! everything else in cove holds a `dyn Backend`.

use cove_backend::{Backend, BackendError, BackendKind, Capabilities, RunAs};

/// Every backend, for `cove doctor`.
pub fn all() -> impl Iterator<Item = Box<dyn Backend>> {
    BackendKind::ALL
        .into_iter()
        .filter_map(|k| for_kind(k).ok())
}

/// The backend that runs VMs of `kind`.
pub fn for_kind(kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Qemu => Ok(Box::new(cove_qemu::QemuBackend)),
        BackendKind::Firecracker => Ok(Box::new(cove_firecracker::Firecracker)),
    }
}

/// Who a VMM this process launches runs as: under root, an unprivileged uid of its own, named
/// by this process's pid (a supervisor's, unique while it runs), when the backend can drop to
/// one; else the caller's. `cove doctor` asks the same.
pub fn vmm_identity(caps: Capabilities) -> Option<RunAs> {
    (cove_util::process::is_root() && caps.drop_privileges)
        .then(|| RunAs::for_supervisor(std::process::id()))
}
