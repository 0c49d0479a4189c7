//! Small host-side facts that several cove crates need, each defined once: the [`ByteSize`]
//! every size on the command line and in a spec file is parsed into, the one way to run an
//! external tool ([`tool`]), the one `PATH` look-up ([`path::which`]) and the one "does this
//! process still run" check ([`process::alive`]), the free-space reading ([`space::free_bytes`])
//! and the one cross-process file lock ([`lock`]).

pub mod lock;
pub mod path;
pub mod process;
pub mod size;
pub mod space;
pub mod sparse;
pub mod tool;

pub use size::{ByteSize, SizeError};
pub use tool::ToolError;
