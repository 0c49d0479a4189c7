//! `get`: copy a file or a directory tree out of the image onto the host.
//!
//! Semantics follow `cp -r SRC DEST`: a DEST that is an existing directory
//! receives `DEST/<name of SRC>`, otherwise DEST becomes the copy. The
//! top-level SRC is resolved through symlinks (inside the image, never on the
//! host); symlinks inside a tree are recreated as symlinks, unresolved.
//! Device nodes, fifos and sockets are skipped and reported: creating them
//! needs root and they carry no data. Permission bits and mtimes are kept,
//! less setuid/setgid/sticky and group/world write
//! ([`cove_untrusted::host_mode`], the same rule as `cove cp`): the copy
//! belongs to the invoking user, not to the guest's owner. Files are created with `O_NOFOLLOW`, so a
//! symlink already in the destination is never written through.

use crate::bounds::MAX_DEPTH;
use crate::entry::FileKind;
use crate::error::{Error, Result};
use crate::fs::Fs;
use ext4_view::Metadata as ExtMetadata;
use serde::Serialize;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What a [`Fs::copy_out`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Where the copy of the source path itself was put.
    pub dest: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of regular file contents written.
    pub bytes: u64,
    /// Paths inside the image that were not copied, with the reason.
    pub skipped: Vec<String>,
}

fn host(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Host {
        path: path.to_path_buf(),
        source,
    }
}

impl Fs {
    /// Copies `path` (a file or a directory tree) to `dest` on the host.
    pub fn copy_out(&self, path: &str, dest: impl AsRef<Path>) -> Result<CopyReport> {
        let dest = dest.as_ref();
        let top = self.metadata(path)?;
        let src = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        // `cp -r SRC DIR/` puts SRC inside DIR.
        let target = match std::fs::metadata(dest) {
            Ok(m) if m.is_dir() => match src.trim_end_matches('/').rsplit('/').next() {
                Some(name) if !name.is_empty() => dest.join(name),
                // Copying "/" into an existing directory fills that directory.
                _ => dest.to_path_buf(),
            },
            _ => dest.to_path_buf(),
        };
        let mut report = CopyReport {
            dest: target.clone(),
            ..CopyReport::default()
        };
        let resolved = self
            .ext4()
            .canonicalize(src.as_str())
            .map_err(|e| crate::fs::map_err(self.label(), &src, e))?;
        let md = self
            .ext4()
            .metadata(&resolved)
            .map_err(|e| crate::fs::map_err(self.label(), &src, e))?;
        match top.kind {
            FileKind::Dir => self.copy_tree(&resolved, &md, &target, &mut report)?,
            FileKind::File => self.copy_file(&resolved, &md, &target, &mut report)?,
            other => {
                return Err(Error::SpecialFile {
                    disk: self.label().to_string(),
                    path: src,
                    kind: other.describe(),
                });
            }
        }
        Ok(report)
    }

    fn copy_file(
        &self,
        src: &ext4_view::PathBuf,
        md: &ExtMetadata,
        dest: &Path,
        report: &mut CopyReport,
    ) -> Result<()> {
        if let Ok(existing) = std::fs::symlink_metadata(dest)
            && !existing.is_file()
        {
            return Err(Error::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        // The source first: a crafted size fails before anything is created.
        let src_str = String::from_utf8_lossy(src.as_ref()).into_owned();
        let mut reader = self.open_file(&src_str)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dest)
            .map_err(host(dest))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.fill(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(host(dest))?;
            report.bytes += n as u64;
        }
        out.set_permissions(Permissions::from_mode(cove_untrusted::host_mode(
            u32::from(md.mode()),
        )))
        .map_err(host(dest))?;
        out.set_modified(mtime(md)).map_err(host(dest))?;
        report.files += 1;
        Ok(())
    }

    /// Copies a directory tree. The directories being filled are a stack on the heap, not
    /// recursion: a tree [`MAX_DEPTH`] deep must not overflow the thread's stack.
    fn copy_tree(
        &self,
        src: &ext4_view::PathBuf,
        md: &ExtMetadata,
        dest: &Path,
        report: &mut CopyReport,
    ) -> Result<()> {
        let mut walk = Walk::default();
        let mut open = vec![self.open_dir(src, md, dest, report, &mut walk, 1)?];
        while let Some(dir) = open.last_mut() {
            let Some(entry) = dir.entries.next() else {
                let done = open.pop().expect("the directory just read");
                close_dir(&done)?;
                continue;
            };
            let entry = entry.map_err(|e| crate::fs::map_err(self.label(), &dir.shown(), e))?;
            walk.count_entry(self, &dir.src)?;
            let name = entry.file_name();
            let name_bytes: &[u8] = name.as_ref();
            if name_bytes == b"." || name_bytes == b".." || name_bytes.contains(&b'/') {
                continue;
            }
            let child_src = entry.path();
            let child_str = String::from_utf8_lossy(child_src.as_ref()).into_owned();
            let child_dest = dir.dest.join(OsStr::from_bytes(name_bytes));
            let child_md = entry
                .metadata()
                .map_err(|e| crate::fs::map_err(self.label(), &child_str, e))?;
            match FileKind::from_ext(child_md.file_type()) {
                FileKind::Dir => {
                    let depth = open.len() + 1;
                    let child =
                        self.open_dir(&child_src, &child_md, &child_dest, report, &mut walk, depth)?;
                    open.push(child);
                }
                FileKind::File if child_md.len() > self.region_len() => {
                    report.skipped.push(format!(
                        "{child_str} (claims {} bytes, more than the whole disk: corrupt or crafted)",
                        child_md.len()
                    ))
                }
                FileKind::File => self.copy_file(&child_src, &child_md, &child_dest, report)?,
                FileKind::Symlink => {
                    let target = self
                        .ext4()
                        .read_link(&child_src)
                        .map_err(|e| crate::fs::map_err(self.label(), &child_str, e))?;
                    make_symlink(OsStr::from_bytes(target.as_ref()), &child_dest)?;
                    report.symlinks += 1;
                }
                other => report.skipped.push(format!(
                    "{child_str} (a {}; needs root to create)",
                    other.describe()
                )),
            }
        }
        Ok(())
    }

    /// Creates `dest` (or takes the directory already there) and starts reading `src`.
    fn open_dir(
        &self,
        src: &ext4_view::PathBuf,
        md: &ExtMetadata,
        dest: &Path,
        report: &mut CopyReport,
        walk: &mut Walk,
        depth: usize,
    ) -> Result<OpenDir> {
        walk.enter_dir(self, src, depth)?;
        match std::fs::create_dir(dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let existing = std::fs::symlink_metadata(dest).map_err(host(dest))?;
                if !existing.is_dir() {
                    return Err(Error::DestinationExists {
                        path: dest.to_path_buf(),
                    });
                }
            }
            Err(e) => return Err(host(dest)(e)),
        }
        // Writable while we fill it, whatever the guest's mode says.
        std::fs::set_permissions(dest, Permissions::from_mode(0o700)).map_err(host(dest))?;
        report.dirs += 1;
        let entries = self.ext4().read_dir(src).map_err(|e| {
            crate::fs::map_err(self.label(), &String::from_utf8_lossy(src.as_ref()), e)
        })?;
        Ok(OpenDir {
            src: src.clone(),
            md: md.clone(),
            dest: dest.to_path_buf(),
            entries,
        })
    }
}

