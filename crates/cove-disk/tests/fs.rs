//! The filesystem layer on real `mkfs.ext4 -d` images and qcow2 overlays.

mod common;

use common::{BIG_LEN, Fixture, INIT_LOG, MTIME, NEW_CHANGED, pseudo_random, run};
use cove_disk::{DiskImage, Error, FileKind, Fs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn open(path: &std::path::Path) -> Fs {
    Fs::open(DiskImage::open(path).unwrap())
        .unwrap()
        .with_label("VM pg's disk")
}

fn cat(fs: &Fs, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = fs.read_to(path, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

#[test]
fn cat_reads_through_overlay_clusters_and_backing_fall_through() {
    let f = Fixture::new("64M");
    let overlay_before = std::fs::read(&f.overlay).unwrap();
    let base_mtime = std::fs::metadata(&f.base).unwrap().modified().unwrap();
    let over = open(&f.overlay);
    let base = open(&f.base);
    // The changed file lives in the overlay's allocated clusters...
    assert_eq!(cat(&over, "/changed.txt"), NEW_CHANGED);
    assert_ne!(cat(&base, "/changed.txt"), NEW_CHANGED);
    // ...everything else falls through to the raw base.
    assert_eq!(cat(&over, "/var/log/init.log"), INIT_LOG.as_bytes());
    let big = cat(&over, "/data/big.bin");
    assert_eq!(big.len(), BIG_LEN);
    assert!(big == pseudo_random(BIG_LEN, 42), "5 MiB file differs");
    // Symlinks: relative, absolute, to a directory.
    assert_eq!(cat(&over, "/var/log/latest"), INIT_LOG.as_bytes());
    assert_eq!(cat(&over, "/etc/hostname-link"), b"pg-vm\n");
    assert_eq!(cat(&over, "/app-dir/config.toml"), b"[db]\nport = 5432\n");
    // Relative paths are taken from /.
    assert_eq!(cat(&over, "etc/hostname"), b"pg-vm\n");
    // Reading never writes: not the overlay, not its base.
    drop(over);
    drop(base);
    assert!(
        std::fs::read(&f.overlay).unwrap() == overlay_before,
        "the overlay changed"
    );
    assert_eq!(
        std::fs::metadata(&f.base).unwrap().modified().unwrap(),
        base_mtime
    );
}

#[test]
fn ls_shows_name_type_mode_size_mtime_and_link_targets() {
    let f = Fixture::new("64M");
    let fs = open(&f.overlay);
    let root: Vec<_> = fs.list("/").unwrap().into_iter().map(|e| e.name).collect();
    for want in [
        "app-dir",
        "changed.txt",
        "data",
        "empty",
        "etc",
        "lost+found",
        "run-fifo",
        "secret",
        "usr",
        "var",
    ] {
        assert!(
            root.contains(&want.to_string()),
            "{want} missing from {root:?}"
        );
    }
    assert!(!root.iter().any(|n| n == "." || n == ".."));
    let log = fs.list("/var/log").unwrap();
    let names: Vec<_> = log.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["init.log", "latest"]);
    let init = &log[0];
    assert_eq!(init.kind, FileKind::File);
    assert_eq!(init.mode, 0o600);
    assert_eq!(init.size, INIT_LOG.len() as u64);
    assert_eq!(init.mtime, MTIME);
    assert_eq!(init.path, "/var/log/init.log");
    assert_eq!(init.mode_string(), "-rw-------");
    let latest = &log[1];
    assert_eq!(latest.kind, FileKind::Symlink);
    assert_eq!(latest.symlink_target.as_deref(), Some("init.log"));
    assert_eq!(latest.mode_string().chars().next(), Some('l'));

    // ls of a file lists that file; metadata follows links, symlink_metadata does not.
    let one = fs.list("/usr/bin/tool").unwrap();
    assert_eq!(
        (one.len(), one[0].mode, one[0].mode_string().as_str()),
        (1, 0o755, "-rwxr-xr-x")
    );
    assert_eq!(fs.metadata("/var/log/latest").unwrap().kind, FileKind::File);
    assert_eq!(
        fs.symlink_metadata("/var/log/latest").unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(fs.metadata("/secret").unwrap().mode_string(), "drwx------");
    assert_eq!(fs.metadata("/run-fifo").unwrap().kind, FileKind::Fifo);
    let dangling = fs.list("/dangling").unwrap();
    assert_eq!(dangling[0].symlink_target.as_deref(), Some("/nowhere"));
    // ls through a symlink to a directory lists the directory.
    let app: Vec<_> = fs
        .list("/app-dir")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(app, ["config.toml"]);
}

#[test]
fn errors_name_the_path_the_disk_and_the_next_step() {
    let f = Fixture::new("64M");
    let fs = open(&f.overlay);
    let mut sink = Vec::new();
    let e = fs.read_to("/var/log/nope.log", &mut sink).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("no such file /var/log/nope.log in VM pg's disk"),
        "{e}"
    );
    let e = fs.read_to("/etc", &mut sink).unwrap_err();
    assert!(matches!(e, Error::IsADirectory { .. }), "{e}");
    assert!(e.to_string().contains("is a directory"), "{e}");
    let e = fs.read_to("/run-fifo", &mut sink).unwrap_err();
    assert!(matches!(e, Error::SpecialFile { kind: "fifo", .. }), "{e}");
    let e = fs.list("/etc/hostname/x").unwrap_err();
    assert!(
        matches!(e, Error::NotADirectory { .. } | Error::NotFound { .. }),
        "{e}"
    );
    let e = fs.read_to("/loop-a", &mut sink).unwrap_err();
    assert!(matches!(e, Error::TooManySymlinks { .. }), "{e}");
    assert!(sink.is_empty());

    // A disk with no filesystem: a blank qcow2 data disk.
    run(
        f.path(),
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "blank.qcow2", "16M"],
    );
    let e = Fs::open(DiskImage::open(f.path().join("blank.qcow2")).unwrap()).unwrap_err();
    assert!(matches!(e, Error::NoFilesystem { .. }), "{e}");
    assert!(e.to_string().contains("zeros"), "{e}");
}

#[test]
fn get_copies_a_tree_with_modes_mtimes_and_symlinks() {
    let f = Fixture::new("64M");
    let fs = open(&f.overlay);
    let out = tempfile::tempdir().unwrap();
    let report = fs.copy_out("/", out.path().join("root")).unwrap();
    let r = out.path().join("root");
    assert_eq!(report.dest, r);
    assert_eq!(std::fs::read(r.join("changed.txt")).unwrap(), NEW_CHANGED);
    assert!(std::fs::read(r.join("data/big.bin")).unwrap() == pseudo_random(BIG_LEN, 42));
    let mode = |p: &str| {
        std::fs::symlink_metadata(r.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("var/log/init.log"), 0o600);
    assert_eq!(mode("usr/bin/tool"), 0o755);
    assert_eq!(mode("etc/app/config.toml"), 0o640);
    assert_eq!(mode("secret"), 0o700);
    assert_eq!(mode("secret/key"), 0o400);
    assert_eq!(
        std::fs::metadata(r.join("var/log/init.log"))
            .unwrap()
            .mtime(),
        MTIME
    );
    assert_eq!(
        std::fs::read_link(r.join("var/log/latest"))
            .unwrap()
            .to_str(),
        Some("init.log")
    );
    assert_eq!(
        std::fs::read_link(r.join("etc/hostname-link"))
            .unwrap()
            .to_str(),
        Some("/etc/hostname")
    );
    assert!(r.join("empty").is_dir());
    assert!(!r.join("run-fifo").exists());
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(
        report.skipped[0].contains("/run-fifo"),
        "{:?}",
        report.skipped
    );
    assert!(report.bytes >= BIG_LEN as u64);
    assert_eq!(report.symlinks, 6);

    // A file into an existing directory keeps its name; a directory through a symlink.
    let r2 = fs.copy_out("/var/log/latest", out.path()).unwrap();
    assert_eq!(r2.dest, out.path().join("latest"));
    assert_eq!(
        std::fs::read(out.path().join("latest")).unwrap(),
        INIT_LOG.as_bytes()
    );
    let r3 = fs.copy_out("/app-dir", out.path().join("app")).unwrap();
    assert_eq!(r3.files, 1);
    assert_eq!(
        std::fs::read(out.path().join("app/config.toml")).unwrap(),
        b"[db]\nport = 5432\n"
    );

    // Never written through a symlink that already sits in the destination.
    let victim = out.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, out.path().join("trap")).unwrap();
    assert!(
        fs.copy_out("/etc/hostname", out.path().join("trap"))
            .is_err()
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

/// A filesystem whose journal holds a committed transaction that rewrites
/// the data block of /state.txt, with needs_recovery set: what a VM killed
/// mid-write leaves behind. `jo_flags` go to debugfs's `journal_open`.
fn dirty_journal_disk(d: &std::path::Path, jo_flags: &str) -> std::path::PathBuf {
    std::fs::create_dir(d.join("tree")).unwrap();
    std::fs::write(d.join("tree/state.txt"), b"state: old-value-AAAA\n").unwrap();
    run(
        d,
        "mkfs.ext4",
        &["-q", "-F", "-d", "tree", "-b", "4096", "fs.raw", "32M"],
    );
    let block = run(d, "debugfs", &["-R", "bmap /state.txt 0", "fs.raw"]);
    // debugfs journals whole blocks; a shorter file writes no transaction.
    let mut block_data = b"state: NEW-value-BBBB\n".to_vec();
    block_data.resize(4096, 0);
    std::fs::write(d.join("newblock"), block_data).unwrap();
    let cmds = format!("jo {jo_flags}\njw -b {} newblock\njc\n", block.trim());
    std::fs::write(d.join("cmds"), cmds).unwrap();
    run(d, "debugfs", &["-w", "-f", "cmds", "fs.raw"]);
    let features = run(d, "dumpe2fs", &["-h", "fs.raw"]);
    assert!(
        features.contains("needs_recovery"),
        "the journal was not left dirty: {features}"
    );
    run(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "fs.raw",
            "-F",
            "raw",
            "root.qcow2",
        ],
    );
    d.join("root.qcow2")
}

#[test]
fn a_dirty_journal_is_replayed_in_memory() {
    // The seed's team ran e2fsck by hand to read such a disk; the kernel
    // writes checksum-v3 journals on metadata_csum filesystems, and cove
    // replays them in memory as the kernel would at mount.
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dirty_journal_disk(dir.path(), "-c"));
    assert_eq!(cat(&fs, "/state.txt"), b"state: NEW-value-BBBB\n");
}

#[test]
fn a_journal_that_cannot_be_replayed_says_the_filesystem_needs_recovery() {
    // Without checksums ext4-view refuses the journal; the error must say
    // why and what to do, not "incompatible filesystem".
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskImage::open(dirty_journal_disk(dir.path(), "")).unwrap();
    let e = Fs::open(disk).unwrap_err();
    assert!(matches!(e, Error::NeedsRecovery { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("needs recovery (its journal was not replayed"),
        "{msg}"
    );
    assert!(msg.contains("e2fsck -fy"), "{msg}");
}

#[test]
fn a_damaged_superblock_is_reported_as_a_damaged_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("tree")).unwrap();
    std::fs::write(d.join("tree/a"), b"a").unwrap();
    // No metadata_csum, so the superblock checksum does not catch it first.
    run(
        d,
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-O",
            "^metadata_csum",
            "-d",
            "tree",
            "fs.raw",
            "8M",
        ],
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("fs.raw"))
        .unwrap();
    // s_log_block_size = 30: a 1 TiB block size.
    std::os::unix::fs::FileExt::write_all_at(&file, &30u32.to_le_bytes(), 1024 + 24).unwrap();
    let e = Fs::open(DiskImage::open(d.join("fs.raw")).unwrap()).unwrap_err();
    // A block size no disk can hold is caught by cove's own bounds check
    // (before ext4-view reads further); either way the user is told to fsck.
    assert!(
        matches!(
            e,
            Error::ImplausibleFilesystem { .. } | Error::CorruptFilesystem { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("e2fsck -fn"), "{e}");
}
