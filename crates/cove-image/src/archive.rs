//! An initramfs archive assembled in memory and written as newc cpio with the
//! `cpio` crate. Entries are owned by root with mtime 0 so the same inputs
//! always give the same bytes (and nothing needs root to build it: the
//! `/dev/console` node is just a header).

use std::collections::BTreeSet;
use std::io::Write;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

enum Body {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Char { major: u32, minor: u32 },
}

struct Entry {
    path: String,
    mode: u32,
    body: Body,
}

/// The files of an archive; parent directories are added automatically.
#[derive(Default)]
pub struct Archive {
    entries: Vec<Entry>,
    dirs: BTreeSet<String>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.dir(&acc.clone(), 0o755);
        }
    }

    pub fn dir(&mut self, path: &str, mode: u32) {
        let path = clean(path);
        if path.is_empty() || self.dirs.contains(&path) {
            return;
        }
        self.parents(&path);
        self.dirs.insert(path.clone());
        self.entries.push(Entry {
            path,
            mode: S_IFDIR | (mode & 0o7777),
            body: Body::Dir,
        });
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = clean(path);
        self.parents(&path);
        self.entries.push(Entry {
            path,
            mode: S_IFREG | (mode & 0o7777),
            body: Body::File(data),
        });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = clean(path);
        self.parents(&path);
        self.entries.push(Entry {
            path,
            mode: S_IFLNK | 0o777,
            body: Body::Symlink(target.to_owned()),
        });
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let path = clean(path);
        self.parents(&path);
        self.entries.push(Entry {
            path,
            mode: S_IFCHR | (mode & 0o7777),
            body: Body::Char { major, minor },
        });
    }

    /// Writes the archive (entries in insertion order, then the trailer).
    pub fn write_to<W: Write>(&self, mut w: W) -> std::io::Result<W> {
        for (i, e) in self.entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let b = cpio::newc::Builder::new(&e.path)
                .ino(ino)
                .mode(e.mode)
                .uid(0)
                .gid(0)
                .mtime(0)
                .nlink(if matches!(e.body, Body::Dir) { 2 } else { 1 });
            let (b, data): (_, &[u8]) = match &e.body {
                Body::Dir => (b, &[]),
                Body::File(d) => (b, d),
                Body::Symlink(t) => (b, t.as_bytes()),
                Body::Char { major, minor } => (b.rdev_major(*major).rdev_minor(*minor), &[]),
            };
            let size = u32::try_from(data.len()).map_err(|_| {
                std::io::Error::other(format!("{} is over 4 GiB, too large for cpio", e.path))
            })?;
            let mut writer = b.write(w, size);
            writer.write_all(data)?;
            w = writer.finish()?;
        }
        cpio::newc::trailer(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"#!/bin/sh\necho hi\n".to_vec());
        a.symlink("/bin/sh", "busybox");
        a.file("lib/modules/virtio_blk.ko", 0o644, vec![7u8; 4097]);
        a.char_device("/dev/console", 0o600, 5, 1);
        a.write_to(Vec::new()).unwrap()
    }

    #[test]
    fn archive_reads_back_with_the_crate() {
        let mut data = &sample()[..];
        let mut seen = Vec::new();
        loop {
            let mut r = cpio::newc::Reader::new(data).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let name = r.entry().name().to_owned();
            let mode = r.entry().mode();
            let mut body = Vec::new();
            r.read_to_end(&mut body).unwrap();
            seen.push((name, mode, body));
            data = r.finish().unwrap();
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "init",
                "bin",
                "bin/sh",
                "lib",
                "lib/modules",
                "lib/modules/virtio_blk.ko",
                "dev",
                "dev/console"
            ]
        );
        assert_eq!(seen[0].2, b"#!/bin/sh\necho hi\n");
        assert_eq!(seen[0].1, 0o100755);
        assert_eq!(seen[2].2, b"busybox");
        assert_eq!(seen[5].2.len(), 4097);
        assert_eq!(seen[7].1, 0o020600);
    }

    #[test]
    fn archive_reads_back_with_cpio_tool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd.cpio");
        std::fs::write(&path, sample()).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .expect("the cpio tool is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("crw-------") && l.contains("dev/console")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{listing}"
        );
    }

    #[test]
    fn same_inputs_same_bytes() {
        assert_eq!(sample(), sample());
    }
}
