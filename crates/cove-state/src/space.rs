//! Running out of disk space, recognised wherever it surfaces. A full filesystem rarely says
//! so in words: SQLite in WAL mode reports it as an I/O error of its shared-memory file
//! (`SQLITE_IOERR_SHMMAP`), qemu-img and mkfs print their own messages. Commands that fail
//! this way are told apart by the error chain plus the free space left where cove writes.

use std::error::Error;

pub use cove_util::space::free_bytes;

/// Below this many free bytes a filesystem counts as full for cove: a VM's overlay, console
/// log and records need more than this to go on.
pub const LOW_SPACE: u64 = 64 << 20;

/// Whether an error in a chain is of the kind a full filesystem causes.
pub fn is_exhaustion(err: &(dyn Error + 'static)) -> bool {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        return matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
    }
    // A wrapper with `#[error(transparent)]` hides the `rusqlite::Error` itself from the chain
    // and shows only its source, SQLite's own error code: look for both.
    let sqlite = match err.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(failure, _)) => Some(failure),
        _ => err.downcast_ref::<rusqlite::ffi::Error>(),
    };
    if let Some(failure) = sqlite {
        return matches!(
            failure.code,
            rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure
        );
    }
    // External tools' output, carried as text.
    err.to_string().contains("No space left on device")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_filesystems_are_recognised_in_every_form_they_take() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_exhaustion(&enospc));
        let shm = rusqlite::ffi::Error::new(4874); // SQLITE_IOERR_SHMMAP
        assert!(is_exhaustion(&shm));
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(13), None);
        assert!(is_exhaustion(&full));
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        assert!(!is_exhaustion(&busy));
        assert!(!is_exhaustion(&std::io::Error::from_raw_os_error(
            libc::EACCES
        )));
    }
}
