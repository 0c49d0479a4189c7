//! The ext4 filesystem on a [`DiskImage`], read with `ext4-view`.
//!
//! ext4-view reads lazily (superblock, group descriptors and journal at
//! load, then only the blocks a request touches) and replays a dirty journal
//! in memory, which is what a VM killed mid-write leaves behind.

use crate::bounds::TreeBudget;
use crate::entry::{Entry, FileKind};
use crate::error::{Error, Result};
use crate::image::DiskImage;
use crate::partition::{self, Partition};
use ext4_view::{Ext4, Ext4Error, Metadata as ExtMetadata};
use std::io::{Read, Write};

/// A read-only ext2/3/4 filesystem on a virtual disk.
///
/// ```no_run
/// let disk = cove_disk::DiskImage::open("root.qcow2")?;
/// let fs = cove_disk::Fs::open(disk)?.with_label("VM web's disk");
/// fs.read_to("/var/log/init.log", &mut std::io::stdout().lock())?;
/// # Ok::<(), cove_disk::Error>(())
/// ```
pub struct Fs {
    ext4: Ext4,
    label: String,
    partition: Option<Partition>,
    /// Bytes of the region the filesystem lives in: no file can be larger.
    region_len: u64,
    /// The most a walk of the whole tree can meet on this filesystem intact.
    tree_budget: TreeBudget,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The longest symlink target Linux writes: PATH_MAX less its terminating NUL.
const MAX_LINK_TARGET: u64 = 4095;

/// ext4 superblock: magic at 1024+56, incompatible features at 1024+96.
const SB_MAGIC_AT: u64 = 1024 + 56;
const SB_INCOMPAT_AT: u64 = 1024 + 96;
const EXT4_MAGIC: u16 = 0xef53;
const INCOMPAT_RECOVER: u32 = 0x4;

impl Fs {
    /// Loads the filesystem of `disk`: the one at byte 0 (as `mkfs.ext4 -d`
    /// makes root disks), else the only partition that holds one.
    pub fn open(disk: DiskImage) -> Result<Fs> {
        let label = format!("disk image {}", disk.path().display());
        if has_ext4_at(&disk, 0) {
            return Fs::load(disk, None, label);
        }
        let parts = partition::partitions(&disk);
        let with_fs: Vec<&Partition> = parts
            .iter()
            .filter(|p| has_ext4_at(&disk, p.start))
            .collect();
        match with_fs.as_slice() {
            [one] => {
                let one = (*one).clone();
                Fs::load(disk, Some(one), label)
            }
            [] => Err(Error::NoFilesystem {
                found: what_is_there(&disk, &parts),
                disk: label,
            }),
            many => Err(Error::AmbiguousPartitions {
                disk: label,
                partitions: many
                    .iter()
                    .map(|p| p.index.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Loads the filesystem in partition `index` (1-based, as in `vdb1`).
    pub fn open_partition(disk: DiskImage, index: usize) -> Result<Fs> {
        let label = format!("disk image {}", disk.path().display());
        let parts = partition::partitions(&disk);
        let Some(part) = parts.iter().find(|p| p.index == index).cloned() else {
            let have: Vec<String> = parts.iter().map(|p| p.index.to_string()).collect();
            return Err(Error::NoSuchPartition {
                disk: label,
                index,
                have: if have.is_empty() {
                    "no partition table".into()
                } else {
                    have.join(", ")
                },
            });
        };
        if !has_ext4_at(&disk, part.start) {
            return Err(Error::NoFilesystem {
                found: format!("partition {index} holds no ext2/3/4 superblock"),
                disk: label,
            });
        }
        Fs::load(disk, Some(part), label)
    }

    fn load(disk: DiskImage, part: Option<Partition>, label: String) -> Result<Fs> {
        let (start, len) = part.as_ref().map_or((0, disk.size()), |p| (p.start, p.len));
        // Looked at before ext4-view loads, to explain a failure well.
        let mut sb = [0u8; 4];
        let needs_recovery = disk
            .read_exact_at(&mut sb, start + SB_INCOMPAT_AT)
            .is_ok_and(|()| u32::from_le_bytes(sb) & INCOMPAT_RECOVER != 0);
        let tree_budget = crate::bounds::check_superblock(&disk, start, len, &label)?;
        let region = Region { disk, start, len };
        let ext4 = Ext4::load(Box::new(region)).map_err(|e| match e {
            e @ (Ext4Error::Incompatible(_) | Ext4Error::Corrupt(_)) if needs_recovery => {
                Error::NeedsRecovery {
                    disk: label.clone(),
                    source: e,
                }
            }
            e => map_err(&label, "/", e),
        })?;
        Ok(Fs {
            ext4,
            label,
            partition: part,
            region_len: len,
            tree_budget,
        })
    }

    /// The partition the filesystem was found in, if the disk has a table.
    pub fn partition(&self) -> Option<&Partition> {
        self.partition.as_ref()
    }

    /// Names the disk in error messages, e.g. `VM web's disk`.
    pub fn with_label(mut self, label: impl Into<String>) -> Fs {
        self.label = label.into();
        self
    }

    /// The name used in error messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn err(&self, path: &str, e: Ext4Error) -> Error {
        map_err(&self.label, path, e)
    }

    /// Metadata of `path`, following symlinks (like `stat`).
    pub fn metadata(&self, path: &str) -> Result<Entry> {
        let path = absolute(path);
        let md = self
            .ext4
            .metadata(path.as_str())
            .map_err(|e| self.err(&path, e))?;
        Ok(self.entry(&path, &md, None))
    }

    /// Metadata of `path` itself, not following a final symlink (like `lstat`).
    pub fn symlink_metadata(&self, path: &str) -> Result<Entry> {
        let path = absolute(path);
        let md = self
            .ext4
            .symlink_metadata(path.as_str())
            .map_err(|e| self.err(&path, e))?;
        let target = self.link_target(&path, &md)?;
        Ok(self.entry(&path, &md, target))
    }

    /// Like `ls -la`: the entries of a directory (without `.` and `..`),
    /// sorted by name; for any other path, that one entry. Symlinks are not
    /// followed for the listed entries, only on the way to the directory.
    pub fn list(&self, path: &str) -> Result<Vec<Entry>> {
        let path = absolute(path);
        // One resolution of the path: `read_dir` refuses anything but a directory, and a
        // file or a dangling symlink is then listed as itself, as `ls` does. Where the path
        // itself is broken, `symlink_metadata` meets the same error and returns it.
        let dir = match self.ext4.read_dir(path.as_str()) {
            Ok(dir) => dir,
            Err(Ext4Error::NotADirectory | Ext4Error::NotFound) => {
                return Ok(vec![self.symlink_metadata(&path)?]);
            }
            Err(e) => return Err(self.err(&path, e)),
        };
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.err(&path, e))?;
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            let child = String::from_utf8_lossy(entry.path().as_ref()).into_owned();
            let md = entry.metadata().map_err(|e| self.err(&child, e))?;
            let target = self.link_target(&child, &md)?;
            out.push(self.entry(&child, &md, target));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Streams the contents of `path` (following symlinks) into `out`,
    /// 64 KiB at a time; returns the number of bytes written.
    pub fn read_to(&self, path: &str, out: &mut impl Write) -> Result<u64> {
        let mut reader = self.open_file(path)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.fill(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n]).map_err(|source| Error::Host {
                path: "the output stream".into(),
                source,
            })?;
            total += n as u64;
        }
    }

    /// Opens a regular file (following symlinks) for streaming reads.
    pub fn open_file(&self, path: &str) -> Result<FileReader<'_>> {
        let path = absolute(path);
        let md = self
            .ext4
            .metadata(path.as_str())
            .map_err(|e| self.err(&path, e))?;
        let kind = FileKind::from_ext(md.file_type());
        match kind {
            FileKind::Dir => {
                return Err(Error::IsADirectory {
                    disk: self.label.clone(),
                    path,
                });
            }
            FileKind::File if md.len() > self.region_len => {
                return Err(Error::ImplausibleSize {
                    disk: self.label.clone(),
                    path,
                    size: md.len(),
                    disk_size: self.region_len,
                });
            }
            FileKind::File => {}
            other => {
                return Err(Error::SpecialFile {
                    disk: self.label.clone(),
                    path,
                    kind: other.describe(),
                });
            }
        }
        let file = self
            .ext4
            .open(path.as_str())
            .map_err(|e| self.err(&path, e))?;
        Ok(FileReader {
            fs: self,
            path,
            file,
        })
    }

    /// Where the symlink at `path` points, as stored.
    pub fn read_link(&self, path: &str) -> Result<String> {
        let path = absolute(path);
        let md = self
            .ext4
            .symlink_metadata(path.as_str())
            .map_err(|e| self.err(&path, e))?;
        self.read_link_of(&path, &md)
    }

    /// `read_link` of a path whose metadata is at hand. ext4-view reads a target by the size
    /// its inode claims, so a crafted size is refused first (found by fuzzing: a 3 GB
    /// allocation from `cove disk ls`).
    fn read_link_of(&self, path: &str, md: &ExtMetadata) -> Result<String> {
        if md.is_symlink() && md.len() > MAX_LINK_TARGET {
            return Err(Error::ImplausibleLink {
                disk: self.label.clone(),
                path: path.to_owned(),
                size: md.len(),
                max: MAX_LINK_TARGET,
            });
        }
        let target = self.ext4.read_link(path).map_err(|e| self.err(path, e))?;
        Ok(String::from_utf8_lossy(target.as_ref()).into_owned())
    }

    pub(crate) fn region_len(&self) -> u64 {
        self.region_len
    }

    pub(crate) fn tree_budget(&self) -> TreeBudget {
        self.tree_budget
    }

    pub(crate) fn ext4(&self) -> &Ext4 {
        &self.ext4
    }

    fn link_target(&self, path: &str, md: &ExtMetadata) -> Result<Option<String>> {
        if md.is_symlink() {
            self.read_link_of(path, md).map(Some)
        } else {
            Ok(None)
        }
    }

    fn entry(&self, path: &str, md: &ExtMetadata, symlink_target: Option<String>) -> Entry {
        let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("/");
        let mtime = md.modified();
        Entry {
            name: name.to_string(),
            path: path.to_string(),
            kind: FileKind::from_ext(md.file_type()),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.len(),
            mtime: mtime.seconds(),
            mtime_nsec: mtime.nanoseconds(),
            symlink_target,
        }
    }
}

/// A regular file being read; implements [`Read`].
pub struct FileReader<'a> {
    fs: &'a Fs,
    path: String,
    file: ext4_view::File,
}

impl FileReader<'_> {
    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.file.metadata().len()
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills as much of `buf` as the file has left (ext4-view hands out at
    /// most one filesystem block per call); returns 0 at the end.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.file.read_bytes(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(self.fs.err(&self.path, e)),
            }
        }
        Ok(n)
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.fill(buf).map_err(std::io::Error::other)
    }
}

