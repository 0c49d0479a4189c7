//! Running commands: pipes (separate stdout/stderr) or a PTY (merged, resizable, with a
//! controlling terminal). Output is read only as fast as the host grants credit.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, mpsc};

use cove_proto::{
    Channel, ErrorKind, ErrorMsg, ExecRequest, ExitStatus, FRAME_COST, MAX_PAYLOAD, StreamMsg,
    TtySize,
};

use crate::mux::{AgentStream, Inbound, StreamSender};
use crate::spawn::Child;
use crate::users::{User, resolve};

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The agent's own user, for the environment of a command that names none. Read again only when
/// /etc/passwd or /etc/group changed: a stat of each instead of reading and parsing both for
/// every command, which took half a millisecond of guest time under TCG.
fn current_user() -> User {
    type Key = [Option<(u64, u64, i64, i64, u64)>; 2];
    static CACHE: Mutex<Option<(Key, User)>> = Mutex::new(None);
    let key: Key = ["/etc/passwd", "/etc/group"].map(|f| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(f).ok()?;
        Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
    });
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, user)) = cache.as_ref() {
        if *k == key {
            return user.clone();
        }
    }
    let user = read_current_user();
    *cache = Some((key, user.clone()));
    user
}

fn read_current_user() -> User {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    resolve(&uid.to_string(), std::path::Path::new("/")).unwrap_or(User {
        name: if uid == 0 {
            "root".into()
        } else {
            uid.to_string()
        },
        uid,
        gid,
        groups: vec![gid],
        home: if uid == 0 { "/root".into() } else { "/".into() },
        shell: "/bin/sh".into(),
    })
}

fn openpty(size: TtySize) -> std::io::Result<(OwnedFd, OwnedFd)> {
    crate::pid1::ensure_pty_support();
    let mut master = -1;
    let mut slave = -1;
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers; name and termios may be null per openpty(3).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty returned two fresh descriptors that we now own.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&m, &s] {
        // SAFETY: fcntl on an owned, open descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

fn set_winsize(fd: &OwnedFd, size: TtySize) {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Reads `r` into the stream, never more than the host's credit allows.
pub(crate) fn pump(mut r: impl Read, s: StreamSender, chan: Channel) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        let Ok(credit) = s.wait_credit(FRAME_COST + 1024) else {
            return;
        };
        let max = ((credit - FRAME_COST) as usize).min(MAX_PAYLOAD);
        let n = match r.read(&mut buf[..max]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EIO on a PTY master: every slave is closed
        };
        if s.data(chan, &buf[..n]).is_err() {
            return;
        }
    }
    let _ = s.eof(chan);
}

/// Runs one of a command's I/O loops beside its stream's handler (on a pooled thread).
pub(crate) fn io_thread<F: FnOnce() + Send + 'static>(f: F) -> Option<crate::pool::Handle<()>> {
    crate::pool::spawn(f).ok()
}

/// What `req` asks to run, resolved: user, working directory, environment, stdio (a PTY when
/// asked). Started by [`Launch::spawn`], or by [`Launch::command`] for `cove trace`.
pub(crate) struct Launch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: CString,
    /// (uid, gid, groups) to switch to, when the request names a user.
    ids: Option<(u32, u32, Vec<u32>)>,
    /// The PTY (master, slave), when the request asks for a terminal.
    pub pty: Option<(OwnedFd, OwnedFd)>,
}

