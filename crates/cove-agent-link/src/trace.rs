//! `cove trace` and `cove ldd` over any [`StreamOpener`]: the agent traces, the host only
//! relays. A trace can report without end, so events are handed to a callback as they come and
//! never collected here; the stream's flow control keeps the agent (and the tracee) from
//! running ahead of the consumer.

use cove_proto::{
    Channel, ExitStatus, LddReport, OpenRequest, StreamMsg, TraceEvent, TraceRequest, TraceSummary,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::ops::StreamOpener;
use crate::stream::StreamEvent;

/// How a trace ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOutcome {
    pub exit: ExitStatus,
    pub summary: TraceSummary,
}

/// Where a trace's output goes.
pub struct TraceIo<'a> {
    /// The traced command's stdout and stderr.
    pub stdout: Box<dyn AsyncWrite + Unpin + Send>,
    pub stderr: Box<dyn AsyncWrite + Unpin + Send>,
    /// Called for each reported system call, in order.
    pub on_event: Box<dyn FnMut(TraceEvent) + Send + 'a>,
    /// Signal messages to forward (Ctrl-C on the CLI interrupts the traced command).
    pub control: Option<mpsc::Receiver<StreamMsg>>,
}

async fn write_out(w: &mut (dyn AsyncWrite + Unpin + Send), b: &[u8]) -> Result<(), LinkError> {
    w.write_all(b)
        .await
        .map_err(|e| LinkError::local("writing the traced command's output", e))?;
    w.flush()
        .await
        .map_err(|e| LinkError::local("writing the traced command's output", e))
}

/// Runs a command (or attaches to a process) under the agent's tracer.
pub async fn trace(
    opener: &impl StreamOpener,
    req: TraceRequest,
    io: TraceIo<'_>,
) -> Result<TraceOutcome, LinkError> {
    let stream = opener.open(OpenRequest::Trace(req)).await?;
    let (tx, mut rx) = stream.split();
    let TraceIo {
        mut stdout,
        mut stderr,
        mut on_event,
        control,
    } = io;
    let ctl = control.map(|mut c| {
        tokio::spawn(async move {
            while let Some(m) = c.recv().await {
                if tx.send_msg(&m).await.is_err() {
                    return;
                }
            }
        })
    });
    let mut exit = None;
    let mut summary = None;
    let res = loop {
        match rx.recv().await {
            Err(e) => break Err(e),
            Ok(StreamEvent::Data(Channel::Stderr, b)) => write_out(&mut *stderr, &b).await?,
            Ok(StreamEvent::Data(_, b)) => write_out(&mut *stdout, &b).await?,
            Ok(StreamEvent::Eof(_)) => {}
            Ok(StreamEvent::Msg(StreamMsg::Trace(ev))) => on_event(ev),
            Ok(StreamEvent::Msg(StreamMsg::TraceSummary(s))) => summary = Some(s),
            Ok(StreamEvent::Msg(StreamMsg::Exit(st))) => exit = Some(st),
            Ok(StreamEvent::Msg(StreamMsg::Error(e))) => break Err(LinkError::Remote(e)),
            Ok(StreamEvent::Msg(_)) => {}
            Ok(StreamEvent::Closed) => {
                break exit
                    .map(|exit| TraceOutcome {
                        exit,
                        summary: summary.take().unwrap_or_default(),
                    })
                    .ok_or_else(|| {
                        LinkError::Protocol("trace stream closed without an exit status".into())
                    });
            }
        }
    };
    if let Some(c) = ctl {
        c.abort();
    }
    res
}

/// A guest ELF file's dependencies, resolved by the agent.
pub async fn ldd(opener: &impl StreamOpener, path: &str) -> Result<LddReport, LinkError> {
    let mut s = opener.open(OpenRequest::Ldd { path: path.into() }).await?;
    let mut report = None;
    loop {
        match s.recv().await? {
            StreamEvent::Msg(StreamMsg::Error(e)) => return Err(LinkError::Remote(e)),
            StreamEvent::Msg(StreamMsg::Ldd(r)) => report = Some(r),
            StreamEvent::Closed => {
                return report
                    .ok_or_else(|| LinkError::Protocol("ldd answered without a report".into()));
            }
            _ => {}
        }
    }
}
