//! The async multiplexer under both [`crate::AgentLink`] (to the agent, with the Hello session)
//! and the relay connections between CLI and supervisor (no session: a fresh socket per stream).
//!
//! One reader task decodes frames and routes them; one writer task owns the socket's write half
//! and batches queued frames. Per-stream credit is a semaphore of bytes; received bytes are
//! acknowledged only when the consumer takes them from the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cove_proto::{
    Channel, DecodeError, Decoder, Frame, FrameKind, Hello, HelloAction, OpenRequest, RecvWindow,
    Role, SYNC_PREAMBLE_LEN, Session, StreamMsg, cost, encode_into, from_payload, to_payload,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::LinkError;
use crate::stream::{Event, Stream};

/// What the agent told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// cove-agent's version.
    pub version: String,
    pub protocol: u32,
    pub capabilities: Vec<String>,
}

/// Where a link stands; watch it with [`crate::AgentLink::state_changes`].
#[derive(Debug, Clone)]
pub enum LinkState {
    /// Waiting for the agent's Hello (guest booting, agent restarting, resynchronising).
    Connecting,
    /// Session up with this agent.
    Ready(AgentInfo),
    /// A definite failure (e.g. protocol mismatch); the link keeps listening and may recover.
    Failed(LinkError),
    /// The connection is gone for good; make a new link.
    Closed(LinkError),
}

pub(crate) struct SlotShared {
    pub credit: Semaphore,
    pub error: Mutex<Option<LinkError>>,
}

impl SlotShared {
    pub fn fail(&self, e: LinkError) {
        lock(&self.error).get_or_insert(e);
        self.credit.close();
    }
    pub fn failure(&self) -> LinkError {
        lock(&self.error).clone().unwrap_or(LinkError::Reset {
            reason: "stream closed".into(),
        })
    }
}

struct Slot {
    tx: mpsc::UnboundedSender<Event>,
    shared: Arc<SlotShared>,
    window: RecvWindow,
    /// Channels whose Eof was delivered. Eof frames cost no credit, so only the first per
    /// channel becomes an event: a peer repeating them cannot grow the stream's queue.
    eof_seen: u8,
}

pub(crate) struct State {
    pub session: Option<Session>,
    streams: HashMap<u32, Slot>,
    next_id: u32,
    pub pings: HashMap<u64, oneshot::Sender<()>>,
    pub dead: Option<LinkError>,
    pub last_rx: Instant,
    accept: Option<mpsc::UnboundedSender<(OpenRequest, Stream)>>,
    pub skipped: u64,
    pub frames_seen: u64,
    /// Warnings a peer can provoke, rate-limited so it cannot grow the supervisor's log.
    pub warn: WarnLimiter,
    /// When this side last wrote a sync preamble (see [`Shared::restart_locked`]).
    last_preamble: Option<Instant>,
}

/// Lets [`WarnLimiter::BURST`] warnings through per [`WarnLimiter::PERIOD`], then counts the
/// rest and says how many were suppressed when the next period opens.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    since: Instant,
    shown: u32,
    suppressed: u64,
}

impl WarnLimiter {
    const BURST: u32 = 10;
    const PERIOD: Duration = Duration::from_secs(60);

