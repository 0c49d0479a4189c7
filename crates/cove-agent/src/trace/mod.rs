//! `cove trace`: a command (or a running process) under the agent's own ptrace tracer, so a
//! guest with no strace still says which files, libraries and addresses a program wanted and
//! did not get. Output streams like an exec's; each reported call is a
//! [`cove_proto::StreamMsg::Trace`] sent under the stream's flow control (a slow host slows
//! the tracee; nothing piles up in the agent), then a summary and the exit status.

mod libs;
mod syscalls;
mod tracer;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cove_proto::{Channel, ErrorKind, ErrorMsg, ExecRequest, ExitStatus, StreamMsg, TraceRequest};

use crate::exec::{io_thread, prepare, pump};
use crate::mux::{AgentStream, Inbound, StreamSender};
use tracer::{OPTIONS, Shared, Tracer};

pub fn run(stream: AgentStream, req: TraceRequest) {
    match (req.exec, req.pid) {
        (Some(exec), None) => spawn(stream, exec, req.all),
        (None, Some(pid)) => attach(stream, pid as i32, req.all),
        _ => stream.fail(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            "a trace needs a command or a pid (exactly one of them)",
        )),
    }
}

fn os_error(what: &str) -> ErrorMsg {
    let e = std::io::Error::last_os_error();
    let kind = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::ESRCH) => ErrorKind::NotFound,
        Some(libc::EIO | libc::ENOSYS) => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    };
    ErrorMsg::new(kind, format!("{what}: {e}"))
}

fn spawn(stream: AgentStream, req: ExecRequest, all: bool) {
    if req.tty.is_some() {
        return stream.fail(ErrorMsg::new(
            ErrorKind::Unsupported,
            "a traced command runs without a terminal",
        ));
    }
    let mut cmd = match prepare(&req).map(|l| l.command(true)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return stream.fail(ErrorMsg::from_io("cannot prepare the command", &e)),
        Err(e) => return stream.fail(e),
    };
    cmd.stdin(Stdio::null());
    let argv0 = &req.argv[0];
    let spawned = {
        let mut own = crate::pid1::children();
        let spawned = cmd.spawn();
        if let Ok(c) = &spawned {
            own.insert(c.id() as i32);
        }
        spawned
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return stream.fail(ErrorMsg::from_io(&format!("cannot run {argv0}"), &e)),
    };
    let pid = child.id() as i32;
    // The child stops with SIGTRAP right after its exec (PTRACE_TRACEME).
    let mut status = 0;
    // SAFETY: waitpid writes into a valid i32.
    let got = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    // SAFETY: no pointer arguments.
    let set = unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            (OPTIONS | libc::PTRACE_O_EXITKILL) as usize,
        )
    };
    if got != pid || !libc::WIFSTOPPED(status) || set < 0 {
        let e = os_error("cannot trace the command (ptrace)");
        let _ = child.kill();
        let _ = child.wait();
        crate::pid1::children().remove(&pid);
        return stream.fail(e);
    }
    stream.shared().pgid.store(pid, Ordering::SeqCst);
    let s = stream.sender();
    if s.msg(&StreamMsg::Started {
        pid: Some(pid as u32),
    })
    .is_err()
    {
        let _ = child.kill();
        let _ = child.wait();
        crate::pid1::children().remove(&pid);
        return;
    }
    let mut outputs = Vec::new();
    if let Some(o) = child.stdout.take() {
        let s2 = s.clone();
        outputs.extend(io_thread(move || pump(o, s2, Channel::Stdout)));
    }
    if let Some(e) = child.stderr.take() {
        let s2 = s.clone();
        outputs.extend(io_thread(move || pump(e, s2, Channel::Stderr)));
    }
    let shared = Arc::new(Shared::default());
    let mut tracer = Tracer::new(pid, all, true, s.clone(), shared.clone());
    // SAFETY: no pointer arguments; the child is in its post-exec stop.
    unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, 0) };
    let Some((stream, status)) = trace_until_done(stream, &mut tracer, shared, true) else {
        return;
    };
    stream.shared().pgid.store(0, Ordering::SeqCst);
    for t in outputs {
        let _ = t.join();
    }
    crate::pid1::children().remove(&pid);
    finish(stream, &s, &tracer, status);
}

