//! A command that failed because a filesystem cove writes to is full says so, and what to do:
//! the error itself often names only a symptom (SQLite's "disk I/O error", a tool's exit code).

use cove_state::{Paths, space};

/// The hint to print under `err`, when it is of the kind a full filesystem causes and one of
/// cove's directories is on a filesystem that is (nearly) full.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    if !err.chain().any(space::is_exhaustion) {
        return None;
    }
    let paths = Paths::from_env().ok()?;
    [
        ("state", &paths.state),
        ("runtime", &paths.runtime),
        ("cache", &paths.cache),
        ("data", &paths.data),
    ]
    .into_iter()
    .find_map(|(what, dir)| {
        let free = space::free_bytes(dir)?;
        (free < space::LOW_SPACE).then(|| {
            format!(
                "no space left: the filesystem holding cove's {what} directory {} has {} KiB \
                 free; free some space there and run the command again (what was recorded \
                 before is intact)",
                dir.display(),
                free >> 10
            )
        })
    })
}
