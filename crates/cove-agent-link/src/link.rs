//! [`AgentLink`]: the supervisor's one connection to the agent (QEMU's chardev socket).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cove_proto::{FrameKind, OpenRequest, StreamMsg, to_payload};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::error::LinkError;
use crate::mux::{self, AgentInfo, LinkState, Shared, Tasks, encode};
use crate::stream::{Stream, StreamEvent};

/// Timings of a link. The defaults suit TCG guests; KVM guests answer far faster.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// How long an Open (or a ping) may wait for the agent's answer.
    pub op_timeout: Duration,
    /// Ping period while the session is up.
    pub keepalive: Duration,
    /// Silence after which the agent is declared unresponsive and a new session is started.
    pub dead_after: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            op_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(2),
            dead_after: Duration::from_secs(15),
        }
    }
}

/// The host's connection to one cove-agent. Cheap to share behind an `Arc`; dropping it closes
/// the connection (QEMU then accepts the next client, e.g. a restarted supervisor).
pub struct AgentLink {
    shared: Arc<Shared>,
    cfg: LinkConfig,
    _tasks: Arc<Tasks>,
}

impl AgentLink {
    /// Connects to the agent chardev socket at `path` (waiting for QEMU to create it) and
    /// completes the handshake, all within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<AgentLink, LinkError> {
        Self::connect_with(path, timeout, LinkConfig::default()).await
    }

    /// [`AgentLink::connect`] with explicit timings.
    pub async fn connect_with(
        path: &Path,
        timeout: Duration,
        cfg: LinkConfig,
    ) -> Result<AgentLink, LinkError> {
        let start = Instant::now();
        let sock = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && start.elapsed() < timeout =>
                {
                    // The socket appears when QEMU starts: poll for that condition.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(LinkError::Connect {
                        path: path.to_path_buf(),
                        source: Arc::new(e),
                    });
                }
            }
        };
        let link = Self::from_stream(sock, cfg);
        link.wait_ready(timeout.saturating_sub(start.elapsed()))
            .await?;
        Ok(link)
    }

    /// Starts a link over an already connected socket; the handshake runs in the background
    /// (see [`AgentLink::wait_ready`]). Use this when the guest may still be booting.
    pub fn from_stream(sock: UnixStream, cfg: LinkConfig) -> AgentLink {
        let (r, w) = sock.into_split();
        let (shared, mut tasks) = mux::spawn(r, w, true, None);
        tasks.push(tokio::spawn(mux::keepalive(
            shared.clone(),
            cfg.keepalive,
            cfg.dead_after,
        )));
        AgentLink {
            shared,
            cfg,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// Follows the link's state: log "agent restarted" / "agent unresponsive" or react to the
    /// connection closing (the VMM exited).
    pub fn state_changes(&self) -> tokio::sync::watch::Receiver<LinkState> {
        self.shared.status.subscribe()
    }

    /// Queue sizes and counters of the link (see [`LinkStats`]).
    pub fn stats(&self) -> crate::LinkStats {
        self.shared.stats()
    }

    /// Whether the session is up right now.
    pub fn ready(&self) -> bool {
        matches!(*self.shared.status.borrow(), LinkState::Ready(_))
    }

    /// Waits until the agent has answered the handshake. Errors at once if the connection is
    /// closed or the agent speaks another protocol; after `timeout` otherwise.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<AgentInfo, LinkError> {
        let mut rx = self.shared.status.subscribe();
        let res = tokio::time::timeout(timeout, async {
            loop {
                match rx.borrow_and_update().clone() {
                    LinkState::Ready(info) => return Ok(info),
                    LinkState::Closed(e) | LinkState::Failed(e) => return Err(e),
                    LinkState::Connecting => {}
                }
                if rx.changed().await.is_err() {
                    return Err(self.shared.dead_error());
                }
            }
        })
        .await;
        let st = self.shared.state();
        // A peer that sent plenty of bytes and never one frame is not an agent: say so rather
        // than "timeout" or "disconnected".
        if !matches!(res, Ok(Ok(_)))
            && st.frames_seen == 0
            && st.skipped > cove_proto::SYNC_PREAMBLE_LEN as u64
        {
            return Err(LinkError::Garbage {
                skipped: st.skipped,
                last: None,
            });
        }
        match res {
            Ok(r) => r,
            Err(_) => {
                let detail = match (st.frames_seen, st.skipped) {
                    (0, 0) => Some("nothing received from the guest".to_string()),
                    (0, n) => Some(format!("received {n} bytes but no valid frame")),
                    _ => None,
                };
                Err(LinkError::HandshakeTimeout {
                    waited: timeout,
                    detail,
                })
            }
        }
    }

    /// The agent's version and capabilities (from its latest Hello), if the session is up.
    pub fn info(&self) -> Option<AgentInfo> {
        match &*self.shared.status.borrow() {
            LinkState::Ready(i) => Some(i.clone()),
            _ => None,
        }
    }

    /// Round trip to the agent; fails after the op timeout instead of hanging.
    pub async fn ping(&self) -> Result<Duration, LinkError> {
        let nonce = cove_proto::fresh_nonce();
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state();
            if let Some(e) = &st.dead {
                return Err(e.clone());
            }
            if !st.session.as_ref().is_some_and(|s| s.synced()) {
                return Err(LinkError::NotReady);
            }
            st.pings.insert(nonce, tx);
        }
        let start = Instant::now();
        self.shared
            .send(encode(FrameKind::Ping, 0, 0, &nonce.to_le_bytes()))?;
        let res = tokio::time::timeout(self.cfg.op_timeout, rx).await;
        self.shared.state().pings.remove(&nonce);
        match res {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(_)) => Err(self.shared.dead_error()),
            Err(_) => Err(LinkError::Timeout {
                what: "ping",
                waited: self.cfg.op_timeout,
            }),
        }
    }

    /// Opens a stream and waits for the agent to accept it (its `Started`), bounded by the op
    /// timeout. A request the agent refuses comes back as [`LinkError::Remote`].
    pub async fn open_stream(&self, req: OpenRequest) -> Result<Stream, LinkError> {
        open_on(&self.shared, &req, self.cfg.op_timeout, None).await
    }
}

/// Opens a stream on any connection and waits for `Started`.
pub(crate) async fn open_on(
    shared: &Arc<Shared>,
    req: &OpenRequest,
    timeout: Duration,
    tasks: Option<Arc<Tasks>>,
) -> Result<Stream, LinkError> {
    let (id, rx, slot) = {
        let mut st = shared.state();
        let id = shared.alloc_id(&mut st)?;
        let (rx, slot) = shared.new_slot(&mut st, id);
        // Queued under the lock: an Open must never follow a session restart it predates.
        shared.send(encode(FrameKind::Open, 0, id, &to_payload(req)))?;
        (id, rx, slot)
    };
    let mut stream = Stream::new(shared.clone(), id, rx, slot, tasks);
    match tokio::time::timeout(timeout, stream.recv()).await {
        Ok(Ok(StreamEvent::Msg(StreamMsg::Started { pid }))) => {
            stream.set_pid(pid);
            Ok(stream)
        }
        Ok(Ok(StreamEvent::Msg(StreamMsg::Error(e)))) => Err(LinkError::Remote(e)),
        Ok(Ok(other)) => Err(LinkError::Protocol(format!(
            "expected Started, got {other:?}"
        ))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LinkError::Timeout {
            what: "opening a stream",
            waited: timeout,
        }),
    }
}
