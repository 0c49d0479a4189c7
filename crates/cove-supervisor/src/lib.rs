//! A VM's life: the CLI-side operations ([`lifecycle`]) and the per-VM
//! supervisor process they start ([`supervisor`]).

pub mod boot_image;
pub mod data_disk;
pub mod console_log;
mod error;
pub mod lifecycle;
pub mod liveness;
pub mod supervisor;

pub use error::LifecycleError;
