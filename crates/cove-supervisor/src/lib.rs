//! A VM's life: the CLI-side operations ([`lifecycle`]) and the per-VM
//! supervisor process they start ([`supervisor`]).

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
