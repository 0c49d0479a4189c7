//! The agent's side of the multiplexer: one reader (the main thread), one writer shared by all
//! handler threads under a mutex, and a thread per stream (a reused one, see [`crate::pool`]).
//! Plain threads instead of an async runtime: the agent handles a few streams at a time and
//! must stay a small static binary.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

use cove_proto::{
    Channel, Frame, FrameKind, HelloAction, MAX_PAYLOAD, OpenRequest, RecvWindow, Role,
    SYNC_PREAMBLE_LEN, Session, StreamMsg, cost, from_payload, to_payload,
};

use crate::log;

/// Capabilities this agent announces in its Hello.
pub const CAPABILITIES: &[&str] = &[
    "exec", "tty", "file_get", "file_put", "stat", "ps", "shutdown", "trace", "ldd",
];

/// What a handler thread receives for its stream.
#[derive(Debug)]
pub enum Inbound {
    Data(Vec<u8>, u32),
    Eof(Channel),
    Msg(StreamMsg, u32),
    /// The host aborted the stream, or the session was reset.
    Reset,
    /// Internal: the exec'd child ended (wakes the exec input loop).
    ChildExited,
}

/// The stream is gone (reset by the host or a new session); the handler should stop quietly.
#[derive(Debug)]
pub struct Cancelled;

/// State shared between the reader thread and a stream's handler threads.
pub struct SlotShared {
    id: u32,
    credit: Mutex<u32>,
    cond: Condvar,
    cancelled: AtomicBool,
    window: Mutex<RecvWindow>,
    /// Process group to SIGKILL when the stream is reset (0 = none).
    pub pgid: AtomicI32,
}

