//! Guest-supplied data made safe on the host: one definition each, shared by every crate that
//! shows or stores what a guest sent.
//!
//! * [`text`]: guest text for a terminal. Control characters and escape sequences are made
//!   visible (`\x1b[2J`), never passed through and never silently dropped.
//! * [`mode`]: the permission bits a file copied out of a guest keeps on the host.
//! * [`name`]: entry names inside a copied tree that must stay inside the destination.

pub mod mode;
pub mod name;
pub mod text;

pub use mode::{STRIPPED_MODE_BITS, host_mode};
pub use name::{UnsafeName, inside};
pub use text::{terminal, terminal_bytes, terminal_line};
