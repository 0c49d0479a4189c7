//! cove-diagnose: name why a microVM fails.
//!
//! - [`kernel`]: read a kernel's configuration (embedded IKCONFIG or config file), check it
//!   against requirement profiles, map syscalls to options, merge config fragments.
//! - [`doctor`]: host checks.
//! - [`why`]: console-log analysis of a failed VM.

pub mod doctor;
pub mod kernel;
pub mod why;
