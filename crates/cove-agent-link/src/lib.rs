//! Host side of the cove agent protocol.
//!
//! * [`AgentLink`]: the supervisor's single connection to QEMU's agent chardev socket:
//!   handshake with timeout, multiplexed streams with flow control, resync when the agent
//!   restarts, keepalive that turns a hung agent into [`LinkError::AgentUnresponsive`].
//! * [`relay`] / [`RemoteStream`]: the supervisor bridges one CLI connection to one agent stream;
//!   the CLI gets the same [`Stream`] type back.
//! * [`exec`], [`exec_tty`], [`copy_in`], [`copy_out`], [`ps`], [`stat`], [`shutdown`]: what
//!   `cove exec/shell/cp/ps` run over any [`StreamOpener`].
//!
//! # Supervisor
//!
//! ```no_run
//! # async fn sup(chardev: &std::path::Path, control: tokio::net::UnixListener) -> Result<(), cove_agent_link::LinkError> {
//! use std::{sync::Arc, time::Duration};
//! use cove_agent_link::{AgentLink, LinkConfig, relay};
//! // QEMU: -chardev socket,id=agent,path=CHARDEV,server=on,wait=off
//! //       -device virtserialport,chardev=agent,name=org.cove.agent
//! let sock = tokio::net::UnixStream::connect(chardev).await.expect("QEMU is up");
//! let link = Arc::new(AgentLink::from_stream(sock, LinkConfig::default()));
//! let info = link.wait_ready(Duration::from_secs(60)).await?; // the guest boots meanwhile
//! println!("agent {}", info.version);
//! loop {
//!     let (conn, _) = control.accept().await.expect("accept");
//!     // ... read the control preamble that says "agent stream" ...
//!     let link = link.clone();
//!     tokio::spawn(async move { relay(conn, &link, Duration::from_secs(10)).await });
//! }
//! # }
//! ```
//!
//! # CLI
//!
//! ```no_run
//! # async fn cli(control: std::path::PathBuf) -> Result<(), cove_agent_link::LinkError> {
//! use std::time::Duration;
//! use cove_agent_link::*;
//! let opener = FnOpener(move |req: OpenRequest| {
//!     let control = control.clone();
//!     async move {
//!         let conn = tokio::net::UnixStream::connect(&control).await.map_err(|e| {
//!             LinkError::Connect { path: control.clone(), source: std::sync::Arc::new(e) }
//!         })?;
//!         // ... write the control preamble that asks for an agent stream ...
//!         RemoteStream::open(conn, req, Duration::from_secs(10)).await
//!     }
//! });
//! let req = ExecRequest { argv: vec!["uname".into(), "-a".into()], ..Default::default() };
//! let status = exec(&opener, req, ExecIo::process_stdio()).await?;
//! std::process::exit(status.shell_code());
//! # }
//! ```

mod copy;
mod error;
mod link;
mod mux;
mod ops;
mod relay;
mod stream;
mod trace;
mod tty;

pub use copy::{Progress, copy_in, copy_out};
pub use cove_proto::{
    ExecRequest, ExitStatus, FileMeta, LddEntry, LddReport, MissingLibrary, OpenRequest, ProcInfo,
    StreamMsg, TraceEvent, TraceRequest, TraceSummary, TtySize,
};
pub use error::LinkError;
pub use link::{AgentLink, LinkConfig};
pub use mux::{AgentInfo, LinkState, LinkStats};
pub use ops::{
    ExecIo, FnOpener, Input, StreamOpener, exec, fixup, forward_signals, move_nics, ps, shutdown,
    spawn_stdin_reader, stat,
};
pub use relay::{RelayOutcome, RemoteStream, relay};
pub use stream::{Stream, StreamEvent, StreamReceiver, StreamSender, set_stall_timeout};
pub use trace::{TraceIo, TraceOutcome, ldd, trace};
pub use tty::{RawModeGuard, exec_tty, terminal_size};