impl SlotShared {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cond.notify_all();
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

struct Slot {
    shared: Arc<SlotShared>,
    tx: mpsc::Sender<Inbound>,
}

struct State {
    session: Session,
    streams: HashMap<u32, Slot>,
}

pub struct Mux {
    writer: Mutex<Box<dyn Write + Send>>,
    state: Mutex<State>,
    pub allow_poweroff: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler thread that panicked must not take the whole agent down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mux {
    pub fn new(writer: Box<dyn Write + Send>, allow_poweroff: bool) -> Arc<Self> {
        let caps = CAPABILITIES.iter().map(|s| s.to_string()).collect();
        Arc::new(Mux {
            writer: Mutex::new(writer),
            state: Mutex::new(State {
                session: Session::new(Role::Agent, env!("CARGO_PKG_VERSION"), caps),
                streams: HashMap::new(),
            }),
            allow_poweroff,
        })
    }

    /// Replaces the byte sink (after a unix-socket reconnect).
    pub fn set_writer(&self, w: Box<dyn Write + Send>) {
        *lock(&self.writer) = w;
    }

    // Lock order everywhere: writer, then state. Session changes hold both, so that the frames
    // they imply (preamble, Hello) are on the wire before any frame written after the change.

    fn put(w: &mut (dyn Write + Send), bytes: &[u8]) {
        if let Err(e) = w.write_all(bytes).and_then(|_| w.flush()) {
            log(&format!("write to host failed: {e}"));
        }
    }

    fn put_frame(
        w: &mut (dyn Write + Send),
        kind: FrameKind,
        channel: u8,
        stream: u32,
        payload: &[u8],
    ) {
        let mut buf = Vec::with_capacity(cove_proto::HEADER_LEN + payload.len());
        if cove_proto::encode_into(&mut buf, kind, channel, stream, payload).is_ok() {
            Self::put(w, &buf);
        }
    }

    fn write_frame(&self, kind: FrameKind, channel: u8, stream: u32, payload: &[u8]) {
        Self::put_frame(&mut **lock(&self.writer), kind, channel, stream, payload);
    }

    fn reset_all(st: &mut State) {
        for (_, slot) in st.streams.drain() {
            slot.shared.cancel();
            let _ = slot.tx.send(Inbound::Reset);
        }
    }

    /// The agent's own first Hello on a new transport, unless a host Hello already started a
    /// session: restarting after that would reset the session the host just began.
    pub fn start_session_if_idle(&self) {
        let w = lock(&self.writer);
        if lock(&self.state).session.synced() {
            return;
        }
        self.restart_locked(w);
    }

    /// Rule 1 of the session: reset, preamble, Hello request.
    pub fn restart_session(&self) {
        self.restart_locked(lock(&self.writer));
    }

    fn restart_locked(&self, mut w: MutexGuard<'_, Box<dyn Write + Send>>) {
        let hello = {
            let mut st = lock(&self.state);
            Self::reset_all(&mut st);
            st.session.restart(cove_proto::fresh_nonce())
        };
        let mut bytes = vec![0u8; SYNC_PREAMBLE_LEN];
        let _ = cove_proto::encode_into(&mut bytes, FrameKind::Hello, 0, 0, &to_payload(&hello));
        Self::put(&mut **w, &bytes);
    }

    /// The transport lost its peer: everything in flight belongs to a dead session.
    pub fn host_gone(&self) {
        let mut st = lock(&self.state);
        Self::reset_all(&mut st);
        st.session.desync();
    }

    /// Dispatches one frame from the host.
    pub fn handle(self: &Arc<Self>, f: Frame) {
        if f.kind == FrameKind::Hello {
            return self.on_hello(&f.payload);
        }
        let mut st = lock(&self.state);
        if !st.session.synced() {
            return; // rule 4: an old session's frame
        }
        match f.kind {
            FrameKind::Ping => {
                drop(st);
                self.write_frame(FrameKind::Pong, 0, 0, &f.payload);
            }
            FrameKind::Open => {
                if let Some(old) = st.streams.remove(&f.stream) {
                    old.shared.cancel();
                }
                let req: Result<OpenRequest, _> = from_payload("open", &f.payload);
                let (tx, rx) = mpsc::channel();
                let shared = Arc::new(SlotShared {
                    id: f.stream,
                    credit: Mutex::new(cove_proto::INITIAL_WINDOW),
                    cond: Condvar::new(),
                    cancelled: AtomicBool::new(false),
                    window: Mutex::new(RecvWindow::default()),
                    pgid: AtomicI32::new(0),
                });
                st.streams.insert(
                    f.stream,
                    Slot {
                        shared: shared.clone(),
                        tx: tx.clone(),
                    },
                );
                drop(st);
                let stream = AgentStream {
                    mux: self.clone(),
                    shared,
                    rx,
                    tx,
                };
                let spawned = crate::pool::spawn(move || crate::handlers::run(stream, req));
                if let Err(e) = spawned {
                    log(&format!(
                        "cannot start a thread for stream {}: {e}",
                        f.stream
                    ));
                }
            }
            FrameKind::Data | FrameKind::Msg | FrameKind::Eof => {
                let Some(slot) = st.streams.get(&f.stream) else {
                    return;
                };
                let inbound = match f.kind {
                    FrameKind::Eof => match Channel::from_u8(f.channel) {
                        Some(c) => Inbound::Eof(c),
                        None => return,
                    },
                    _ => {
                        let c = cost(f.payload.len());
                        if !lock(&slot.shared.window).on_receive(c) {
                            log(&format!(
                                "host overran its credit on stream {}; resetting it",
                                f.stream
                            ));
                            let id = f.stream;
                            Self::drop_stream_locked(&mut st, id);
                            drop(st);
                            self.write_frame(
                                FrameKind::Reset,
                                0,
                                id,
                                b"flow-control window exceeded",
                            );
                            return;
                        }
                        if f.kind == FrameKind::Data {
                            Inbound::Data(f.payload, c)
                        } else {
                            match from_payload::<StreamMsg>("stream", &f.payload) {
                                Ok(m) => Inbound::Msg(m, c),
                                Err(e) => {
                                    log(&e.to_string());
                                    return;
                                }
                            }
                        }
                    }
                };
                let _ = slot.tx.send(inbound);
            }
            FrameKind::Window => {
                let Some(slot) = st.streams.get(&f.stream) else {
                    return;
                };
                if let Ok(b) = <[u8; 4]>::try_from(&f.payload[..]) {
                    let mut c = lock(&slot.shared.credit);
                    *c = c.saturating_add(u32::from_le_bytes(b));
                    slot.shared.cond.notify_all();
                }
            }
            FrameKind::Reset | FrameKind::Close => {
                if let Some(slot) = st.streams.remove(&f.stream) {
                    slot.shared.cancel();
                    let _ = slot.tx.send(Inbound::Reset);
                }
            }
            FrameKind::Pong | FrameKind::Hello => {}
        }
    }

    fn drop_stream_locked(st: &mut State, id: u32) {
        if let Some(slot) = st.streams.remove(&id) {
            slot.shared.cancel();
            let _ = slot.tx.send(Inbound::Reset);
        }
    }

    fn on_hello(&self, payload: &[u8]) {
        let hello = match from_payload::<cove_proto::Hello>("hello", payload) {
            Ok(h) => h,
            Err(e) => return log(&e.to_string()),
        };
        let mut w = lock(&self.writer);
        let mut st = lock(&self.state);
        match st.session.on_hello(&hello) {
            HelloAction::ResetAndReply(reply) => {
                Self::reset_all(&mut st);
                Self::put_frame(&mut **w, FrameKind::Hello, 0, 0, &to_payload(&reply));
                log(&format!(
                    "host connected (cove {}); session reset",
                    hello.version
                ));
            }
            HelloAction::Reply(reply) => {
                Self::put_frame(&mut **w, FrameKind::Hello, 0, 0, &to_payload(&reply))
            }
            HelloAction::Synced | HelloAction::Ignore => {}
            HelloAction::Incompatible { peer_protocol } => log(&format!(
                "host speaks protocol {peer_protocol}, this agent {}; install a matching cove-agent",
                cove_proto::PROTOCOL_VERSION
            )),
        }
    }
}

/// A handler thread's end of one stream.
pub struct AgentStream {
    mux: Arc<Mux>,
    shared: Arc<SlotShared>,
    rx: mpsc::Receiver<Inbound>,
    tx: mpsc::Sender<Inbound>,
}

impl AgentStream {
    pub fn shared(&self) -> &Arc<SlotShared> {
        &self.shared
    }

