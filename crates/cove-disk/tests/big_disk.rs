//! The real case from seed 000: a log file read from a stopped VM's big
//! root disk. The virtual disk is 4 GiB, the overlay holds 256 MiB of guest
//! writes plus a rewritten /var/log/init.log; reading the log must touch a
//! few MiB of host files, not the disk. Alone in its own test binary so that
//! /proc/self/io counts only this test's reads.

mod common;

use common::run;
use cove_disk::{DiskImage, Fs};
use std::time::Instant;

/// Bytes this process has read through read(2)/pread(2) so far.
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn cat_of_a_small_log_from_a_4gib_overlay_reads_only_a_few_mib() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tree/var/log")).unwrap();
    std::fs::write(d.join("tree/var/log/init.log"), b"init: booting\n").unwrap();
    run(d, "sh", &["-c", "head -c 64M /dev/urandom > tree/blob"]);
    run(
        d,
        "mkfs.ext4",
        &["-q", "-F", "-d", "tree", "-b", "4096", "base.raw", "4G"],
    );
    // What the guest did while it ran: 256 MiB of new data, a rewritten log.
    run(d, "cp", &["--sparse=always", "base.raw", "mod.raw"]);
    run(d, "sh", &["-c", "head -c 256M /dev/urandom > big"]);
    let log: String = (0..100)
        .map(|i| format!("init: step {i}\n"))
        .chain([
            "FATAL: could not create shared memory segment: Function not implemented\n".to_string(),
        ])
        .collect();
    std::fs::write(d.join("newlog"), &log).unwrap();
    run(
        d,
        "debugfs",
        &["-w", "-R", "write big /var/lib-big", "mod.raw"],
    );
    run(
        d,
        "debugfs",
        &["-w", "-R", "rm /var/log/init.log", "mod.raw"],
    );
    run(
        d,
        "debugfs",
        &["-w", "-R", "write newlog /var/log/init.log", "mod.raw"],
    );
    common::overlay_from_modified_copy(d, "mod.raw", "root.qcow2");
    std::fs::remove_file(d.join("mod.raw")).unwrap();
    std::fs::remove_file(d.join("big")).unwrap();
    let overlay_len = std::fs::metadata(d.join("root.qcow2")).unwrap().len();
    assert!(
        overlay_len > 256 << 20,
        "overlay is only {overlay_len} bytes"
    );

    let before = rchar();
    let start = Instant::now();
    let fs = Fs::open(DiskImage::open(d.join("root.qcow2")).unwrap()).unwrap();
    let mut out = Vec::new();
    fs.read_to("/var/log/init.log", &mut out).unwrap();
    let elapsed = start.elapsed();
    let read = rchar() - before;
    assert_eq!(out, log.as_bytes());
    assert_eq!(fs.metadata("/").unwrap().kind, cove_disk::FileKind::Dir);
    println!(
        "cat /var/log/init.log ({} bytes) from a 4 GiB virtual disk, {} MiB overlay: \
         {:.1} ms, {} KiB read from host files, peak RSS {} MiB",
        out.len(),
        overlay_len >> 20,
        elapsed.as_secs_f64() * 1000.0,
        read / 1024,
        vm_hwm_kib() / 1024,
    );
    assert!(
        read < 8 << 20,
        "read {read} bytes of host files for a 2 KiB log"
    );
}
