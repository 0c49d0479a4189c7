//! Process hygiene for the VMM child.
//!
//! A VMM must never outlive the supervisor that owns its sockets and console
//! log (an orphan QEMU keeps the disk locked and the ports bound, while cove
//! reports the VM stopped), and must not receive the terminal's Ctrl-C meant
//! for the CLI.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Holds a spawned program until [`Gate::open`].
///
/// Why: the supervisor must record a VMM's pid before the VMM runs, or a
/// supervisor dying in between leaves a paused VMM whose pid is in no record,
/// so nothing adopts or kills it. A gated program runs only when the gate is
/// opened; if the gate is dropped unopened, or the process holding it dies,
/// the child exits with [`GATE_CLOSED_STATUS`] without ever running it.
///
/// How: the child is a `/bin/sh` that reads one byte from a pipe and then
/// `exec`s the program in place (same pid, so the pid recorded is the VMM's).
/// The wait cannot sit between fork and exec (`pre_exec`): the standard
/// library's spawn returns only once the child has exec'd.
#[derive(Debug)]
pub struct Gate {
    write: OwnedFd,
    /// The child's end, which the spawn duplicates; closed with the gate.
    _read: OwnedFd,
}

/// The status a gated child exits with when its gate closed unopened.
pub const GATE_CLOSED_STATUS: i32 = 127;

/// The fd the shim reads its go-ahead from.
const GATE_FD: i32 = 3;
/// `$0` is the program, `$@` its arguments; fd 3 is closed before the exec.
const SHIM: &str = "IFS= read -r _ <&3 || exit 127; exec 3<&-; exec \"$0\" \"$@\"";

impl Gate {
    /// Lets the program run.
    pub fn open(self) -> io::Result<()> {
        let line = *b"\n";
        // SAFETY: writes one byte from a live buffer to a pipe we own.
        let n = unsafe { libc::write(self.write.as_raw_fd(), line.as_ptr().cast(), 1) };
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Wraps `cmd` so that it runs only once the returned [`Gate`] opens (see
/// there). Environment and working directory carry over; the caller adds
/// stdio and process-group settings to the returned command.
pub fn gate(cmd: &Command) -> io::Result<(Command, Gate)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut shim = Command::new("/bin/sh");
    shim.arg("-c")
        .arg(SHIM)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => shim.env(key, v),
            None => shim.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        shim.current_dir(dir);
    }
    let read_fd = read.as_raw_fd();
    // SAFETY: between fork and exec only dup2 and fcntl run, both
    // async-signal-safe; they touch GATE_FD only.
    unsafe {
        shim.pre_exec(move || inherit_as(read_fd, GATE_FD));
    }
    Ok((shim, Gate { write, _read: read }))
}

/// True when process `pid` runs and its command line mentions `needle` (a
/// socket path unique to one VM): a backend's "is this VMM mine", immune to
/// pid reuse. A zombie's command line is empty, so it never matches.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

/// In a forked child: makes `fd` available as `target` across exec.
/// `dup2` onto itself is a no-op that keeps close-on-exec, so that case
/// clears the flag instead.
///
/// # Safety
/// Only for `pre_exec`: it must run in the child between fork and exec.
pub unsafe fn inherit_as(fd: i32, target: i32) -> io::Result<()> {
    // SAFETY: dup2 and fcntl are async-signal-safe and touch only `target`.
    let r = unsafe {
        if fd == target {
            libc::fcntl(target, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes `cmd` start in a process group of its own (so signals to the
/// caller's group, such as the terminal's SIGINT, do not reach it, and
/// [`kill_group`] reaches everything it starts) and receive SIGKILL when the
/// thread that spawned it exits.
///
/// PR_SET_PDEATHSIG fires when the spawning *thread* ends, not the process:
/// spawn from a thread that lives as long as the supervisor (the main thread
/// or a tokio runtime worker; not `spawn_blocking`, whose threads exit when
/// idle).
pub fn supervise(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl, getppid and _exit are; it
    // allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no
            // signal will ever come, so do not start an orphan VMM.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// Sends `signal` to every process of the group led by `pgid` (as created by
/// [`supervise`]). A group that is already gone is not an error.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid process group"))?;
    // SAFETY: killpg has no memory effects; pgid > 1 so this never targets
    // our own group (0) or every process (-1 / 1).
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn a_gated_child_runs_only_once_the_gate_opens() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = format!("touch {}", marker.display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let (mut cmd, gate) = gate(&cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        gate.open().unwrap();
        assert!(child.wait().unwrap().success());
        assert!(marker.exists());
    }

    /// A launcher that dies (or gives up) before opening the gate leaves no
    /// process behind: the child never execs.
    #[test]
    fn a_gated_child_whose_gate_closes_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = format!("touch {}", marker.display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let (mut cmd, gate) = gate(&cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        drop(gate);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(GATE_CLOSED_STATUS));
        assert!(!marker.exists());
    }

    #[test]
    fn child_gets_its_own_group() {
        let mut child = supervise(&mut Command::new("sleep"))
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // SAFETY: getpgid has no memory effects.
        let pgid = unsafe { libc::getpgid(pid) };
        assert_eq!(pgid, pid);
        kill_group(child.id(), libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        // Killing a gone group is fine.
        kill_group(child.id(), libc::SIGKILL).unwrap();
    }

    #[test]
    // The child is reaped below with waitpid, after its spawning thread ended.
    #[allow(clippy::zombie_processes)]
    fn child_dies_with_the_thread_that_spawned_it() {
        let pid = std::thread::spawn(|| {
            let child = supervise(&mut Command::new("sleep"))
                .arg("30")
                .spawn()
                .unwrap();
            child.id() as i32
        })
        .join()
        .unwrap();
        // The spawning thread is gone: the kernel sends SIGKILL; the zombie
        // is ours to reap, and waitpid on it returns once it died.
        let start = Instant::now();
        let mut status = 0;
        // SAFETY: status points to a live i32.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!alive(pid));
    }
}
