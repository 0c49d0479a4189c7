//! Relaying one CLI connection to one agent stream through the supervisor.
//!
//! Only one client may be connected to QEMU's agent socket, and that client is the supervisor's
//! [`AgentLink`]. The CLI connects to the supervisor's control socket instead; after the control
//! protocol's preamble, the connection carries cove-proto frames for exactly one stream: the
//! CLI's [`RemoteStream::open`] sends the Open, [`relay`] opens the same request on the agent and
//! bridges both ways. Credit is end-to-end: the relay takes agent bytes only as fast as the CLI
//! grants credit, so a slow CLI slows the guest process, never the supervisor's memory.

use std::sync::Arc;
use std::time::Duration;

use cove_proto::{ErrorKind, ErrorMsg, OpenRequest, StreamMsg};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::link::{AgentLink, open_on};
use crate::mux::{self, LinkState, Tasks};
use crate::stream::{Stream, StreamEvent, StreamReceiver, StreamSender};

/// How a relayed stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutcome {
    /// The agent finished the stream and the CLI got everything.
    Completed,
    /// The CLI went away or aborted; the agent stream was reset (its process killed).
    ClientGone,
}

/// How a link failure reaches the CLI through the relay: as a typed remote error.
fn to_error_msg(e: &LinkError) -> ErrorMsg {
    match e {
        LinkError::Remote(m) => m.clone(),
        LinkError::NotReady
        | LinkError::Timeout { .. }
        | LinkError::Stalled { .. }
        | LinkError::AgentUnresponsive { .. }
        | LinkError::SessionReset { .. }
        | LinkError::Disconnected { .. }
        | LinkError::HandshakeTimeout { .. } => {
            ErrorMsg::new(ErrorKind::Unavailable, e.to_string())
        }
        other => ErrorMsg::new(ErrorKind::Internal, other.to_string()),
    }
}

/// Supervisor side: serves one stream for the CLI connected on `client`. Waits at most
/// `accept_timeout` for the CLI's Open. Returns when the stream is over.
///
/// `client` is usually the accepted `tokio::net::UnixStream`; any byte stream works, e.g. a
/// `BufReader` that still holds bytes read past the control preamble.
pub async fn relay<S>(
    client: S,
    link: &AgentLink,
    accept_timeout: Duration,
) -> Result<RelayOutcome, LinkError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(client);
    let (acc_tx, mut acc_rx) = mpsc::unbounded_channel();
    let (shared, tasks) = mux::spawn(r, w, false, Some(acc_tx));
    let _tasks = Tasks(tasks);
    let accepted = tokio::time::timeout(accept_timeout, acc_rx.recv()).await;
    let (req, cstream) = match accepted {
        Ok(Some(x)) => x,
        Ok(None) => return Err(shared.dead_error()),
        Err(_) => {
            return Err(LinkError::Timeout {
                what: "the client's open request",
                waited: accept_timeout,
            });
        }
    };
    let outcome = match link.open_stream(req).await {
        Err(e) => {
            let _ = cstream.send_msg(&StreamMsg::Error(to_error_msg(&e))).await;
            let _ = cstream.sender().close().await;
            Err(e)
        }
        Ok(astream) => {
            cstream
                .send_msg(&StreamMsg::Started { pid: astream.pid() })
                .await?;
            let (atx, arx) = astream.split();
            let (ctx, crx) = cstream.split();
            tokio::select! {
                r = pump_down(arx, ctx) => r.map(|_| RelayOutcome::Completed),
                r = pump_up(crx, atx) => r,
            }
        }
    };
    // Let the writer deliver the last frames: wait (bounded) until the client hangs up.
    let mut status = shared.status.subscribe();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| matches!(s, LinkState::Closed(_))),
    )
    .await;
    outcome
}

/// Agent -> CLI.
async fn pump_down(mut from: StreamReceiver, to: StreamSender) -> Result<(), LinkError> {
    loop {
        match from.recv().await {
            Ok(StreamEvent::Data(ch, b)) => to.send_data(ch, &b).await?,
            Ok(StreamEvent::Eof(ch)) => to.send_eof(ch).await?,
            Ok(StreamEvent::Msg(m)) => to.send_msg(&m).await?,
            Ok(StreamEvent::Closed) => return to.close().await,
            Err(e) => {
                let _ = to.send_msg(&StreamMsg::Error(to_error_msg(&e))).await;
                let _ = to.close().await;
                return Err(e);
            }
        }
    }
}

/// CLI -> agent. Never returns Ok while the stream runs: the CLI does not close streams, it only
/// sends data, messages and EOF, or goes away.
async fn pump_up(mut from: StreamReceiver, to: StreamSender) -> Result<RelayOutcome, LinkError> {
    loop {
        let sent = match from.recv().await {
            Ok(StreamEvent::Data(ch, b)) => to.send_data(ch, &b).await,
            Ok(StreamEvent::Eof(ch)) => to.send_eof(ch).await,
            Ok(StreamEvent::Msg(m)) => to.send_msg(&m).await,
            Ok(StreamEvent::Closed) | Err(_) => {
                let _ = to.reset("the cove client went away").await;
                return Ok(RelayOutcome::ClientGone);
            }
        };
        if let Err(e) = sent {
            // The agent side failed; pump_down reports it. Keep the CLI's frames flowing nowhere.
            std::future::pending::<()>().await;
            return Err(e);
        }
    }
}

/// CLI side of a relayed stream.
pub struct RemoteStream;

impl RemoteStream {
    /// Opens `req` over `conn` (a supervisor connection whose control preamble is done) and waits
    /// up to `timeout` for the agent to accept it. The returned [`Stream`] owns the connection.
    pub async fn open<S>(conn: S, req: OpenRequest, timeout: Duration) -> Result<Stream, LinkError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(conn);
        let (shared, tasks) = mux::spawn(r, w, false, None);
        open_on(&shared, &req, timeout, Some(Arc::new(Tasks(tasks)))).await
    }
}
