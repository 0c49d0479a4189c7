//! The ptrace loop: every traced process and thread stops at each system call's entry and exit;
//! at entry the watched calls' path (or address) is read from the tracee's memory, at exit the
//! result decides whether it is reported.
//!
//! `PTRACE_GET_SYSCALL_INFO` (Linux 5.3) gives the call number, arguments and result without
//! per-architecture register layouts, so the same loop serves x86_64 and arm64; only the numbers
//! in [`super::syscalls`] differ.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use cove_proto::{MAX_TRACE_PATH, TraceEvent, TraceSummary};

use super::libs::Libraries;
use super::syscalls::{Arg, Watched, errno_name, is_open, lookup, sockaddr_text};
use crate::mux::StreamSender;

const OP_ENTRY: u8 = 1;
const OP_EXIT: u8 = 2;

pub const OPTIONS: i32 = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC;

/// What the tracer shares with the thread that watches the stream.
#[derive(Default)]
pub struct Shared {
    /// The host went away: stop (kill what was started, detach from what was attached to).
    pub cancelled: AtomicBool,
    /// A live tracee to signal so that a waiting tracer wakes up and sees `cancelled`.
    pub wake_pid: AtomicI32,
}

struct Pending {
    call: Watched,
    path: Option<String>,
}

#[derive(Default)]
struct Proc {
    pending: Option<Pending>,
}

pub struct Tracer {
    all: bool,
    /// Kill tracees on cancel (they were started for the trace) instead of detaching.
    owned: bool,
    root: i32,
    sender: StreamSender,
    shared: Arc<Shared>,
    procs: HashMap<i32, Proc>,
    libs: Libraries,
    summary: TraceSummary,
    /// The host stopped taking events: keep the tracees running, report nothing more.
    silent: bool,
}

/// How the root process ended: a raw wait status, or detached/unknown.
pub type RootStatus = Option<i32>;

fn ptrace(req: libc::c_uint, pid: i32, addr: usize, data: usize) -> i64 {
    // SAFETY: every request made here either takes no pointer or a pointer to a live, large
    // enough buffer owned by the caller (GET_SYSCALL_INFO, PEEKDATA's return value).
    unsafe { libc::ptrace(req, pid, addr, data) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Tracer {
    pub fn new(
        root: i32,
        all: bool,
        owned: bool,
        sender: StreamSender,
        shared: Arc<Shared>,
    ) -> Self {
        shared.wake_pid.store(root, Ordering::SeqCst);
        let mut procs = HashMap::new();
        procs.insert(root, Proc::default());
        Tracer {
            all,
            owned,
            root,
            sender,
            shared,
            procs,
            libs: Libraries::default(),
            summary: TraceSummary {
                processes: 1,
                ..TraceSummary::default()
            },
            silent: false,
        }
    }

    pub fn add_attached(&mut self, tid: i32) {
        if self.procs.insert(tid, Proc::default()).is_none() {
            self.summary.processes += 1;
        }
    }

    pub fn summary(&self) -> TraceSummary {
        TraceSummary {
            missing_libraries: self.libs.missing(),
            ..self.summary.clone()
        }
    }

    /// Runs until no tracee is left (or, attached, the host cancels); returns the root's status.
    pub fn run(&mut self) -> RootStatus {
        let mut root_status = None;
        loop {
            if self.shared.cancelled.load(Ordering::SeqCst) && self.owned {
                // Started for the trace: nothing of it may outlive the request.
                for pid in self.procs.keys() {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(*pid, libc::SIGKILL) };
                }
            }
            let mut status = 0;
            // SAFETY: waitpid writes the status into a valid i32. __WNOTHREAD: only this
            // thread's tracees and children, never another stream's exec'd processes.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD) };
            if pid < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return root_status; // ECHILD: nothing left to trace
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.procs.remove(&pid);
                crate::pid1::children().remove(&pid);
                if pid == self.root {
                    root_status = Some(status);
                }
                if let Some(other) = self.procs.keys().next() {
                    self.shared.wake_pid.store(*other, Ordering::SeqCst);
                } else if !self.owned {
                    return root_status; // attached: the process is gone (no ECHILD for us)
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xffff;
            let known = self.procs.contains_key(&pid);
            if !known {
                // A new child or thread, attached automatically (TRACEFORK/CLONE).
                self.procs.insert(pid, Proc::default());
                crate::pid1::children().insert(pid);
                self.summary.processes += 1;
            }
            let inject = if sig == (libc::SIGTRAP | 0x80) {
                self.syscall_stop(pid);
                0
            } else if event != 0 || (!known && sig == libc::SIGSTOP) {
                // fork/clone/exec events, a SEIZEd tracee's stop (PTRACE_EVENT_STOP), a new
                // child's first stop.
                0
            } else if sig == libc::SIGSTOP && self.shared.cancelled.load(Ordering::SeqCst) {
                0 // our own wake-up
            } else {
                sig
            };
            if !self.owned && self.shared.cancelled.load(Ordering::SeqCst) {
                // Attached and the host is gone: let go of this one; the others are running and
                // are detached when this thread exits.
                ptrace(libc::PTRACE_DETACH, pid, 0, inject as usize);
                return None;
            }
            ptrace(libc::PTRACE_SYSCALL, pid, 0, inject as usize);
        }
    }

    fn syscall_stop(&mut self, pid: i32) {
        // SAFETY: ptrace_syscall_info is plain old data; all-zero is a valid value.
        let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::ptrace_syscall_info>();
        let got = ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            pid,
            size,
            &mut info as *mut _ as usize,
        );
        if got <= 0 {
            return;
        }
        match info.op {
            OP_ENTRY => {
                self.summary.syscalls += 1;
                // SAFETY: op == ENTRY means the `entry` member of the union was filled.
                let (nr, args) = unsafe { (info.u.entry.nr, info.u.entry.args) };
                let pending = lookup(nr).map(|call| Pending {
                    call,
                    path: read_arg(pid, call.arg, &args),
                });
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.pending = pending;
                }
            }
            OP_EXIT => {
                let Some(p) = self.procs.get_mut(&pid).and_then(|p| p.pending.take()) else {
                    return;
                };
                // SAFETY: op == EXIT means the `exit` member of the union was filled.
                let (rval, is_error) = unsafe { (info.u.exit.sval, info.u.exit.is_error) };
                self.finished(pid, p, rval, is_error != 0);
            }
            _ => {}
        }
    }

    fn finished(&mut self, pid: i32, p: Pending, rval: i64, failed: bool) {
        // An empty path is an fstat-like call on a descriptor (AT_EMPTY_PATH): nothing asked for.
        if p.path.as_deref() == Some("") {
            return;
        }
        if let Some(path) = p.path.as_ref().filter(|_| is_open(p.call.name)) {
            self.libs.on_open(path, !failed);
        }
        if failed {
            self.summary.failures += 1;
        }
        if !(failed || self.all) || self.silent {
            return;
        }
        let ev = TraceEvent {
            pid: pid as u32,
            syscall: p.call.name.to_string(),
            path: p.path,
            result: rval,
            errno: failed.then(|| errno_name(-rval as i32)),
        };
        // Waits for the host's credit: a slow reader slows the tracee, nothing is buffered.
        if self.sender.msg(&cove_proto::StreamMsg::Trace(ev)).is_err() {
            self.silent = true;
        }
    }
}

