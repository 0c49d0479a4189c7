//! High-level operations the CLI runs over any [`StreamOpener`]: the supervisor's [`AgentLink`]
//! directly, or relayed connections ([`FnOpener`] around [`crate::RemoteStream::open`]).

use std::future::Future;

use cove_proto::{Channel, ExecRequest, ExitStatus, FileMeta, OpenRequest, ProcInfo, StreamMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::link::AgentLink;
use crate::stream::{Stream, StreamEvent, StreamReceiver, within};

/// Something that opens one agent stream per call.
pub trait StreamOpener: Sync {
    fn open(&self, req: OpenRequest) -> impl Future<Output = Result<Stream, LinkError>> + Send;
}

impl StreamOpener for AgentLink {
    fn open(&self, req: OpenRequest) -> impl Future<Output = Result<Stream, LinkError>> + Send {
        self.open_stream(req)
    }
}

/// Adapts a closure (e.g. "connect to the supervisor, do the preamble, `RemoteStream::open`").
pub struct FnOpener<F>(pub F);

impl<F, Fut> StreamOpener for FnOpener<F>
where
    F: Fn(OpenRequest) -> Fut + Sync,
    Fut: Future<Output = Result<Stream, LinkError>> + Send,
{
    fn open(&self, req: OpenRequest) -> impl Future<Output = Result<Stream, LinkError>> + Send {
        (self.0)(req)
    }
}

/// Where an exec's stdin comes from.
pub enum Input {
    /// No stdin: the process sees EOF at once.
    None,
    Reader(Box<dyn AsyncRead + Unpin + Send>),
    /// Chunks from a channel (closing it is EOF). See [`spawn_stdin_reader`].
    Chunks(mpsc::Receiver<Vec<u8>>),
}

/// The local ends of an exec.
pub struct ExecIo {
    pub stdin: Input,
    pub stdout: Box<dyn AsyncWrite + Unpin + Send>,
    pub stderr: Box<dyn AsyncWrite + Unpin + Send>,
    /// Resize and Signal messages to forward while the process runs (e.g. from SIGWINCH/SIGINT).
    pub control: Option<mpsc::Receiver<StreamMsg>>,
}

impl ExecIo {
    /// This process's stdin/stdout/stderr. Stdin is read on a detached thread so a finished
    /// command never waits for the user to press Enter.
    pub fn process_stdio() -> Self {
        Self::process_stdio_with(Input::Chunks(spawn_stdin_reader()))
    }

    fn process_stdio_with(stdin: Input) -> Self {
        ExecIo {
            stdin,
            stdout: Box::new(tokio::io::stdout()),
            stderr: Box::new(tokio::io::stderr()),
            control: None,
        }
    }

    /// This process's stdout/stderr; the command's stdin is empty (as `docker exec` without
    /// `-i`). This process's stdin is never read, so a `cove exec` inside a `while read` loop
    /// leaves the loop's input to the loop.
    pub fn without_stdin() -> Self {
        Self::process_stdio_with(Input::None)
    }
}

/// Turns SIGINT, SIGTERM, SIGHUP and SIGQUIT received by this process into Signal messages for
/// [`ExecIo::control`], so Ctrl-C on `cove exec` (without `-t`) interrupts the guest command
/// instead of only the CLI. Must be called inside a tokio runtime.
pub fn forward_signals() -> mpsc::Receiver<StreamMsg> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel(8);
    for (kind, num) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ] {
        let Ok(mut s) = signal(kind) else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(StreamMsg::Signal { signal: num }).await.is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Reads fd 0 on a detached OS thread into a channel (tokio's own stdin would keep the runtime
/// from shutting down while a read is pending).
pub fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(8);
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 32 * 1024];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    rx
}

async fn write_out(
    w: &mut (dyn AsyncWrite + Unpin + Send),
    b: &[u8],
    what: &str,
) -> Result<(), LinkError> {
    w.write_all(b)
        .await
        .map_err(|e| LinkError::local(format!("writing {what}"), e))?;
    w.flush()
        .await
        .map_err(|e| LinkError::local(format!("writing {what}"), e))
}

