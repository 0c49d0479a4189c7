//! The CLI side of a VM's life: create, start (spawn its supervisor), stop,
//! kill, delete, reconfigure, and the reconcile that makes every read true.
//!
//! One module per role: [`create`] (and `set`), [`reconcile`] (every read; `list`, `show`,
//! adoption), [`start`], [`stop`] (and `kill`), [`delete`]. They reach a supervisor only through
//! [`cove_api::Client`].

mod create;
mod delete;
mod reconcile;
mod start;
mod stop;

pub(crate) use create::tempfile_dir;
pub use create::{CreateOptions, create, set};
pub use delete::{delete, remove_unused_disk};
pub use reconcile::{list, reconcile, show};
pub use start::{LOCK_FD, StartOptions, Started, claim_start, start, wait_ready};
pub(crate) use stop::control_call;
pub use stop::{StopOutcome, kill, stop};

/// The hidden subcommand that turns the `cove` binary into a supervisor.
pub const SUPERVISE_VERB: &str = "__supervise";
