//! cove's QEMU backend.
//!
//! - [`argv`]: [`Qemu`], the [`cove_backend::Backend`] that turns a
//!   [`cove_backend::VmSpec`] into a `qemu-system-x86_64` command line (`aarch64.rs`: the
//!   `qemu-system-aarch64 -M virt` piece of arm64 guests);
//! - [`qmp`]: [`QmpClient`], an async QMP client over the `qapi` crate;
//! - [`save`]: saving device state to a file and restoring it (snapshots);
//! - [`backend`]: [`QemuBackend`], QEMU behind `cove_backend::Backend`, and
//!   [`QemuControl`], its runtime control;
//! - [`disk`]: qcow2 overlays, imports and growth through `qemu-img`.
//!
//! This is the only crate that names QMP, `qemu-img` or a QEMU argument.
//!
//! Host probing (accelerator, TSC), process hygiene and socket waiting are
//! every backend's and live in `cove_backend`.

mod aarch64;
pub mod argv;
pub mod backend;
pub mod disk;
pub mod qmp;
pub mod save;

pub use argv::Qemu;
pub use backend::{EXTRA_ARGS_ENV, QemuBackend, QemuControl};
pub use qmp::{QmpClient, QmpError, RunState};
pub use save::SaveError;
