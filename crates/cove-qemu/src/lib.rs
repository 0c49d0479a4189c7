//! cove's QEMU backend.
//!
//! - [`argv`]: [`Qemu`], the [`cove_backend::Backend`] that turns a
//!   [`cove_backend::VmSpec`] into a `qemu-system-x86_64` command line;
//! - [`qmp`]: [`QmpClient`], an async QMP client over the `qapi` crate;
//! - [`save`]: saving device state to a file and restoring it (snapshots);
//! - [`accel`]: whether KVM really runs vCPUs here, else TCG;
//! - [`tsc`]: the host TSC frequency microvm guests need on their command line;
//! - [`process`]: process-group and parent-death hygiene for the VMM child;
//! - [`sockets`]: waiting for the VMM's listening sockets.

pub mod accel;
pub mod argv;
mod cache;
pub mod process;
pub mod qmp;
pub mod save;
pub mod sockets;
pub mod tsc;

pub use accel::{AccelChoice, PROBE_ARG};
pub use argv::Qemu;
pub use qmp::{QmpClient, QmpError, RunState};
pub use save::SaveError;