fn attach(stream: AgentStream, pid: i32, all: bool) {
    if pid <= 0 || pid as u32 == std::process::id() {
        return stream.fail(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            format!("cannot trace pid {pid} (the agent itself, or not a process)"),
        ));
    }
    let tids: Vec<i32> = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(d) => d
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(e) => return stream.fail(ErrorMsg::from_io(&format!("process {pid}"), &e)),
    };
    let mut seized = Vec::new();
    for tid in tids {
        // SAFETY: no pointer arguments.
        let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, OPTIONS as usize) };
        if rc < 0 {
            if seized.is_empty() {
                return stream.fail(os_error(&format!("cannot attach to process {pid}")));
            }
            continue; // a thread that just ended
        }
        // SAFETY: no pointer arguments; the stop it causes is handled by the tracer loop.
        unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) };
        seized.push(tid);
    }
    let s = stream.sender();
    if s.msg(&StreamMsg::Started {
        pid: Some(pid as u32),
    })
    .is_err()
    {
        return; // returning ends this thread, which detaches every tracee
    }
    let shared = Arc::new(Shared::default());
    let mut tracer = Tracer::new(pid, all, false, s.clone(), shared.clone());
    for tid in seized {
        tracer.add_attached(tid);
    }
    if let Some((stream, status)) = trace_until_done(stream, &mut tracer, shared, false) {
        finish(stream, &s, &tracer, status);
    }
}

/// Runs the tracer while another thread watches the stream for the host going away or a
/// signal to forward. Returns the stream and the root's wait status, or `None` if cancelled.
fn trace_until_done(
    stream: AgentStream,
    tracer: &mut Tracer,
    shared: Arc<Shared>,
    owned: bool,
) -> Option<(AgentStream, Option<i32>)> {
    let waker = stream.waker();
    let watch_shared = shared.clone();
    let watcher = std::thread::Builder::new()
        .name("trace-watch".into())
        .spawn(move || {
            loop {
                match stream.recv() {
                    Inbound::Data(_, c) | Inbound::Msg(_, c) if !owned => stream.consumed(c),
                    Inbound::Msg(StreamMsg::Signal { signal }, c) => {
                        let pgid = stream.shared().pgid.load(Ordering::SeqCst);
                        if pgid > 0 {
                            // SAFETY: kill has no memory-safety preconditions.
                            unsafe { libc::kill(-pgid, signal) };
                        }
                        stream.consumed(c);
                    }
                    Inbound::Data(_, c) | Inbound::Msg(_, c) => stream.consumed(c),
                    Inbound::Eof(_) => {}
                    Inbound::ChildExited => return stream,
                    Inbound::Reset => {
                        watch_shared.cancelled.store(true, Ordering::SeqCst);
                        // Wake the tracer from waitpid: kill what it started; stop (and so
                        // report to the tracer, which then detaches) what it attached to.
                        let pid = watch_shared.wake_pid.load(Ordering::SeqCst);
                        let sig = if owned { libc::SIGKILL } else { libc::SIGSTOP };
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid, sig) };
                        return stream;
                    }
                }
            }
        });
    let watcher = match watcher {
        Ok(w) => w,
        Err(_) => return None, // the tracees are killed (owned) or detached as this thread ends
    };
    let status = tracer.run();
    let _ = waker.send(Inbound::ChildExited);
    let stream = watcher.join().ok()?;
    if shared.cancelled.load(Ordering::SeqCst) || stream.is_cancelled() {
        return None;
    }
    Some((stream, status))
}

fn finish(stream: AgentStream, s: &StreamSender, tracer: &Tracer, status: Option<i32>) {
    if s.msg(&StreamMsg::TraceSummary(tracer.summary())).is_err() {
        return;
    }
    let exit = match status {
        Some(st) if libc::WIFEXITED(st) => ExitStatus::Code(libc::WEXITSTATUS(st)),
        Some(st) if libc::WIFSIGNALED(st) => ExitStatus::Signal(libc::WTERMSIG(st)),
        _ => {
            return stream.fail(ErrorMsg::new(
                ErrorKind::Internal,
                "the traced process ended without an exit status",
            ));
        }
    };
    if s.msg(&StreamMsg::Exit(exit)).is_ok() {
        stream.finish();
    }
}
