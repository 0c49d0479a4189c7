//! Process hygiene for the VMM child.
//!
//! A VMM must never outlive the supervisor that owns its sockets and console
//! log (an orphan QEMU keeps the disk locked and the ports bound, while cove
//! reports the VM stopped), and must not receive the terminal's Ctrl-C meant
//! for the CLI.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

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

    fn alive(pid: i32) -> bool {
        cove_util::process::alive(pid as u32)
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
        let mut status = 0;
        // SAFETY: status points to a live i32.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert!(!alive(pid));
    }
}
