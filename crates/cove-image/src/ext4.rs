//! The root filesystem image: `mkfs.ext4 -d` from a directory into a raw
//! file, labelled `cove-root`. Needs neither root nor a mount.

use crate::error::{ImageError, Result, io_err};
use crate::progress::Reporter;
use crate::util;
use std::path::Path;
use std::process::Command;

pub const ROOT_LABEL: &str = "cove-root";
const MIB: u64 = 1024 * 1024;

/// The size cove picks for a tree of `bytes` in `entries` files: the data
/// plus a quarter, a block per entry for inodes and directories, and 64 MiB
/// of free space, in whole 4 MiB.
pub fn auto_size(bytes: u64, entries: u64) -> u64 {
    let need = bytes + bytes / 4 + entries * 4096 + 64 * MIB;
    need.div_ceil(4 * MIB) * 4 * MIB
}

/// Builds `out` from `dir`; `size` in bytes (None: [`auto_size`]).
/// Returns the image size.
pub(crate) fn make_ext4(rep: &Reporter, dir: &Path, out: &Path, size: Option<u64>) -> Result<u64> {
    let (bytes, entries) = util::tree_size(dir)?;
    let minimum = bytes + bytes / 10 + entries * 4096 + 8 * MIB;
    let size = match size {
        Some(s) if s < minimum => {
            return Err(ImageError::TooSmall {
                needed_mib: minimum.div_ceil(MIB),
                size_mib: s / MIB,
            });
        }
        Some(s) => s.div_ceil(MIB) * MIB,
        None => auto_size(bytes, entries),
    };
    rep.message(&format!(
        "root filesystem: {} MiB of files in {entries} entries, image {} MiB",
        bytes / MIB,
        size / MIB
    ));
    let f = std::fs::File::create(out).map_err(io_err("cannot create", out))?;
    f.set_len(size).map_err(io_err("cannot size", out))?;
    drop(f);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args([
        "-q", "-F", "-t", "ext4", "-b", "4096", "-i", "8192", "-m", "0", "-L", ROOT_LABEL,
    ])
    .args(["-E", "root_owner=0:0"])
    .arg("-d")
    .arg(dir)
    .arg(out);
    util::run(rep, "mkfs.ext4", &mut cmd, "from the e2fsprogs package")?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_size_leaves_headroom_in_whole_4_mib() {
        let s = auto_size(100 * MIB, 1000);
        assert!(s >= 125 * MIB + 64 * MIB);
        assert_eq!(s % (4 * MIB), 0);
    }
}