/// ext4-view wants absolute paths; a relative one is taken from `/`.
fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

pub(crate) fn map_err(disk: &str, path: &str, e: Ext4Error) -> Error {
    let disk = disk.to_string();
    let path = path.to_string();
    match e {
        Ext4Error::NotFound => Error::NotFound { disk, path },
        Ext4Error::IsADirectory => Error::IsADirectory { disk, path },
        Ext4Error::NotADirectory => Error::NotADirectory { disk, path },
        Ext4Error::IsASpecialFile => Error::SpecialFile {
            disk,
            path,
            kind: "special file",
        },
        Ext4Error::TooManySymlinks => Error::TooManySymlinks { disk, path },
        Ext4Error::Encrypted => Error::EncryptedFile { disk, path },
        e @ (Ext4Error::MalformedPath | Ext4Error::PathTooLong | Ext4Error::NotAbsolute) => {
            Error::BadPath {
                disk,
                path,
                reason: e.to_string(),
            }
        }
        Ext4Error::Io(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Fs {
                disk,
                path,
                source: Ext4Error::Io(other),
            },
        },
        e @ Ext4Error::Incompatible(_) => Error::UnsupportedFilesystem { disk, source: e },
        e @ Ext4Error::Corrupt(_) => Error::CorruptFilesystem { disk, source: e },
        e => Error::Fs {
            disk,
            path,
            source: e,
        },
    }
}

