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
            FileKind::Dir => {
                let mut ancestors = Vec::new();
                self.copy_dir(&resolved, &md, &target, &mut report, &mut ancestors)?
            }
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

    fn copy_dir(
        &self,
        src: &ext4_view::PathBuf,
        md: &ExtMetadata,
        dest: &Path,
        report: &mut CopyReport,
        ancestors: &mut Vec<(ExtMetadata, ext4_view::PathBuf)>,
    ) -> Result<()> {
        self.check_not_a_loop(src, md, ancestors)?;
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
        let label = self.label().to_string();
        let src_str = String::from_utf8_lossy(src.as_ref()).into_owned();
        let entries = self
            .ext4()
            .read_dir(src)
            .map_err(|e| crate::fs::map_err(&label, &src_str, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| crate::fs::map_err(&label, &src_str, e))?;
            let name = entry.file_name();
            let name_bytes: &[u8] = name.as_ref();
            if name_bytes == b"." || name_bytes == b".." || name_bytes.contains(&b'/') {
                continue;
            }
            let child_src = entry.path();
            let child_str = String::from_utf8_lossy(child_src.as_ref()).into_owned();
            let child_dest = dest.join(OsStr::from_bytes(name_bytes));
            let child_md = entry
                .metadata()
                .map_err(|e| crate::fs::map_err(&label, &child_str, e))?;
            match FileKind::from_ext(child_md.file_type()) {
                FileKind::Dir => {
                    ancestors.push((md.clone(), src.clone()));
                    let r = self.copy_dir(&child_src, &child_md, &child_dest, report, ancestors);
                    ancestors.pop();
                    r?
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
                        .map_err(|e| crate::fs::map_err(&label, &child_str, e))?;
                    make_symlink(OsStr::from_bytes(target.as_ref()), &child_dest)?;
                    report.symlinks += 1;
                }
                other => report.skipped.push(format!(
                    "{child_str} (a {}; needs root to create)",
                    other.describe()
                )),
            }
        }
        std::fs::set_permissions(
            dest,
            Permissions::from_mode(cove_untrusted::host_mode(u32::from(md.mode()))),
        )
        .map_err(host(dest))?;
        // A directory opened read-only still takes futimens from its owner.
        if let Ok(dir) = File::open(dest) {
            dir.set_modified(mtime(md)).map_err(host(dest))?;
        }
        Ok(())
    }
}

impl Fs {
    /// Refuses a directory that is one of its own ancestors (a hard-linked directory in a
    /// crafted image makes the tree infinite) and trees deeper than [`MAX_DEPTH`]. ext4-view
    /// does not expose inode numbers, so "the same directory" is: equal metadata (times to the
    /// nanosecond, mode, owner, size) and the same entry names.
    fn check_not_a_loop(
        &self,
        src: &ext4_view::PathBuf,
        md: &ExtMetadata,
        ancestors: &[(ExtMetadata, ext4_view::PathBuf)],
    ) -> Result<()> {
        let path = || String::from_utf8_lossy(src.as_ref()).into_owned();
        if ancestors.len() >= MAX_DEPTH {
            return Err(Error::TreeLoop {
                disk: self.label().to_string(),
                path: path(),
                what: format!("is more than {MAX_DEPTH} directories deep"),
            });
        }
        for (amd, apath) in ancestors {
            if amd == md && self.names(apath)? == self.names(src)? {
                return Err(Error::TreeLoop {
                    disk: self.label().to_string(),
                    path: path(),
                    what: format!(
                        "is the directory {} again (a directory cycle)",
                        String::from_utf8_lossy(apath.as_ref())
                    ),
                });
            }
        }
        Ok(())
    }

    fn names(&self, dir: &ext4_view::PathBuf) -> Result<Vec<Vec<u8>>> {
        let label = self.label().to_string();
        let shown = || String::from_utf8_lossy(dir.as_ref()).into_owned();
        let mut out = Vec::new();
        for e in self
            .ext4()
            .read_dir(dir)
            .map_err(|e| crate::fs::map_err(&label, &shown(), e))?
        {
            let e = e.map_err(|e| crate::fs::map_err(&label, &shown(), e))?;
            let name = e.file_name();
            let bytes: &[u8] = name.as_ref();
            out.push(bytes.to_vec());
        }
        out.sort();
        Ok(out)
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
