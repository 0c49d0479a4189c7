//! Free disk space where cove writes.

use std::path::Path;

/// Bytes an unprivileged writer may still use on the filesystem holding `dir` (or its
/// nearest existing ancestor); `None` if that cannot be read.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(existing).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
