//! The root filesystem image: `mkfs.ext4 -d` from a directory into a raw
//! file, labelled `cove-root`. Needs neither root nor a mount.

use crate::error::{ImageError, Result, io_err};
use crate::progress::Reporter;
use crate::util;
use std::path::Path;
use std::process::Command;

pub use cove_guest::ROOT_LABEL;
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

/// Owners wanted in the image, by path relative to the root (`etc/shadow`).
pub(crate) type Owners = std::collections::HashMap<String, (u32, u32)>;

/// Without root, `mkfs.ext4 -d` records the builder's uid/gid on every file
/// it copies. This rewrites those inodes in the image with debugfs: to the
/// owner `owners` names (read from a tarball's listing), else to root.
/// Does nothing when run as root, where the tree already has the right owners.
pub(crate) fn fix_owners(rep: &Reporter, tree: &Path, image: &Path, owners: &Owners) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (me, my_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if me == 0 {
        return Ok(());
    }
    let mut script = String::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let abs = tree.join(&rel);
        for e in std::fs::read_dir(&abs).map_err(io_err("cannot read directory", &abs))? {
            let e = e.map_err(io_err("cannot read directory", &abs))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta =
                std::fs::symlink_metadata(e.path()).map_err(io_err("cannot stat", e.path()))?;
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let (uid, gid) = owners.get(&path).copied().unwrap_or((0, 0));
            let (have_uid, have_gid) = (meta.uid(), meta.gid());
            let quoted = format!("\"/{}\"", path.replace('"', "\\\""));
            if have_uid != uid && (have_uid == me || owners.contains_key(&path)) {
                script.push_str(&format!("sif {quoted} uid {uid}\n"));
            }
            if have_gid != gid && (have_gid == my_gid || owners.contains_key(&path)) {
                script.push_str(&format!("sif {quoted} gid {gid}\n"));
            }
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    let file = image.with_extension("owners");
    util::write_file(&file, &script)?;
    let mut cmd = Command::new("debugfs");
    cmd.arg("-w").arg("-f").arg(&file).arg(image);
    let r = util::run(
        rep,
        "set file owners (debugfs)",
        &mut cmd,
        "from the e2fsprogs package",
    );
    let _ = std::fs::remove_file(&file);
    r.map(|_| ())
}

/// The owners recorded in a tarball, from `tar --numeric-owner -tvf`.
pub(crate) fn tarball_owners(rep: &Reporter, tarball: &Path) -> Result<Owners> {
    let mut cmd = Command::new("tar");
    cmd.args(["--numeric-owner", "-tvf"]).arg(tarball);
    let out = util::run(rep, "list tarball owners", &mut cmd, "tar")?;
    Ok(parse_tar_listing(&out))
}

fn parse_tar_listing(listing: &str) -> Owners {
    let mut owners = Owners::new();
    for line in listing.lines() {
        // perms uid/gid size date time name[ -> target]
        let mut fields = Vec::new();
        let mut rest = line;
        for _ in 0..5 {
            let trimmed = rest.trim_start();
            let end = trimmed.find(' ').unwrap_or(trimmed.len());
            fields.push(&trimmed[..end]);
            rest = &trimmed[end..];
        }
        let name = rest.trim_start();
        let name = name.split(" -> ").next().unwrap_or(name);
        let name = name.split(" link to ").next().unwrap_or(name);
        let Some((uid, gid)) = fields.get(1).and_then(|o| o.split_once('/')) else {
            continue;
        };
        let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) else {
            continue;
        };
        let name = name.trim_start_matches("./").trim_end_matches('/');
        if !name.is_empty() && name != "." {
            owners.insert(name.to_owned(), (uid, gid));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_listing_owners() {
        let o = parse_tar_listing(
            "drwxr-xr-x 0/0               0 2024-05-01 10:00 ./\n\
             -rw-r----- 0/42            123 2024-05-01 10:00 ./etc/shadow\n\
             drwxr-xr-x 100/102           0 2024-05-01 10:00 ./var/lib/postgresql/\n\
             lrwxrwxrwx 0/0               0 2024-05-01 10:00 ./etc/os-release -> ../usr/lib/os-release\n",
        );
        assert_eq!(o.get("etc/shadow"), Some(&(0, 42)));
        assert_eq!(o.get("var/lib/postgresql"), Some(&(100, 102)));
        assert_eq!(o.get("etc/os-release"), Some(&(0, 0)));
        assert!(!o.contains_key(""));
    }

    #[test]
    fn auto_size_leaves_headroom_in_whole_4_mib() {
        let s = auto_size(100 * MIB, 1000);
        assert!(s >= 125 * MIB + 64 * MIB);
        assert_eq!(s % (4 * MIB), 0);
    }
}