pub(crate) fn prepare(req: &ExecRequest) -> Result<Launch, ErrorMsg> {
    if req.argv.is_empty() {
        return Err(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            "exec needs a command (argv is empty)",
        ));
    }
    let user = match &req.user {
        Some(u) => match resolve(u, std::path::Path::new("/")) {
            Ok(u) => Some(u),
            Err(e) => return Err(ErrorMsg::new(ErrorKind::NotFound, e)),
        },
        None => None,
    };
    let who = user.clone().unwrap_or_else(current_user);
    let cwd = req.cwd.clone().unwrap_or_else(|| {
        if std::path::Path::new(&who.home).is_dir() {
            who.home.clone()
        } else {
            "/".into()
        }
    });
    if let Err(e) = std::fs::metadata(&cwd) {
        return Err(ErrorMsg::from_io(&format!("working directory {cwd}"), &e));
    }
    let Ok(cwd) = CString::new(cwd) else {
        return Err(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            "cwd contains a NUL byte",
        ));
    };
    // A fresh environment; the request's own variables win over these.
    let mut env: BTreeMap<String, String> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", &who.home),
        ("USER", &who.name),
        ("LOGNAME", &who.name),
        ("SHELL", &who.shell),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if req.tty.is_some() {
        env.insert("TERM".into(), "xterm-256color".into());
    }
    env.extend(req.env.iter().cloned());
    let pty = match req.tty.map(openpty).transpose() {
        Ok(p) => p,
        Err(e) => return Err(ErrorMsg::from_io("openpty", &e)),
    };
    Ok(Launch {
        argv: req.argv.clone(),
        env: env.into_iter().collect(),
        cwd,
        ids: user.map(|u| (u.uid, u.gid, u.groups)),
        pty,
    })
}

impl Launch {
    /// Starts the command, registered as the agent's own child (the PID 1 reaper leaves it to
    /// its waiter). A plain command goes through `posix_spawn`; one that switches user or has
    /// a terminal needs code between fork and exec.
    fn spawn(&self) -> std::io::Result<Child> {
        let mut own = crate::pid1::children();
        let child = if self.ids.is_none() && self.pty.is_none() {
            crate::spawn::spawn_piped(&self.argv, &self.env, &self.cwd)?
        } else {
            // The Command holds copies of the PTY slave; dropped here, so the master sees EIO
            // once the child closes its own.
            Child::from_std(self.command(false)?.spawn()?)
        };
        own.insert(child.id() as i32);
        Ok(child)
    }