/// Reads what a watched call names from the tracee: a path (made absolute against its
/// directory descriptor or working directory) or a socket address.
fn read_arg(pid: i32, arg: Arg, args: &[u64; 6]) -> Option<String> {
    match arg {
        Arg::Path(i) => {
            let path = read_cstr(pid, args[i] as usize)?;
            Some(absolute(pid, libc::AT_FDCWD, path))
        }
        Arg::PathAt { dirfd, path } => {
            let p = read_cstr(pid, args[path] as usize)?;
            Some(absolute(pid, args[dirfd] as i32, p))
        }
        Arg::SockAddr => {
            let len = (args[2] as usize).min(128);
            let bytes = read_mem(pid, args[1] as usize, len)?;
            sockaddr_text(&bytes)
        }
    }
}

fn absolute(pid: i32, dirfd: i32, path: String) -> String {
    if path.is_empty() || path.starts_with('/') {
        return path;
    }
    let base = if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    match std::fs::read_link(base) {
        Ok(dir) => {
            let dir = dir.to_string_lossy();
            let sep = if dir.ends_with('/') { "" } else { "/" };
            format!("{dir}{sep}{path}")
        }
        Err(_) => path,
    }
}

/// Reads a NUL-terminated string of at most [`MAX_TRACE_PATH`] bytes, page by page so that a
/// string ending just before an unmapped page is still read.
fn read_cstr(pid: i32, addr: usize) -> Option<String> {
    if addr == 0 {
        return None;
    }
    const PAGE: usize = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX_TRACE_PATH {
        let chunk = (PAGE - at % PAGE).min(MAX_TRACE_PATH - out.len());
        let bytes = read_mem(pid, at, chunk)?;
        if let Some(end) = bytes.iter().position(|b| *b == 0) {
            out.extend_from_slice(&bytes[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&bytes);
        at += chunk;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Reads tracee memory with process_vm_readv, or word by word with PTRACE_PEEKDATA on kernels
/// built without CONFIG_CROSS_MEMORY_ATTACH (a hand-made guest kernel may lack it).
fn read_mem(pid: i32, addr: usize, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, which lives across the call; `remote` is only read
    // through the kernel's checked copy from the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n >= 0 {
        buf.truncate(n as usize);
        return (!buf.is_empty()).then_some(buf);
    }
    if errno() != libc::ENOSYS {
        return None;
    }
    let word = std::mem::size_of::<libc::c_long>();
    let mut out = Vec::with_capacity(len);
    let mut at = addr;
    while out.len() < len {
        // PEEKDATA returns the word; -1 is also a valid word, so errno is what tells.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = 0 };
        let v = ptrace(libc::PTRACE_PEEKDATA, pid, at, 0);
        if v == -1 && errno() != 0 {
            break;
        }
        out.extend_from_slice(&v.to_ne_bytes()[..word]);
        at += word;
    }
    out.truncate(len);
    (!out.is_empty()).then_some(out)
}
