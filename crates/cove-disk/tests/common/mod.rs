//! Builds real disk images with the real tools (mkfs.ext4, debugfs,
//! qemu-img, qemu-io), so that every test reads what QEMU itself wrote.
#![allow(dead_code)] // each test binary uses a different subset

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command in `dir`, panicking with its stderr (and the package that
/// provides it) if it fails.
pub fn run(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {prog} ({e}); install qemu-utils and e2fsprogs (apt-get install qemu-utils e2fsprogs)")
        });
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic bytes that do not compress to nothing (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub const BIG_LEN: usize = 5 * 1024 * 1024;
pub const INIT_LOG: &str = "init: starting postgres\nFATAL: could not create shared memory segment: Function not implemented\nDETAIL: Failed system call was shmget(key=2, size=56, 03600)\n";
/// 2021-03-04 05:06:07 UTC.
pub const MTIME: i64 = 1_614_834_367;

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A guest-like tree: nested dirs, modes, symlinks, a 5 MiB file, a fifo.
pub fn make_tree(root: &Path) {
    let w = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        set_mode(&p, mode);
    };
    w("etc/hostname", b"pg-vm\n", 0o644);
    w("etc/app/config.toml", b"[db]\nport = 5432\n", 0o640);
    w("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    w("var/log/init.log", INIT_LOG.as_bytes(), 0o600);
    w("data/big.bin", &pseudo_random(BIG_LEN, 42), 0o644);
    w("secret/key", b"k3y\n", 0o400);
    w(
        "changed.txt",
        b"old contents of changed.txt, base version\n",
        0o644,
    );
    set_mode(&root.join("secret"), 0o700);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("init.log", root.join("var/log/latest")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/hostname-link")).unwrap();
    std::os::unix::fs::symlink("/etc/app", root.join("app-dir")).unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.join("dangling")).unwrap();
    run(root, "mkfifo", &["run-fifo"]);
    run(
        root,
        "touch",
        &[
            "-h",
            "-d",
            "@1614834367",
            "var/log/init.log",
            "etc/hostname",
            "usr/bin/tool",
        ],
    );
}

/// The fixture most tests share: a raw ext4 base built with `mkfs.ext4 -d`
/// and a qcow2 overlay over it whose allocated clusters hold a changed file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub tree: PathBuf,
    pub base: PathBuf,
    pub overlay: PathBuf,
}

pub const NEW_CHANGED: &[u8] = b"NEW contents of changed.txt, written into the overlay\n";

impl Fixture {
    pub fn new(disk_size: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tree = d.join("tree");
        make_tree(&tree);
        run(
            d,
            "mkfs.ext4",
            &[
                "-q", "-F", "-d", "tree", "-b", "4096", "base.raw", disk_size,
            ],
        );
        // A copy of the base with one file replaced, made by debugfs on the raw copy.
        std::fs::copy(d.join("base.raw"), d.join("mod.raw")).unwrap();
        std::fs::write(d.join("new.txt"), NEW_CHANGED).unwrap();
        run(d, "debugfs", &["-w", "-R", "rm /changed.txt", "mod.raw"]);
        run(
            d,
            "debugfs",
            &["-w", "-R", "write new.txt /changed.txt", "mod.raw"],
        );
        overlay_from_modified_copy(d, "mod.raw", "overlay.qcow2");
        Fixture {
            tree,
            base: d.join("base.raw"),
            overlay: d.join("overlay.qcow2"),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Makes `overlay`, a qcow2 over `base.raw` in `dir`, holding exactly the
/// clusters in which `modified` (a changed raw copy of the base) differs.
/// `convert -B` does that; a safe `qemu-img rebase` onto the copy and back
/// does not (qemu 7.2 skipped clusters that differ, leaving the old file visible).
pub fn overlay_from_modified_copy(dir: &Path, modified: &str, overlay: &str) {
    run(
        dir,
        "qemu-img",
        &[
            "convert", "-O", "qcow2", "-B", "base.raw", "-F", "raw", modified, overlay,
        ],
    );
}

/// `qemu-img convert -O raw`: the reference every read is compared with.
pub fn flatten(dir: &Path, image: &str, out: &str) -> Vec<u8> {
    run(dir, "qemu-img", &["convert", "-O", "raw", image, out]);
    std::fs::read(dir.join(out)).unwrap()
}

/// Reads the whole virtual disk through cove-disk, 1 MiB at a time (plus a
/// few unaligned reads), and asserts it equals qemu-img's flattening.
pub fn assert_same_as_qemu(dir: &Path, image: &str) {
    let expected = flatten(dir, image, &format!("{image}.flat"));
    let disk = cove_disk::DiskImage::open(dir.join(image)).unwrap();
    assert_eq!(
        disk.size(),
        expected.len() as u64,
        "virtual size of {image}"
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0usize;
    while at < expected.len() {
        let n = buf.len().min(expected.len() - at);
        disk.read_exact_at(&mut buf[..n], at as u64).unwrap();
        if buf[..n] != expected[at..at + n] {
            let first = (0..n).find(|i| buf[*i] != expected[at + i]).unwrap();
            panic!("{image}: byte {} differs from qemu-img convert", at + first);
        }
        at += n;
    }
    // Reads that straddle cluster boundaries at odd offsets.
    for off in [1usize, 511, 65_535, 65_537, 1_048_575, 2_097_151] {
        if off + 70_000 <= expected.len() {
            let mut b = vec![0u8; 70_000];
            disk.read_exact_at(&mut b, off as u64).unwrap();
            assert!(
                b == expected[off..off + 70_000],
                "{image}: unaligned read at {off}"
            );
        }
    }
}

/// `qemu-img map --output=json` entries: (start, length, data, zero, offset present).
pub fn map(dir: &Path, image: &str) -> String {
    run(dir, "qemu-img", &["map", "--output=json", image])
}