    /// A sender into this stream's own inbound queue (used to wake it on child exit).
    pub fn waker(&self) -> mpsc::Sender<Inbound> {
        self.tx.clone()
    }

    pub fn recv(&self) -> Inbound {
        self.rx.recv().unwrap_or(Inbound::Reset)
    }

    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    pub fn sender(&self) -> StreamSender {
        StreamSender {
            mux: self.mux.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Returns credit for a consumed inbound frame.
    pub fn consumed(&self, c: u32) {
        self.sender().consumed(c)
    }

    /// Sends the closing frame and forgets the stream.
    pub fn finish(self) {
        let s = self.sender();
        let _ = s.frame(FrameKind::Close, 0, &[]);
        let mut st = lock(&self.mux.state);
        if st
            .streams
            .get(&self.shared.id)
            .is_some_and(|sl| Arc::ptr_eq(&sl.shared, &self.shared))
        {
            st.streams.remove(&self.shared.id);
        }
    }

    /// Answers a one-shot request that has no output: started and done, or its error; closes.
    pub fn answer(self, result: Result<(), cove_proto::ErrorMsg>) {
        match result {
            Ok(()) => {
                let s = self.sender();
                let _ = s.msg(&StreamMsg::Started { pid: None });
                let _ = s.msg(&StreamMsg::Done);
                self.finish();
            }
            Err(e) => self.fail(e),
        }
    }

    /// Reports an error and closes.
    pub fn fail(self, e: cove_proto::ErrorMsg) {
        let _ = self.sender().msg(&StreamMsg::Error(e));
        self.finish();
    }
}

/// Cloneable sending half, for output threads.
#[derive(Clone)]
pub struct StreamSender {
    mux: Arc<Mux>,
    shared: Arc<SlotShared>,
}

impl StreamSender {
    fn frame(&self, kind: FrameKind, channel: u8, payload: &[u8]) -> Result<(), Cancelled> {
        let mut buf = Vec::with_capacity(cove_proto::HEADER_LEN + payload.len());
        cove_proto::encode_into(&mut buf, kind, channel, self.shared.id, payload)
            .map_err(|_| Cancelled)?;
        let mut w = lock(&self.mux.writer);
        // Checked under the writer lock: a reset session's Hello reply is written under the
        // same lock after `cancelled` is set, so no old stream frame can follow it.
        if self.shared.cancelled.load(Ordering::SeqCst) {
            return Err(Cancelled);
        }
        w.write_all(&buf)
            .and_then(|_| w.flush())
            .map_err(|_| Cancelled)
    }

    /// Blocks until at least `min` bytes of credit are available; returns the credit (not taken).
    pub fn wait_credit(&self, min: u32) -> Result<u32, Cancelled> {
        let mut c = lock(&self.shared.credit);
        loop {
            if self.shared.cancelled.load(Ordering::SeqCst) {
                return Err(Cancelled);
            }
            if *c >= min {
                return Ok(*c);
            }
            c = self.shared.cond.wait(c).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn take_credit(&self, n: u32) -> Result<(), Cancelled> {
        self.wait_credit(n)?;
        let mut c = lock(&self.shared.credit);
        *c = c.saturating_sub(n);
        Ok(())
    }

    /// Sends bytes, split into frames, each waiting for credit.
    pub fn data(&self, chan: Channel, data: &[u8]) -> Result<(), Cancelled> {
        for chunk in data.chunks(MAX_PAYLOAD) {
            self.take_credit(cost(chunk.len()))?;
            self.frame(FrameKind::Data, chan as u8, chunk)?;
        }
        Ok(())
    }

    pub fn eof(&self, chan: Channel) -> Result<(), Cancelled> {
        self.frame(FrameKind::Eof, chan as u8, &[])
    }

    pub fn msg(&self, m: &StreamMsg) -> Result<(), Cancelled> {
        let p = to_payload(m);
        self.take_credit(cost(p.len()))?;
        self.frame(FrameKind::Msg, 0, &p)
    }

    pub fn consumed(&self, c: u32) {
        let inc = lock(&self.shared.window).on_consume(c);
        if let Some(inc) = inc {
            let _ = self.frame(FrameKind::Window, 0, &inc.to_le_bytes());
        }
    }

    pub fn allow_poweroff(&self) -> bool {
        self.mux.allow_poweroff
    }
}
