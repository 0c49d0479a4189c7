//! Host side of the cove agent protocol.
//!
//! * [`AgentLink`]: the supervisor's single connection to QEMU's agent chardev socket:
//!   handshake with timeout, multiplexed streams with flow control, resync when the agent
//!   restarts, keepalive that turns a hung agent into [`LinkError::AgentUnresponsive`].
//! * [`relay`] / [`RemoteStream`]: the supervisor bridges one CLI connection to one agent stream;
//!   the CLI gets the same [`Stream`] type back.
//! * [`exec`], [`exec_tty`], [`copy_in`], [`copy_out`], [`ps`], [`stat`], [`shutdown`]: what
//!   `cove exec/shell/cp/ps` run over any [`StreamOpener`].

mod copy;
mod error;
mod link;
mod mux;
mod ops;
mod relay;
mod stream;
mod tty;

pub use copy::{Progress, copy_in, copy_out};
pub use cove_proto::{
    ExecRequest, ExitStatus, FileMeta, OpenRequest, ProcInfo, StreamMsg, TtySize,
};
pub use error::LinkError;
pub use link::{AgentLink, LinkConfig};
pub use mux::AgentInfo;
pub use ops::{
    ExecIo, FnOpener, Input, StreamOpener, exec, ps, shutdown, spawn_stdin_reader, stat,
};
pub use relay::{RelayOutcome, RemoteStream, relay};
pub use stream::{Stream, StreamEvent, StreamReceiver, StreamSender};
pub use tty::{RawModeGuard, exec_tty, terminal_size};
