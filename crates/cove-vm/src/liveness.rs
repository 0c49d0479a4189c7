//! Is a VM's supervisor alive? Is its VMM?
//!
//! The supervisor holds an exclusive `flock` on the VM's lock file for its
//! whole life. A lock cannot be inherited by an unrelated process after a
//! crash and is released by the kernel when the holder dies, so testing it
//! is immune to pid reuse and needs no cooperation from the process.

use std::fs::File;
use std::io;
use std::path::Path;

/// Opens (creating) a VM's lock file and takes the lock without waiting; `Ok(None)` means
/// somebody else holds it. See [`cove_util::lock`] for who holds a lock and when it is released.
pub fn try_lock(path: &Path) -> io::Result<Option<File>> {
    cove_util::lock::try_exclusive(path)
}

/// True when a live process holds the lock at `path`.
pub fn is_locked(path: &Path) -> io::Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    // Taking and at once dropping the lock is harmless: a holder that
    // appears in between simply wins the race and is seen next time.
    Ok(try_lock(path)?.is_none())
}

/// True when `pid` exists and has not exited. A zombie (exited, not yet
/// reaped by its parent) counts as dead: its VM is gone.
pub fn process_running(pid: u32) -> bool {
    cove_util::process::alive(pid)
}

/// True when `pid` is running and its command line mentions `needle`
/// (a socket path unique to one VM), guarding against a reused pid.
pub fn process_matches(pid: u32, needle: &str) -> bool {
    process_running(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(needle))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_a_released_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        assert!(!is_locked(&path).unwrap());
        let held = try_lock(&path).unwrap().expect("free lock");
        assert!(is_locked(&path).unwrap());
        drop(held);
        assert!(!is_locked(&path).unwrap());
    }

    #[test]
    fn exited_children_are_dead_even_before_reaping() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait for the zombie state without reaping.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while process_running(pid) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!process_running(pid));
        child.wait().unwrap();
        assert!(process_running(std::process::id()));
    }
}
