//! Guest setup the agent does itself. As PID 1 (a test image may boot it as init) it mounts the
//! pseudo file systems it needs and reaps orphans without stealing the exit status of its own
//! children; in any minimal guest it mounts devpts the first time a PTY is needed.

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::log;

/// Pids the agent waits for itself. Held locked across a spawn, so the reaper cannot reap a
/// child that exits before it is registered.
fn own() -> &'static Mutex<HashSet<i32>> {
    static OWN: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    OWN.get_or_init(|| Mutex::new(HashSet::new()))
}

pub fn children() -> MutexGuard<'static, HashSet<i32>> {
    own().lock().unwrap_or_else(|p| p.into_inner())
}

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (Ok(s), Ok(t), Ok(f)) = (
        CString::new(src),
        CString::new(target),
        CString::new(fstype),
    ) else {
        return;
    };
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            log(&format!("mount {fstype} on {target}: {e}"));
        }
    }
}

/// Does the PID 1 duties if this process is PID 1; otherwise nothing.
pub fn setup_if_init() {
    if std::process::id() != 1 {
        return;
    }
    log("running as PID 1: mounting /proc, /sys, /dev and reaping orphans");
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    let _ = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(reap_orphans);
}

fn reap_orphans() {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-buffer for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into `info`; WNOWAIT leaves the child waitable.
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc != 0 {
            // ECHILD: no children at all right now. Nothing can signal "a child appeared", so
            // look again shortly.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // SAFETY: waitid filled a SIGCHLD siginfo, for which si_pid is the valid field.
        let pid = unsafe { info.si_pid() };
        if children().contains(&pid) {
            // One of ours: its own waiter thread collects the status.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        // SAFETY: reaping a specific exited orphan; a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// Makes PTYs work in a minimal guest whose init mounted neither devtmpfs nor devpts: mounts
/// devpts on /dev/pts and provides /dev/ptmx. Runs once; failures surface later as the openpty
/// error, which names the missing piece.
pub fn ensure_pty_support() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let ptmx = std::path::Path::new("/dev/ptmx");
        let pts_mounted = std::fs::read_to_string("/proc/mounts")
            .map(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some("/dev/pts"))
            })
            .unwrap_or(true);
        if !pts_mounted {
            let _ = std::fs::create_dir_all("/dev/pts");
            let opts = CString::new("mode=0620,ptmxmode=0666").unwrap_or_default();
            let (s, t, f) = (c"devpts", c"/dev/pts", c"devpts");
            // SAFETY: valid NUL-terminated strings for the call's duration.
            let rc =
                unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, opts.as_ptr().cast()) };
            if rc == 0 {
                log("mounted devpts on /dev/pts for PTY support");
            } else {
                log(&format!(
                    "cannot mount devpts on /dev/pts: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if !ptmx.exists() {
            if let Err(e) = std::os::unix::fs::symlink("pts/ptmx", ptmx) {
                log(&format!("cannot create /dev/ptmx: {e}"));
            }
        }
    });
}
