//! One multiplexed stream: the same type whether it goes to the agent directly (supervisor) or
//! through the supervisor's relay (CLI), so every high-level operation works over both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cove_proto::{Channel, FrameKind, MAX_PAYLOAD, StreamMsg, cost, to_payload};
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::mux::{Shared, SlotShared, Tasks, encode};

/// What arrived on a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Data(Channel, Vec<u8>),
    Eof(Channel),
    Msg(StreamMsg),
    /// The peer finished the stream normally; nothing follows.
    Closed,
}

#[derive(Debug)]
pub(crate) enum Event {
    Data(Channel, Vec<u8>, u32),
    Eof(Channel),
    Msg(StreamMsg, u32),
    Closed,
    Failed(LinkError),
}

struct Inner {
    id: u32,
    mux: Arc<Shared>,
    slot: Arc<SlotShared>,
    finished: AtomicBool,
    /// Keeps a relay client's connection tasks alive as long as its stream.
    _tasks: Option<Arc<Tasks>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            // Abandoned mid-way: tell the peer so it stops the process / transfer.
            self.mux.remove_slot(self.id);
            let _ = self.mux.send(encode(
                FrameKind::Reset,
                0,
                self.id,
                b"abandoned by the host",
            ));
        }
    }
}

/// A bidirectional stream. Split it to send and receive from different tasks.
pub struct Stream {
    tx: StreamSender,
    rx: StreamReceiver,
    pid: Option<u32>,
}

/// Sending half (cloneable).
#[derive(Clone)]
pub struct StreamSender {
    inner: Arc<Inner>,
}

/// Receiving half; acknowledges credit as events are taken.
pub struct StreamReceiver {
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<Event>,
    end: Option<Result<StreamEvent, LinkError>>,
}

impl Stream {
    pub(crate) fn new(
        mux: Arc<Shared>,
        id: u32,
        rx: mpsc::UnboundedReceiver<Event>,
        slot: Arc<SlotShared>,
        tasks: Option<Arc<Tasks>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            id,
            mux,
            slot,
            finished: AtomicBool::new(false),
            _tasks: tasks,
        });
        Stream {
            tx: StreamSender {
                inner: inner.clone(),
            },
            rx: StreamReceiver {
                inner,
                rx,
                end: None,
            },
            pid: None,
        }
    }

    pub(crate) fn set_pid(&mut self, pid: Option<u32>) {
        self.pid = pid;
    }

    /// Stream id on its connection.
    pub fn id(&self) -> u32 {
        self.tx.inner.id
    }

    /// The guest pid for an exec stream (from the agent's `Started`).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn split(self) -> (StreamSender, StreamReceiver) {
        (self.tx, self.rx)
    }

    pub fn sender(&self) -> &StreamSender {
        &self.tx
    }

    pub async fn send_data(&self, chan: Channel, data: &[u8]) -> Result<(), LinkError> {
        self.tx.send_data(chan, data).await
    }

    pub async fn send_eof(&self, chan: Channel) -> Result<(), LinkError> {
        self.tx.send_eof(chan).await
    }

    pub async fn send_msg(&self, msg: &StreamMsg) -> Result<(), LinkError> {
        self.tx.send_msg(msg).await
    }

    pub async fn recv(&mut self) -> Result<StreamEvent, LinkError> {
        self.rx.recv().await
    }
}

impl StreamSender {
    async fn take_credit(&self, n: u32) -> Result<(), LinkError> {
        match self.inner.slot.credit.acquire_many(n).await {
            Ok(p) => {
                p.forget();
                Ok(())
            }
            Err(_) => Err(self.inner.slot.failure()),
        }
    }

    fn check_open(&self) -> Result<(), LinkError> {
        if self.inner.slot.credit.is_closed() {
            Err(self.inner.slot.failure())
        } else {
            Ok(())
        }
    }