/// A directory of the image being copied, and its copy on the host.
struct OpenDir {
    src: ext4_view::PathBuf,
    md: ExtMetadata,
    dest: PathBuf,
    entries: ext4_view::ReadDir,
}

impl OpenDir {
    fn shown(&self) -> String {
        String::from_utf8_lossy(self.src.as_ref()).into_owned()
    }
}

/// Gives a filled directory its mode (less what must not cross) and its mtime.
fn close_dir(dir: &OpenDir) -> Result<()> {
    let dest = dir.dest.as_path();
    std::fs::set_permissions(
        dest,
        Permissions::from_mode(cove_untrusted::host_mode(u32::from(dir.md.mode()))),
    )
    .map_err(host(dest))?;
    // A directory opened read-only still takes futimens from its owner.
    if let Ok(d) = File::open(dest) {
        d.set_modified(mtime(&dir.md)).map_err(host(dest))?;
    }
    Ok(())
}

/// How much of the tree a copy has walked, against what the filesystem can hold intact
/// ([`crate::bounds::TreeBudget`]): past it, a directory is linked in more than one place,
/// and the tree is a cycle or grows exponentially with its depth.
#[derive(Debug, Default)]
struct Walk {
    dirs: u64,
    entries: u64,
}

impl Walk {
    /// Counts `dir`, `depth` directories below and including the copy's top.
    fn enter_dir(&mut self, fs: &Fs, dir: &ext4_view::PathBuf, depth: usize) -> Result<()> {
        let budget = fs.tree_budget();
        self.dirs += 1;
        if depth > MAX_DEPTH {
            return Err(tree_loop(
                fs,
                dir,
                format!("is more than {MAX_DEPTH} directories deep (a directory cycle?)"),
            ));
        }
        if self.dirs > budget.dirs {
            return Err(tree_loop(fs, dir, linked_twice("directories", budget.dirs)));
        }
        Ok(())
    }

    fn count_entry(&mut self, fs: &Fs, dir: &ext4_view::PathBuf) -> Result<()> {
        let budget = fs.tree_budget();
        self.entries += 1;
        if self.entries > budget.entries {
            return Err(tree_loop(
                fs,
                dir,
                linked_twice("directory entries", budget.entries),
            ));
        }
        Ok(())
    }
}

fn linked_twice(what: &str, max: u64) -> String {
    format!(
        "takes the copy past {max} {what}, more than the filesystem can hold: a directory is \
         linked in more than one place (a directory cycle, or one directory linked many times)"
    )
}

fn tree_loop(fs: &Fs, dir: &ext4_view::PathBuf, what: String) -> Error {
    Error::TreeLoop {
        disk: fs.label().to_string(),
        path: String::from_utf8_lossy(dir.as_ref()).into_owned(),
        what,
    }
}

fn make_symlink(target: &OsStr, dest: &Path) -> Result<()> {
    match std::os::unix::fs::symlink(target, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = std::fs::symlink_metadata(dest).map_err(host(dest))?;
            if existing.is_dir() {
                return Err(Error::DestinationExists {
                    path: dest.to_path_buf(),
                });
            }
            std::fs::remove_file(dest).map_err(host(dest))?;
            std::os::unix::fs::symlink(target, dest).map_err(host(dest))
        }
        Err(e) => Err(host(dest)(e)),
    }
}

fn mtime(md: &ExtMetadata) -> SystemTime {
    let t = md.modified();
    let nanos = Duration::from_nanos(u64::from(t.nanoseconds()));
    match u64::try_from(t.seconds()) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(t.seconds().unsigned_abs()) + nanos,
    }
}
