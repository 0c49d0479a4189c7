//! The one place that maps a recorded [`BackendKind`] to its implementation:
//! everything else in cove holds a `dyn Backend`.

use cove_backend::{Backend, BackendError, BackendKind};

/// The backend that runs VMs of `kind`.
pub fn for_kind(kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Qemu => Ok(Box::new(cove_qemu::QemuBackend)),
        BackendKind::Firecracker => Err(BackendError::Unsupported {
            backend: "firecracker",
            what: "run VMs in this build of cove".into(),
            hint: "use the qemu backend (the default)".into(),
        }),
    }
}