fn has_ext4_at(disk: &DiskImage, start: u64) -> bool {
    let mut magic = [0u8; 2];
    disk.read_exact_at(&mut magic, start + SB_MAGIC_AT).is_ok()
        && u16::from_le_bytes(magic) == EXT4_MAGIC
}

/// A window of the virtual disk (the whole disk, or one partition) that
/// ext4-view reads from as if it started at byte 0.
struct Region {
    disk: DiskImage,
    start: u64,
    len: u64,
}

impl ext4_view::Ext4Read for Region {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte.checked_add(dst.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            let e = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {start_byte} runs past the filesystem's {} bytes",
                    dst.len(),
                    self.len
                ),
            );
            return Err(Box::new(e));
        }
        // Our own error type, boxed, so `map_err` can downcast it back.
        self.disk
            .read_exact_at(dst, self.start + start_byte)
            .map_err(|e| Box::new(e).into())
    }
}

/// A short guess at what is on a disk that has no ext4 superblock.
fn what_is_there(disk: &DiskImage, parts: &[Partition]) -> String {
    if !parts.is_empty() {
        return format!(
            "none of its {} {} partitions holds one",
            parts.len(),
            parts[0].table.to_uppercase()
        );
    }
    let mut sector = [0u8; 512];
    if disk.read_exact_at(&mut sector, 0).is_err() {
        return format!("the disk is only {} bytes", disk.size());
    }
    let mut probe = vec![0u8; 64 * 1024];
    let n = probe
        .len()
        .min(usize::try_from(disk.size()).unwrap_or(usize::MAX));
    if disk.read_exact_at(&mut probe[..n], 0).is_ok() && probe[..n].iter().all(|b| *b == 0) {
        return "its first 64 KiB are zeros (a blank disk the guest never formatted?)".into();
    }
    "no ext2/3/4 superblock at byte 1024 and no partition table (a different filesystem, or not formatted)".into()
}