    fn new() -> Self {
        WarnLimiter {
            since: Instant::now(),
            shown: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; a `true` after suppressed warnings first logs how many there were.
    pub fn allow(&mut self) -> bool {
        if self.since.elapsed() >= Self::PERIOD {
            if self.suppressed > 0 {
                tracing::warn!(
                    "{} more agent-link warnings suppressed in the last {:?}",
                    self.suppressed,
                    Self::PERIOD
                );
            }
            *self = WarnLimiter::new();
        }
        if self.shown < Self::BURST {
            self.shown += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Warnings dropped so far in this period.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// A link's counters, for tests and `cove doctor`-style reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes queued for the peer and not yet written.
    pub queued_bytes: usize,
    /// Largest `queued_bytes` seen.
    pub queued_peak: usize,
    /// Streams open on the link.
    pub streams: usize,
    /// Warnings dropped by the rate limit in the current period.
    pub suppressed_warnings: u64,
    /// Bytes skipped as garbage by the decoder.
    pub skipped_bytes: u64,
}

pub(crate) struct Shared {
    /// Unbounded so that frames can be queued while the state lock is held: a session change
    /// and the frames it implies must reach the wire in that order. Memory stays bounded by
    /// flow control (data waits for the peer's credit before it is queued).
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued for the writer. Replies the peer provokes (Pong, Reset, Hello) are dropped
    /// above [`REPLY_QUEUE_LIMIT`]: a guest that floods pings without reading cannot grow it.
    queued: AtomicUsize,
    queued_peak: AtomicUsize,
    /// Bytes ever queued and ever written: a sync preamble still waits in the queue while
    /// `written < preamble_end`, and then a restart does not queue another one.
    enqueued_total: AtomicU64,
    written_total: AtomicU64,
    preamble_end: AtomicU64,
    st: Mutex<State>,
    pub status: watch::Sender<LinkState>,
}

/// See [`Shared::queued`]. With flow control this bounds what one link can queue for its peer:
/// this much of replies, Hellos and at most one sync preamble, plus the credit-bounded data of
/// the open streams (see `docs/ARCHITECTURE.md`, "agent link memory bound").
pub(crate) const REPLY_QUEUE_LIMIT: usize = 4 << 20;
/// A sync preamble is 64 KiB of zeros; a peer that provokes restarts in a loop gets at most one
/// per this period (and never a second while the first is still queued).
const PREAMBLE_PERIOD: Duration = Duration::from_secs(1);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn encode(kind: FrameKind, channel: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(cove_proto::HEADER_LEN + payload.len());
    // Callers never pass more than MAX_PAYLOAD (data is chunked, messages are small).
    let _ = encode_into(&mut v, kind, channel, stream, payload);
    v
}

/// Aborts the connection's tasks when the last owner goes away.
pub(crate) struct Tasks(pub Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    /// Queues bytes for the writer task (never blocks).
    pub fn send(&self, bytes: Vec<u8>) -> Result<(), LinkError> {
        // No state lock here: callers may hold it.
        let n = bytes.len();
        // Counted before the writer can see the bytes: counting after let the writer's
        // subtraction come first and wrap the counter (a transient "over the limit").
        let q = self.queued.fetch_add(n, Ordering::Relaxed) + n;
        self.queued_peak.fetch_max(q, Ordering::Relaxed);
        self.enqueued_total.fetch_add(n as u64, Ordering::Relaxed);
        self.out.send(bytes).map_err(|_| {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            LinkError::Disconnected {
                reason: "the connection's writer stopped".into(),
            }
        })
    }

    fn enqueue(&self, bytes: Vec<u8>) {
        let _ = self.send(bytes);
    }

    /// Whether the peer has left more than [`REPLY_QUEUE_LIMIT`] unread: frames it provoked
    /// (or that only serve it, like Hello retransmissions) are then dropped.
    pub fn over_limit(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > REPLY_QUEUE_LIMIT
    }

    pub fn stats(&self) -> LinkStats {
        let st = self.state();
        LinkStats {
            queued_bytes: self.queued.load(Ordering::Relaxed),
            queued_peak: self.queued_peak.load(Ordering::Relaxed),
            streams: st.streams.len(),
            suppressed_warnings: st.warn.suppressed(),
            skipped_bytes: st.skipped,
        }
    }

    pub fn dead_error(&self) -> LinkError {
        self.state()
            .dead
            .clone()
            .unwrap_or(LinkError::Disconnected {
                reason: "connection closed".into(),
            })
    }

    /// Fails every stream (their consumers see `e`).
    fn fail_all(st: &mut State, e: &LinkError) {
        for (_, slot) in st.streams.drain() {
            slot.shared.fail(e.clone());
            let _ = slot.tx.send(Event::Failed(e.clone()));
        }
    }

    /// Rule 1 of the session: reset and queue preamble + Hello, under the state lock so that no
    /// frame of the old session can be queued after them.
    pub fn restart_locked(&self, st: &mut State, why: &LinkError) {
        Self::fail_all(st, why);
        let Some(session) = st.session.as_mut() else {
            return;
        };
        let hello = session.restart(cove_proto::fresh_nonce());
        self.status.send_replace(LinkState::Connecting);
        if self.over_limit() {
            // The peer is not reading: the keepalive retransmits the Hello once it does.
            if st.warn.allow() {
                tracing::warn!("agent is not reading; session restart deferred");
            }
            return;
        }
        let preamble_queued =
            self.written_total.load(Ordering::Relaxed) < self.preamble_end.load(Ordering::Relaxed);
        let recent = st
            .last_preamble
            .is_some_and(|t| t.elapsed() < PREAMBLE_PERIOD);
        let mut bytes = Vec::new();
        if !preamble_queued && !recent {
            bytes.resize(SYNC_PREAMBLE_LEN, 0);
            st.last_preamble = Some(Instant::now());
        }
        let preamble = bytes.len() as u64;
        let _ = encode_into(&mut bytes, FrameKind::Hello, 0, 0, &to_payload(&hello));
        let start = self.enqueued_total.load(Ordering::Relaxed);
        self.enqueue(bytes);
        if preamble > 0 {
            self.preamble_end.store(start + preamble, Ordering::Relaxed);
        }
    }

    pub fn close(&self, e: LinkError) {
        let mut st = self.state();
        st.dead.get_or_insert(e.clone());
        Self::fail_all(&mut st, &e);
        st.accept = None;
        self.status.send_replace(LinkState::Closed(e));
    }

    /// Registers a stream and returns its receiving end.
    pub fn new_slot(
        &self,
        st: &mut State,
        id: u32,
    ) -> (mpsc::UnboundedReceiver<Event>, Arc<SlotShared>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(SlotShared {
            credit: Semaphore::new(cove_proto::INITIAL_WINDOW as usize),
            error: Mutex::new(None),
        });
        st.streams.insert(
            id,
            Slot {
                tx,
                shared: shared.clone(),
                window: RecvWindow::default(),
                eof_seen: 0,
            },
        );
        (rx, shared)
    }

    pub fn alloc_id(&self, st: &mut State) -> Result<u32, LinkError> {
        if let Some(e) = &st.dead {
            return Err(e.clone());
        }
        if st.session.as_ref().is_some_and(|s| !s.synced()) {
            return Err(LinkError::NotReady);
        }
        let id = st.next_id;
        st.next_id = st.next_id.wrapping_add(1).max(1);
        Ok(id)
    }

    pub fn remove_slot(&self, id: u32) {
        self.state().streams.remove(&id);
    }

    /// The consumer took a credited frame: maybe acknowledge it.
    pub fn consumed(&self, id: u32, c: u32) -> Option<Vec<u8>> {
        let mut st = self.state();
        let inc = st.streams.get_mut(&id)?.window.on_consume(c)?;
        Some(encode(FrameKind::Window, 0, id, &inc.to_le_bytes()))
    }

    fn on_decode_error(self: &Arc<Self>, e: DecodeError) {
        let mut st = self.state();
        let synced = st.session.as_ref().map(|s| s.synced());
        match synced {
            None => {
                drop(st);
                self.close(LinkError::Garbage {
                    skipped: 0,
                    last: Some(e),
                });
            }
            Some(true) => {
                if st.warn.allow() {
                    tracing::warn!("agent link desynchronised: {e}; resynchronising");
                }
                self.restart_locked(
                    &mut st,
                    &LinkError::SessionReset {
                        reason: e.to_string(),
                    },
                )
            }
            Some(false) => {}
        }
    }

    /// Handles one frame; replies are queued before the state lock is released (see `out`).
    fn on_frame(self: &Arc<Self>, f: Frame) {
        let mut st = self.state();
        let replies = self.on_frame_locked(&mut st, f);
        if !replies.is_empty() && self.over_limit() {
            if st.warn.allow() {
                tracing::warn!(
                    "peer is not reading its replies; dropping {} of them",
                    replies.len()
                );
            }
            return;
        }
        for o in replies {
            self.enqueue(o);
        }
    }

    fn on_frame_locked(self: &Arc<Self>, st: &mut State, f: Frame) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        st.last_rx = Instant::now();
        st.frames_seen += 1;
        if f.kind == FrameKind::Hello {
            self.on_hello(st, &f.payload, &mut out);
            return out;
        }
        if st.session.as_ref().is_some_and(|s| !s.synced()) {
            return out; // a previous session's frame
        }
        let id = f.stream;
        match f.kind {
            FrameKind::Ping => out.push(encode(FrameKind::Pong, 0, 0, &f.payload)),
            FrameKind::Pong => {
                if let Ok(b) = <[u8; 8]>::try_from(&f.payload[..])
                    && let Some(tx) = st.pings.remove(&u64::from_le_bytes(b))
                {
                    let _ = tx.send(());
                }
            }
            FrameKind::Open => {
                let req = from_payload::<OpenRequest>("open", &f.payload);
                match (st.accept.clone(), req) {
                    (Some(acc), Ok(req)) if !st.streams.contains_key(&id) => {
                        let (rx, shared) = self.new_slot(st, id);
                        let stream = Stream::new(self.clone(), id, rx, shared, None);
                        let _ = acc.send((req, stream));
                    }
                    (_, Err(e)) => {
                        out.push(encode(FrameKind::Reset, 0, id, e.to_string().as_bytes()))
                    }
                    _ => out.push(encode(
                        FrameKind::Reset,
                        0,
                        id,
                        b"this side does not accept streams",
                    )),
                }
            }
            FrameKind::Data | FrameKind::Msg => {
                let Some(slot) = st.streams.get_mut(&id) else {
                    return out;
                };
                let c = cost(f.payload.len());
                let ev = if !slot.window.on_receive(c) {
                    Err(LinkError::Protocol(format!(
                        "peer overran the flow-control window on stream {id}"
                    )))
                } else if f.kind == FrameKind::Data {
                    Ok(Event::Data(
                        Channel::from_u8(f.channel).unwrap_or(Channel::Data),
                        f.payload,
                        c,
                    ))
                } else {
                    from_payload::<StreamMsg>("stream", &f.payload)
                        .map(|m| Event::Msg(m, c))
                        .map_err(|e| LinkError::Protocol(e.to_string()))
                };
                match ev {
                    Ok(ev) => {
                        let _ = slot.tx.send(ev);
                    }
                    Err(e) => {
                        if let Some(slot) = st.streams.remove(&id) {
                            slot.shared.fail(e.clone());
                            let _ = slot.tx.send(Event::Failed(e.clone()));
                        }
                        out.push(encode(FrameKind::Reset, 0, id, e.to_string().as_bytes()));
                    }
                }
            }
            FrameKind::Eof => {
                if let (Some(slot), Some(ch)) =
                    (st.streams.get_mut(&id), Channel::from_u8(f.channel))
                {
                    let bit = 1u8 << (ch as u8);
                    if slot.eof_seen & bit == 0 {
                        slot.eof_seen |= bit;
                        let _ = slot.tx.send(Event::Eof(ch));
                    }
                }
            }
            FrameKind::Window => {
                if let (Some(slot), Ok(b)) =
                    (st.streams.get(&id), <[u8; 4]>::try_from(&f.payload[..]))
                {
                    let inc = u32::from_le_bytes(b) as usize;
                    let credit = &slot.shared.credit;
                    // The peer only returns credit we spent, so ours never exceeds one window;
                    // more is a broken or hostile peer (and unchecked it would overflow the
                    // semaphore's maximum, which panics the reader).
                    if credit.available_permits() + inc > cove_proto::INITIAL_WINDOW as usize {
                        let e = LinkError::Protocol(format!(
                            "peer granted more credit than the {}-byte window on stream {id}",
                            cove_proto::INITIAL_WINDOW
                        ));
                        if let Some(slot) = st.streams.remove(&id) {
                            slot.shared.fail(e.clone());
                            let _ = slot.tx.send(Event::Failed(e.clone()));
                        }
                        out.push(encode(FrameKind::Reset, 0, id, e.to_string().as_bytes()));
                    } else {
                        credit.add_permits(inc);
                    }
                }
            }
            FrameKind::Close => {
                if let Some(slot) = st.streams.remove(&id) {
                    slot.shared.fail(LinkError::Reset {
                        reason: "stream closed by the peer".into(),
                    });
                    let _ = slot.tx.send(Event::Closed);
                }
            }
            FrameKind::Reset => {
                if let Some(slot) = st.streams.remove(&id) {
                    let e = LinkError::Reset {
                        reason: String::from_utf8_lossy(&f.payload).into_owned(),
                    };
                    slot.shared.fail(e.clone());
                    let _ = slot.tx.send(Event::Failed(e));
                }
            }
            FrameKind::Hello => {}
        }
        out
    }

    fn on_hello(&self, st: &mut State, payload: &[u8], out: &mut Vec<Vec<u8>>) {
        let Ok(hello) = from_payload::<Hello>("hello", payload) else {
            return;
        };
        let Some(session) = st.session.as_mut() else {
            return;
        };
        let info = AgentInfo {
            // Shown in `cove show` and logged: guest text, sanitized and kept short.
            version: cove_untrusted::terminal_line(&hello.version)
                .chars()
                .take(80)
                .collect(),
            protocol: hello.protocol,
            capabilities: hello.capabilities.clone(),
        };
        match session.on_hello(&hello) {
            HelloAction::ResetAndReply(reply) => {
                Self::fail_all(
                    st,
                    &LinkError::SessionReset {
                        reason: "the agent restarted".into(),
                    },
                );
                out.push(encode(FrameKind::Hello, 0, 0, &to_payload(&reply)));
                if st.warn.allow() {
                    tracing::info!(agent = %info.version, "agent session (re)started");
                }
                self.status.send_replace(LinkState::Ready(info));
            }
            HelloAction::Reply(reply) => {
                out.push(encode(FrameKind::Hello, 0, 0, &to_payload(&reply)))
            }
            HelloAction::Synced => {
                self.status.send_replace(LinkState::Ready(info));
            }
            HelloAction::Ignore => {}
            HelloAction::Incompatible { peer_protocol } => {
                self.status
                    .send_replace(LinkState::Failed(LinkError::Incompatible {
                        agent: peer_protocol,
                        ours: cove_proto::PROTOCOL_VERSION,
                    }));
            }
        }
    }
}

/// Starts the reader and writer tasks over a byte stream.
pub(crate) fn spawn<R, W>(
    r: R,
    w: W,
    handshake: bool,
    accept: Option<mpsc::UnboundedSender<(OpenRequest, Stream)>>,
) -> (Arc<Shared>, Vec<JoinHandle<()>>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let session = handshake.then(|| Session::new(Role::Host, env!("CARGO_PKG_VERSION"), vec![]));
    let shared = Arc::new(Shared {
        out: out_tx,
        queued: AtomicUsize::new(0),
        queued_peak: AtomicUsize::new(0),
        enqueued_total: AtomicU64::new(0),
        written_total: AtomicU64::new(0),
        preamble_end: AtomicU64::new(0),
        st: Mutex::new(State {
            session,
            streams: HashMap::new(),
            next_id: 1,
            pings: HashMap::new(),
            dead: None,
            last_rx: Instant::now(),
            accept,
            skipped: 0,
            frames_seen: 0,
            warn: WarnLimiter::new(),
            last_preamble: None,
        }),
        status: watch::channel(if handshake {
            LinkState::Connecting
        } else {
            LinkState::Ready(AgentInfo {
                version: String::new(),
                protocol: cove_proto::PROTOCOL_VERSION,
                capabilities: vec![],
            })
        })
        .0,
    });
    if handshake {
        let mut st = shared.state();
        shared.restart_locked(&mut st, &LinkError::NotReady);
    }
    let wt = tokio::spawn(writer(w, out_rx, shared.clone()));
    let rt = tokio::spawn(reader(r, shared.clone()));
    (shared, vec![wt, rt])
}

async fn writer<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(mut buf) = rx.recv().await {
        // Batch whatever else is queued into one write: fewer syscalls for small frames.
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        let res = w.write_all(&buf).await;
        shared.queued.fetch_sub(buf.len(), Ordering::Relaxed);
        shared
            .written_total
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Err(e) = res {
            shared.close(LinkError::Disconnected {
                reason: format!("write failed: {e}"),
            });
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn reader<R: AsyncRead + Unpin>(mut r: R, shared: Arc<Shared>) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => {
                return shared.close(LinkError::Disconnected {
                    reason: "the peer closed the socket".into(),
                });
            }
            Ok(n) => n,
            Err(e) => {
                return shared.close(LinkError::Disconnected {
                    reason: format!("read failed: {e}"),
                });
            }
        };
        let mut off = 0;
        while off < n {
            off += dec.push(&buf[off..n]);
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => shared.on_frame(f),
                    Ok(None) => break,
                    Err(e) => shared.on_decode_error(e),
                }
                if shared.state().dead.is_some() {
                    return;
                }
            }
        }
        shared.state().skipped = dec.skipped_bytes();
    }
}

