//! Free disk space where cove writes.

use std::path::Path;

/// Bytes an unprivileged writer may still use on the filesystem holding `dir` (or its
/// nearest existing ancestor); `None` if that cannot be read.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(existing).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `dir` (or, until it is made, its nearest existing ancestor) is on a tmpfs: memory,
/// not disk (guest RAM files belong there).
pub fn is_tmpfs(dir: &Path) -> bool {
    // TMPFS_MAGIC from linux/magic.h.
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    dir.ancestors()
        .find(|p| p.exists())
        .is_some_and(|p| rustix::fs::statfs(p).is_ok_and(|st| st.f_type as u64 == TMPFS_MAGIC))
}

/// The size of the filesystem holding `dir`; `None` if that cannot be read.
pub fn total_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_blocks.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_not_tmpfs_and_a_missing_dir_is_judged_by_where_it_will_be() {
        assert!(!is_tmpfs(Path::new("/proc")));
        assert!(!is_tmpfs(Path::new("/proc/no/such/dir")));
        assert_eq!(total_bytes(Path::new("/no/such/dir")), None);
    }
}
