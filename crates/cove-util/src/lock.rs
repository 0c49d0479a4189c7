//! Exclusive file locks (`flock`) shared by everything that serializes work across processes:
//! a VM's supervisor, a kernel build directory, a network's files, a test cache.
//!
//! A lock belongs to the open file description: it is held for as long as any descriptor of
//! it is open (in this process or a child that inherited it) and released by the kernel when
//! the last one closes, so a holder that dies never leaves it behind and pid reuse cannot fool
//! it. Dropping the returned file only closes this process's descriptor; it never unlocks on
//! behalf of a child (which is how `cove start` hands a VM's lock to its supervisor).

use rustix::fs::{FlockOperation, flock};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens (creating, 0600) the lock file at `path` and waits until this process holds it.
pub fn exclusive(path: &Path) -> io::Result<File> {
    let file = open(path)?;
    flock(&file, FlockOperation::LockExclusive)?;
    Ok(file)
}

/// Opens (creating, 0600) the lock file at `path` and takes it without waiting: `Ok(None)`
/// when another open file description holds it.
pub fn try_exclusive(path: &Path) -> io::Result<Option<File>> {
    let file = open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_holder_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = exclusive(&path).unwrap();
        assert!(try_exclusive(&path).unwrap().is_none());
        drop(first);
        let second = try_exclusive(&path).unwrap();
        assert!(second.is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
