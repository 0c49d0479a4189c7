//! How cove writes files it must keep private and durable: directories
//! 0700, files 0600 (other local users must not read a VM's disks, logs or
//! sockets), and renames that survive a host crash (the renamed file and
//! its directory entry both reach the disk before the rename is trusted).

use std::fs::{DirBuilder, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory cove creates for itself.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file cove creates for itself.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and missing parents 0700, and makes `dir` itself 0700 if
/// it already existed (an installation from before this rule).
pub fn private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.mode() & 0o777 != DIR_MODE {
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes an existing file (made by a tool such as qemu-img, which knows no
/// better) 0600.
pub fn make_private(file: &Path) -> io::Result<()> {
    std::fs::set_permissions(file, Permissions::from_mode(FILE_MODE))
}

/// fsyncs a file's data and metadata.
pub fn sync_file(file: &Path) -> io::Result<()> {
    File::open(file)?.sync_all()
}

/// fsyncs a directory, so the entries created, renamed or removed in it
/// are on disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` durably: `from` (a file or directory whose own
/// contents the caller already synced) is fsynced, renamed, and the
/// directory holding `to` fsynced, so after a host crash `to` is either
/// absent or complete.
pub fn durable_rename(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Like [`durable_rename`], but never replaces an existing `to`: returns
/// `Ok(false)` and leaves both files as they were when `to` exists (another
/// command made it first, and it may hold data). A hard link is the atomic
/// "create only if absent" for a whole file; `from` is removed once linked.
pub fn durable_rename_new(from: &Path, to: &Path) -> io::Result<bool> {
    File::open(from)?.sync_all()?;
    match std::fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    std::fs::remove_file(from)?;
    match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
        _ => sync_dir(Path::new("."))?,
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_name_is_published_and_an_existing_one_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, target) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("t"),
        );
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"second").unwrap();
        assert!(durable_rename_new(&a, &target).unwrap());
        assert!(!a.exists());
        assert!(!durable_rename_new(&b, &target).unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        assert!(
            b.exists(),
            "the loser's file is left for its maker to remove"
        );
    }

    #[test]
    fn private_dirs_are_0700_even_when_they_existed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir_all(&dir).unwrap();
        for d in [root.path().join("a"), dir.clone()] {
            assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        }
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        private_dir_all(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn durable_rename_moves_files_and_directories() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        durable_rename(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
        let (d, e) = (root.path().join("d"), root.path().join("e"));
        std::fs::create_dir(&d).unwrap();
        durable_rename(&d, &e).unwrap();
        assert!(e.is_dir() && !d.exists());
    }
}
