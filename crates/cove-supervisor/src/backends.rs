//! The one place that maps a recorded [`BackendKind`] to its implementation:
//! everything else in cove holds a `dyn Backend`.

use cove_backend::{Backend, BackendError, BackendKind};

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
