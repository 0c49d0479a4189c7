use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cove_proto::{DecodeError, ErrorMsg};

/// Everything that can go wrong between the host and the agent. Cloneable so that one link
/// failure can be delivered to every stream it breaks.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The unix socket could not be reached.
    #[error("cannot connect to the agent socket {}: {source}; is the VM (and its supervisor) running?", path.display())]
    Connect {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// No Hello from the agent in time.
    #[error("the guest agent did not answer within {waited:?}{}; check the console log (`cove console`) for cove-agent's `ready on` line, and that the kernel has CONFIG_VIRTIO_CONSOLE", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    HandshakeTimeout {
        waited: Duration,
        detail: Option<String>,
    },
    /// The peer sent bytes that are not cove-proto frames.
    #[error("the peer sent {skipped} bytes that are not cove-proto frames{}; is this socket really the cove agent port?", last.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Garbage {
        skipped: u64,
        last: Option<DecodeError>,
    },
    /// The agent speaks another protocol version.
    #[error(
        "the agent speaks protocol {agent}, this cove speaks {ours}; rebuild the image so it carries a matching cove-agent"
    )]
    Incompatible { agent: u32, ours: u32 },
    /// The agent stopped answering pings.
    #[error(
        "the guest agent stopped answering for {waited:?}; the guest may be hung or overloaded (see `cove why`)"
    )]
    AgentUnresponsive { waited: Duration },
    /// A new session started (agent or host restart, or a resync) and took the stream with it.
    #[error("the agent session was reset ({reason}); the operation was interrupted, retry it")]
    SessionReset { reason: String },
    /// The connection itself is gone.
    #[error(
        "the connection to the agent closed ({reason}); the VM or its supervisor may have stopped"
    )]
    Disconnected { reason: String },
    /// The handshake has not completed yet.
    #[error("the guest agent is not connected yet; wait for the VM to finish booting (wait_ready)")]
    NotReady,
    /// A request got no answer in time.
    #[error(
        "no answer from the guest agent to {what} within {waited:?}; the guest may be overloaded or the agent hung"
    )]
    Timeout {
        what: &'static str,
        waited: Duration,
    },
    /// A stream went silent mid-way (the agent answers pings but this operation stopped).
    #[error(
        "the guest stalled: no {what} for {waited:?}; the guest may be hung, overloaded or hostile (see `cove why` and `cove console`)"
    )]
    Stalled {
        what: &'static str,
        waited: Duration,
    },
    /// The agent reported an error for this operation.
    #[error("guest: {}", cove_untrusted::terminal(&.0.to_string()))]
    Remote(ErrorMsg),
    /// The peer aborted the stream.
    #[error(
        "the stream was aborted by the other side: {}",
        cove_untrusted::terminal_line(reason)
    )]
    Reset { reason: String },
    /// The peer broke the protocol (unexpected message, credit overrun).
    #[error("protocol violation: {0}; this is a bug in cove or cove-agent, please report it")]
    Protocol(String),
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Local {
        what: String,
        source: Arc<std::io::Error>,
    },
}

impl LinkError {
    pub(crate) fn local(what: impl Into<String>, e: std::io::Error) -> Self {
        LinkError::Local {
            what: what.into(),
            source: Arc::new(e),
        }
    }
}