    /// The command as std's `Command`, with a session of its own and every signal at its
    /// default; with `trace_me`, it also asks to be traced by the spawning thread (`cove
    /// trace`), so it stops at its first instruction after exec.
    pub(crate) fn command(&self, trace_me: bool) -> std::io::Result<Command> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().cloned());
        if let Some((_, slave)) = &self.pty {
            let dup = || slave.try_clone().map(Stdio::from);
            cmd.stdin(dup()?).stdout(dup()?).stderr(dup()?);
        } else {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let tty = self.pty.is_some();
        let ids = self.ids.clone();
        let cwd = self.cwd.clone();
        // SAFETY: the closure only makes async-signal-safe syscalls on data prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                reset_signal_dispositions();
                if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // No let-chains: the agent builds with Debian's Rust 1.85 for arm64.
                if let Some((uid, gid, groups)) = &ids {
                    if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                        || libc::setgid(*gid) < 0
                        || libc::setuid(*uid) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::chdir(cwd.as_ptr()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The tracer is the thread that spawns: it alone may then use ptrace on the child.
                if trace_me && libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

pub fn run(stream: AgentStream, req: ExecRequest) {
    let mut launch = match prepare(&req) {
        Ok(l) => l,
        Err(e) => return stream.fail(e),
    };
    let argv0 = &req.argv[0];
    let spawned = launch.spawn();
    // Only the PTY's master is kept: with our copy of the slave closed, the master sees EIO
    // when the child ends.
    let master = launch.pty.take().map(|(m, _)| m);
    let tty = master.is_some();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return stream.fail(ErrorMsg::from_io(&format!("cannot run {argv0}"), &e)),
    };
    let pid = child.id();
    stream.shared().pgid.store(pid as i32, Ordering::SeqCst);
    let s = stream.sender();
    if s.msg(&StreamMsg::Started { pid: Some(pid) }).is_err() {
        child.kill();
        let _ = child.wait();
        crate::pid1::children().remove(&(pid as i32));
        return;
    }

    let mut outputs = Vec::new();
    let stdin: Option<Box<dyn Write + Send>>;
    if let Some(m) = &master {
        let (Ok(r), Ok(w)) = (m.try_clone(), m.try_clone()) else {
            child.kill();
            return stream.fail(ErrorMsg::new(
                ErrorKind::Io,
                "cannot duplicate the PTY master",
            ));
        };
        let s2 = s.clone();
        outputs.extend(io_thread(move || pump(File::from(r), s2, Channel::Stdout)));
        stdin = Some(Box::new(File::from(w)));
    } else {
        if let Some(o) = child.stdout.take() {
            let s2 = s.clone();
            outputs.extend(io_thread(move || pump(o, s2, Channel::Stdout)));
        }
        if let Some(e) = child.stderr.take() {
            let s2 = s.clone();
            outputs.extend(io_thread(move || pump(e, s2, Channel::Stderr)));
        }
        stdin = child
            .stdin
            .take()
            .map(|w| Box::new(w) as Box<dyn Write + Send>);
    }

    // stdin is written on its own thread so a child that does not read cannot stop signals and
    // resizes from being handled; credit is returned only once bytes reached the child.
    let (in_tx, in_rx) = mpsc::channel::<(Vec<u8>, u32)>();
    let s_in = s.clone();
    let stdin_thread = io_thread(move || {
        let mut w = stdin;
        for (bytes, c) in in_rx {
            if w.as_mut()
                .is_some_and(|pipe| pipe.write_all(&bytes).is_err())
            {
                w = None; // child closed stdin; keep draining to return credit
            }
            s_in.consumed(c);
        }
    });
    let mut in_tx = Some(in_tx);

    let waker = stream.waker();
    let waiter = crate::pool::spawn(move || {
        let st = child.wait();
        crate::pid1::children().remove(&(child.id() as i32));
        let _ = waker.send(Inbound::ChildExited);
        st
    });
    let Ok(waiter) = waiter else {
        return stream.fail(ErrorMsg::new(
            ErrorKind::Internal,
            "cannot start the wait thread",
        ));
    };

    let pgid = pid as i32;
    loop {
        match stream.recv() {
            Inbound::Data(bytes, c) => match &in_tx {
                Some(tx) => {
                    let _ = tx.send((bytes, c));
                }
                None => stream.consumed(c),
            },
            Inbound::Eof(Channel::Data) => {
                // A PTY has no EOF of its own: send the terminal's EOF character (^D), which a
                // canonical-mode reader such as `cat` sees as end of input.
                if let (Some(tx), true) = (&in_tx, tty) {
                    let _ = tx.send((vec![4], 0));
                }
                in_tx = None;
            }
            Inbound::Eof(_) => {}
            Inbound::Msg(m, c) => {
                match m {
                    StreamMsg::Resize(size) => {
                        if let Some(m) = &master {
                            set_winsize(m, size);
                        }
                    }
                    // SAFETY: kill has no memory-safety preconditions.
                    StreamMsg::Signal { signal } => unsafe {
                        libc::kill(-pgid, signal);
                    },
                    _ => {}
                }
                stream.consumed(c);
            }
            Inbound::Reset | Inbound::ChildExited => break,
        }
    }
    drop(in_tx);
    let status = waiter.join().ok().and_then(|r| r.ok());
    stream.shared().pgid.store(0, Ordering::SeqCst);
    for t in outputs {
        let _ = t.join();
    }
    drop(master);
    if let Some(t) = stdin_thread {
        let _ = t.join();
    }
    if stream.is_cancelled() {
        return;
    }
    let exit = match status {
        Some(st) => match (st.code(), st.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            _ => ExitStatus::Code(-1),
        },
        None => {
            return stream.fail(ErrorMsg::new(
                ErrorKind::Internal,
                "waiting for the child failed",
            ));
        }
    };
    if s.msg(&StreamMsg::Exit(exit)).is_ok() {
        stream.finish();
    }
}

/// Every signal back to its default action (those the C library lets a program change; it
/// keeps two real-time signals for itself). A signal the agent ignores stays ignored across
/// exec: an agent launched where SIGINT and SIGQUIT are ignored (a background job, as POSIX
/// shells start one without job control) gave every command an ignored SIGINT, and Ctrl-C on
/// `cove exec` reached the command and did nothing. Handlers are reset by exec itself, and
/// std's spawn clears the signal mask.
///
/// Called between fork and exec: `signal` is async-signal-safe. Those that cannot be
/// changed (SIGKILL, SIGSTOP, the C library's own) refuse, which is fine.
fn reset_signal_dispositions() {
    for sig in 1..65 {
        // SAFETY: setting the default action has no memory-safety preconditions.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}
