//! The ext4 filesystem on a [`DiskImage`], read with `ext4-view`.
//!
//! ext4-view reads lazily (superblock, group descriptors and journal at
//! load, then only the blocks a request touches) and replays a dirty journal
//! in memory, which is what a VM killed mid-write leaves behind.

use crate::error::{Error, Result};
use crate::image::DiskImage;
use ext4_view::{Ext4, Ext4Error, FileType, Metadata as ExtMetadata};
use serde::Serialize;
use std::io::{Read, Write};

/// The kind of an inode, as `ls -l` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    pub(crate) fn from_ext(t: FileType) -> FileKind {
        match t {
            FileType::Regular => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
        }
    }

    /// The first character of `ls -l` output.
    pub fn ls_char(self) -> char {
        match self {
            FileKind::File => '-',
            FileKind::Dir => 'd',
            FileKind::Symlink => 'l',
            FileKind::CharDevice => 'c',
            FileKind::BlockDevice => 'b',
            FileKind::Fifo => 'p',
            FileKind::Socket => 's',
        }
    }

    /// A word for messages ("a fifo").
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
        }
    }
}

/// What `ls -l` shows about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The last path component (lossy UTF-8; ext4 names are bytes).
    pub name: String,
    /// The absolute path inside the filesystem.
    pub path: String,
    pub kind: FileKind,
    /// Permission bits, `0o7777` at most.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes (the target's length for a symlink).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Where a symlink points, as stored (not resolved).
    pub symlink_target: Option<String>,
}

impl Entry {
    /// The mode as `ls -l` prints it, e.g. `-rwxr-x---` or `lrwxrwxrwx`.
    pub fn mode_string(&self) -> String {
        let m = self.mode;
        let bit = |mask: u16, c: char| if m & mask != 0 { c } else { '-' };
        let exec = |x: u16, s: u16, set: char, unset: char| match (m & x != 0, m & s != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        };
        [
            self.kind.ls_char(),
            bit(0o400, 'r'),
            bit(0o200, 'w'),
            exec(0o100, 0o4000, 's', 'S'),
            bit(0o040, 'r'),
            bit(0o020, 'w'),
            exec(0o010, 0o2000, 's', 'S'),
            bit(0o004, 'r'),
            bit(0o002, 'w'),
            exec(0o001, 0o1000, 't', 'T'),
        ]
        .iter()
        .collect()
    }
}

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
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// ext4 superblock: magic at 1024+56, incompatible features at 1024+96.
const SB_MAGIC_AT: u64 = 1024 + 56;
const SB_INCOMPAT_AT: u64 = 1024 + 96;
const EXT4_MAGIC: u16 = 0xef53;
const INCOMPAT_RECOVER: u32 = 0x4;

impl Fs {
    /// Loads the filesystem that starts at byte 0 of `disk`.
    pub fn open(disk: DiskImage) -> Result<Fs> {
        let label = format!("disk image {}", disk.path().display());
        // Looked at before ext4-view loads, to explain a failure well.
        let mut sb = [0u8; 4];
        let magic = disk
            .read_exact_at(&mut sb[..2], SB_MAGIC_AT)
            .map(|()| u16::from_le_bytes([sb[0], sb[1]]));
        if !matches!(magic, Ok(EXT4_MAGIC)) {
            return Err(Error::NoFilesystem {
                found: what_is_there(&disk),
                disk: label,
            });
        }
        let needs_recovery = disk
            .read_exact_at(&mut sb, SB_INCOMPAT_AT)
            .is_ok_and(|()| u32::from_le_bytes(sb) & INCOMPAT_RECOVER != 0);
        let ext4 = Ext4::load(Box::new(disk)).map_err(|e| match e {
            e @ (Ext4Error::Incompatible(_) | Ext4Error::Corrupt(_)) if needs_recovery => {
                Error::NeedsRecovery {
                    disk: label.clone(),
                    source: e,
                }
            }
            e => map_err(&label, "/", e),
        })?;
        Ok(Fs { ext4, label })
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
        let md = match self.ext4.metadata(path.as_str()) {
            Ok(md) => md,
            // A dangling symlink is listed as itself, as `ls` does.
            Err(Ext4Error::NotFound) => return Ok(vec![self.symlink_metadata(&path)?]),
            Err(e) => return Err(self.err(&path, e)),
        };
        if !md.is_dir() {
            return Ok(vec![self.symlink_metadata(&path)?]);
        }
        let mut out = Vec::new();
        let dir = self
            .ext4
            .read_dir(path.as_str())
            .map_err(|e| self.err(&path, e))?;
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
        let target = self
            .ext4
            .read_link(path.as_str())
            .map_err(|e| self.err(&path, e))?;
        Ok(String::from_utf8_lossy(target.as_ref()).into_owned())
    }

    pub(crate) fn ext4(&self) -> &Ext4 {
        &self.ext4
    }

    fn link_target(&self, path: &str, md: &ExtMetadata) -> Result<Option<String>> {
        if md.is_symlink() {
            self.read_link(path).map(Some)
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

/// A short guess at what is on a disk that has no ext4 superblock.
fn what_is_there(disk: &DiskImage) -> String {
    let mut sector = [0u8; 512];
    if disk.read_exact_at(&mut sector, 0).is_err() {
        return format!("the disk is only {} bytes", disk.size());
    }
    let mut gpt = [0u8; 8];
    if disk.read_exact_at(&mut gpt, 512).is_ok() && &gpt == b"EFI PART" {
        return "it has a GPT partition table; cove reads disks whose filesystem starts at byte 0 \
                (as `mkfs.ext4 -d` makes them)"
            .into();
    }
    if sector[510..512] == [0x55, 0xaa] {
        return "it has an MBR partition table or boot sector; cove reads disks whose filesystem \
                starts at byte 0"
            .into();
    }
    let mut probe = vec![0u8; 64 * 1024];
    let n = probe
        .len()
        .min(usize::try_from(disk.size()).unwrap_or(usize::MAX));
    if disk.read_exact_at(&mut probe[..n], 0).is_ok() && probe[..n].iter().all(|b| *b == 0) {
        return "its first 64 KiB are zeros (a blank disk the guest never formatted?)".into();
    }
    "no ext2/3/4 superblock at byte 1024 (a different filesystem, or not formatted)".into()
}