    /// Sends bytes on a channel, waiting for the peer's credit (this is the backpressure).
    pub async fn send_data(&self, chan: Channel, data: &[u8]) -> Result<(), LinkError> {
        for chunk in data.chunks(MAX_PAYLOAD) {
            self.take_credit(cost(chunk.len())).await?;
            self.inner
                .mux
                .send(encode(FrameKind::Data, chan as u8, self.inner.id, chunk))?;
        }
        Ok(())
    }

    pub async fn send_eof(&self, chan: Channel) -> Result<(), LinkError> {
        self.check_open()?;
        self.inner
            .mux
            .send(encode(FrameKind::Eof, chan as u8, self.inner.id, &[]))
    }

    pub async fn send_msg(&self, msg: &StreamMsg) -> Result<(), LinkError> {
        let p = to_payload(msg);
        self.take_credit(cost(p.len())).await?;
        self.inner
            .mux
            .send(encode(FrameKind::Msg, 0, self.inner.id, &p))
    }

    /// Finishes the stream normally (the side that serves a stream does this at the end).
    pub async fn close(&self) -> Result<(), LinkError> {
        self.finish();
        self.inner
            .mux
            .send(encode(FrameKind::Close, 0, self.inner.id, &[]))
    }

    /// Aborts the stream; the agent kills an exec'd process group or stops a transfer.
    pub async fn reset(&self, reason: &str) -> Result<(), LinkError> {
        self.finish();
        self.inner.mux.send(encode(
            FrameKind::Reset,
            0,
            self.inner.id,
            reason.as_bytes(),
        ))
    }

    fn finish(&self) {
        self.inner.finished.store(true, Ordering::SeqCst);
        self.inner.mux.remove_slot(self.inner.id);
        self.inner.slot.fail(LinkError::Reset {
            reason: "stream finished".into(),
        });
    }
}

/// How long an operation's stream may stay silent before it fails with [`LinkError::Stalled`]
/// (milliseconds; see [`set_stall_timeout`]).
static STALL_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets the deadline for each step of `ps`, `stat`, `cp` and `shutdown` (default 30 s): a guest
/// that accepts a request and then goes silent fails it after this long instead of hanging the
/// CLI. Exec output is not bounded (a command may be quiet for hours); exec start-up is (the
/// open timeout).
pub fn set_stall_timeout(d: Duration) {
    STALL_MS.store(d.as_millis().max(1) as u64, Ordering::Relaxed);
}

pub(crate) fn stall_timeout() -> Duration {
    Duration::from_millis(STALL_MS.load(Ordering::Relaxed))
}

/// Runs one step of an operation within the stall deadline.
pub(crate) async fn within<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    let waited = stall_timeout();
    tokio::time::timeout(waited, f)
        .await
        .unwrap_or(Err(LinkError::Stalled { what, waited }))
}

impl StreamReceiver {
    /// The next event. Errors are final: the stream was reset, or the link failed.
    pub async fn recv(&mut self) -> Result<StreamEvent, LinkError> {
        if let Some(end) = &self.end {
            return end.clone();
        }
        let ev = self
            .rx
            .recv()
            .await
            .unwrap_or_else(|| Event::Failed(self.inner.slot.failure()));
        let (out, c) = match ev {
            Event::Data(ch, b, c) => (Ok(StreamEvent::Data(ch, b)), Some(c)),
            Event::Msg(m, c) => (Ok(StreamEvent::Msg(m)), Some(c)),
            Event::Eof(ch) => (Ok(StreamEvent::Eof(ch)), None),
            Event::Closed => (Ok(StreamEvent::Closed), None),
            Event::Failed(e) => (Err(e), None),
        };
        if let Some(c) = c
            && let Some(frame) = self.inner.mux.consumed(self.inner.id, c)
        {
            // Failing to return credit only matters if the link is gone, which recv reports next.
            let _ = self.inner.mux.send(frame);
        }
        if matches!(out, Ok(StreamEvent::Closed) | Err(_)) {
            self.inner.finished.store(true, Ordering::SeqCst);
            self.end = Some(out.clone());
        }
        out
    }
}