/// Runs a command in the guest, wiring stdin/stdout/stderr, and returns how it ended.
pub async fn exec(
    opener: &impl StreamOpener,
    req: ExecRequest,
    io: ExecIo,
) -> Result<ExitStatus, LinkError> {
    let stream = opener.open(OpenRequest::Exec(req)).await?;
    let (tx, mut rx) = stream.split();
    let ExecIo {
        stdin,
        mut stdout,
        mut stderr,
        control,
    } = io;
    let tx2 = tx.clone();
    let input = tokio::spawn(async move {
        match stdin {
            Input::None => {}
            Input::Reader(mut r) => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => tx2.send_data(Channel::Data, &buf[..n]).await?,
                    }
                }
            }
            Input::Chunks(mut ch) => {
                while let Some(b) = ch.recv().await {
                    tx2.send_data(Channel::Data, &b).await?;
                }
            }
        }
        tx2.send_eof(Channel::Data).await
    });
    let ctl = control.map(|mut c| {
        let tx3 = tx.clone();
        tokio::spawn(async move {
            while let Some(m) = c.recv().await {
                if tx3.send_msg(&m).await.is_err() {
                    return;
                }
            }
        })
    });
    let res = collect_exec(&mut rx, &mut *stdout, &mut *stderr).await;
    input.abort();
    if let Some(c) = ctl {
        c.abort();
    }
    res
}

async fn collect_exec(
    rx: &mut StreamReceiver,
    stdout: &mut (dyn AsyncWrite + Unpin + Send),
    stderr: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<ExitStatus, LinkError> {
    let mut status = None;
    loop {
        match rx.recv().await? {
            StreamEvent::Data(Channel::Stderr, b) => write_out(stderr, &b, "stderr").await?,
            StreamEvent::Data(_, b) => write_out(stdout, &b, "stdout").await?,
            StreamEvent::Eof(_) => {}
            StreamEvent::Msg(StreamMsg::Exit(st)) => status = Some(st),
            StreamEvent::Msg(StreamMsg::Error(e)) => return Err(LinkError::Remote(e)),
            StreamEvent::Msg(_) => {}
            StreamEvent::Closed => {
                return status.ok_or_else(|| {
                    LinkError::Protocol("exec stream closed without an exit status".into())
                });
            }
        }
    }
}

/// Most answers one request may bring (`ps` of a guest with this many processes): a guest
/// cannot grow the CLI's memory by answering forever.
const MAX_ANSWERS: usize = 1 << 17;

/// Reads the rest of a simple request/answer stream: messages until Closed, each within the
/// stall deadline.
async fn messages(mut s: Stream, what: &'static str) -> Result<Vec<StreamMsg>, LinkError> {
    let mut out = Vec::new();
    loop {
        if out.len() >= MAX_ANSWERS {
            return Err(LinkError::Protocol(format!(
                "the guest sent more than {MAX_ANSWERS} answers to one request"
            )));
        }
        match within(what, s.recv()).await? {
            StreamEvent::Msg(StreamMsg::Error(e)) => return Err(LinkError::Remote(e)),
            StreamEvent::Msg(m) => out.push(m),
            StreamEvent::Closed => return Ok(out),
            StreamEvent::Data(..) | StreamEvent::Eof(_) => {}
        }
    }
}

/// Processes in the guest, by pid.
pub async fn ps(opener: &impl StreamOpener) -> Result<Vec<ProcInfo>, LinkError> {
    let msgs = messages(opener.open(OpenRequest::Ps).await?, "answer to `ps`").await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            if let StreamMsg::Proc(p) = m {
                Some(p)
            } else {
                None
            }
        })
        .collect())
}

/// Metadata of a guest path (`None` if it does not exist).
pub async fn stat(opener: &impl StreamOpener, path: &str) -> Result<Option<FileMeta>, LinkError> {
    let s = opener.open(OpenRequest::Stat { path: path.into() }).await?;
    let msgs = messages(s, "answer to a stat").await?;
    for m in msgs {
        if let StreamMsg::Stat { meta } = m {
            return Ok(meta);
        }
    }
    Err(LinkError::Protocol("stat answered without metadata".into()))
}

/// Sends the post-restore fixups (clock, entropy, identity) and waits for the agent to apply them.
pub async fn fixup(
    opener: &impl StreamOpener,
    req: cove_proto::FixupRequest,
) -> Result<(), LinkError> {
    messages(
        opener.open(OpenRequest::Fixup(req)).await?,
        "answer to the post-restore fixups",
    )
    .await
    .map(|_| ())
}

/// Has a guest restored from another VM's snapshot move its NICs to its own MACs and
/// addresses, and waits until it has.
pub async fn move_nics(
    opener: &impl StreamOpener,
    nics: Vec<cove_proto::NicMove>,
) -> Result<(), LinkError> {
    messages(
        opener.open(OpenRequest::MoveNics { nics }).await?,
        "answer to moving the NICs",
    )
    .await
    .map(|_| ())
}

/// Asks the agent to sync and power off (or reboot) the guest.
pub async fn shutdown(opener: &impl StreamOpener, reboot: bool) -> Result<(), LinkError> {
    messages(
        opener.open(OpenRequest::Shutdown { reboot }).await?,
        "answer to shutdown",
    )
    .await
    .map(|_| ())
}
