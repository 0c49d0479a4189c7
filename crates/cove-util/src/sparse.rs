//! Copying disk and memory files, which are mostly holes.

use crate::tool::{self, ToolError};
use std::path::Path;
use std::process::Command;

/// Copies `from` to `to` keeping holes, sharing blocks where the filesystem can
/// (`--reflink=auto`). coreutils `cp` does both; std's copy does neither.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), ToolError> {
    tool::run(
        Command::new("cp")
            .args(["--sparse=always", "--reflink=auto", "--"])
            .arg(from)
            .arg(to),
        "apt-get install coreutils",
    )
    .map(drop)
}
