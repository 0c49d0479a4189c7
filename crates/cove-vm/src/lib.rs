//! A VM's life on the host, in two roles: the operations the CLI runs ([`lifecycle`]:
//! create, start, stop, delete, and the reconciliation that keeps every read true; with
//! [`snapshot`] and [`up_snapshot`]) and the per-VM supervisor process they start
//! ([`supervisor`], with what it runs beside the VMM: [`passt`], [`ram`], the link-local
//! guard). Both manage the same things ([`data_disk`], [`backends`], [`boot_image`]).

pub mod backends;
pub mod boot_image;
pub mod console_log;
pub mod data_disk;
mod error;
mod guard;
pub mod lifecycle;
#[cfg(test)]
mod lifecycle_races;
pub mod liveness;
pub mod passt;
pub mod ram;
pub mod snapshot;
pub mod supervisor;
pub mod up_snapshot;

pub use error::{ControlOp, LifecycleError};
