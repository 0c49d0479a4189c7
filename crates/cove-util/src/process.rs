//! Whether a process still runs, read from `/proc`, and whether this one runs as root.

/// A process's scheduler state letter from `/proc/PID/stat` (`R`, `S`, `T`, `Z`, …), or `None`
/// when there is no such process.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state is the first field after `(comm)`, and comm may itself hold spaces or `)`.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// True when `pid` exists and has not exited. A zombie (exited, not yet reaped by its parent)
/// counts as gone: whatever it did is over. Unlike `kill(pid, 0)` this needs no permission to
/// signal the process.
pub fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Whether this process runs as root (effective uid 0): cove then drops QEMU and passt to
/// identities of their own, builds Debian roots without fakeroot, and so on.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_exited_child_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie, which is not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while state(pid) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