/// Link upkeep: retransmits Hello while unsynced and pings while synced; an agent that answers
/// nothing for `dead_after` is declared unresponsive and a new session is started.
///
/// Silence is counted in time this side was awake and waiting for an answer, not in wall time:
/// it starts with a ping the agent has not answered (any frame from it is an answer), and a wake
/// later than asked counts only as the nap it asked for. A host that could not run (a loaded
/// machine, a thread of this runtime blocked for a while) neither pinged nor read, so its own
/// stall is never blamed on the agent: a copy under load 12+ was cut with `AgentUnresponsive`
/// right after the host's runtime had been blocked, while the agent had nothing to answer.
pub(crate) async fn keepalive(shared: Arc<Shared>, interval: Duration, dead_after: Duration) {
    let tick = Duration::from_millis(250).min(interval);
    let mut last_ping = Instant::now();
    let mut last_hello = Instant::now();
    let mut nap = tick;
    let mut last_wake = Instant::now();
    // Frames seen at the last wake, whether a ping is waiting for its answer, and for how long.
    let mut seen = 0u64;
    let mut asking = false;
    let mut silent = Duration::ZERO;
    loop {
        tokio::time::sleep(nap).await;
        let woke = Instant::now();
        let awake = woke.duration_since(last_wake).min(nap + tick);
        last_wake = woke;
        // Fine-grained while a handshake is pending; once synced, wake only when the next ping
        // is due: an idle link then costs the host one wakeup per ping instead of four a second.
        nap = tick;
        let mut st = shared.state();
        if st.dead.is_some() {
            return;
        }
        let Some(session) = st.session.as_ref() else {
            return;
        };
        if st.frames_seen != seen {
            seen = st.frames_seen;
            asking = false;
            silent = Duration::ZERO;
        } else if asking {
            silent += awake;
        }
        // Frames are queued under the state lock, like every session-related frame.
        if !session.synced() {
            if last_hello.elapsed() >= Duration::from_millis(500) && !shared.over_limit() {
                last_hello = Instant::now();
                let _ = shared.send(encode(
                    FrameKind::Hello,
                    0,
                    0,
                    &to_payload(&session.retransmit()),
                ));
            }
        } else if silent > dead_after {
            if st.warn.allow() {
                tracing::warn!(
                    "agent silent for {silent:?} of waiting for its answer; starting a new session"
                );
            }
            st.last_rx = Instant::now();
            (asking, silent) = (false, Duration::ZERO);
            shared.restart_locked(
                &mut st,
                &LinkError::AgentUnresponsive { waited: dead_after },
            );
        } else if last_ping.elapsed() >= interval && !shared.over_limit() {
            last_ping = Instant::now();
            let _ = shared.send(encode(FrameKind::Ping, 0, 0, &0u64.to_le_bytes()));
            asking = true;
            nap = interval;
        } else {
            nap = interval.saturating_sub(last_ping.elapsed()).max(tick);
        }
    }
}
