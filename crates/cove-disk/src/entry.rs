//! What `ls -l` shows about a file, for people and for `--json`.

use ext4_view::FileType;
use serde::Serialize;

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
