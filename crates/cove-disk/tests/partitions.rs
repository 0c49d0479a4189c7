//! Data disks a guest partitioned before formatting: MBR and GPT tables,
//! filesystems made by `mkfs.ext4 -E offset=`, read through qcow2.
//!
//! The tables are written here byte by byte (with valid GPT CRCs) because
//! sfdisk is not among the host tools cove installs; `sfdisk --dump` of
//! these images lists the same partitions.

mod common;

use common::run;
use cove_disk::{DiskImage, Error, Fs};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A disk of `total` MiB with an ext4 filesystem (holding `/which` = `name`)
/// in each (start MiB, size MiB) slot.
fn disk_with_filesystems(dir: &Path, total: u64, slots: &[(u64, u64, &str)]) -> std::fs::File {
    run(
        dir,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "raw",
            "disk.raw",
            &format!("{total}M"),
        ],
    );
    for (start, size, name) in slots {
        let tree = dir.join(format!("tree-{name}"));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("which"), name).unwrap();
        let offset = format!("offset={}", start * MIB);
        let tree = tree.to_str().unwrap();
        // -E offset writes the filesystem into the existing file at that offset.
        run(
            dir,
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-d",
                tree,
                "-E",
                &offset,
                "disk.raw",
                &format!("{size}M"),
            ],
        );
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("disk.raw"))
        .unwrap()
}

fn mbr_entry(mbr: &mut [u8; 512], i: usize, kind: u8, start: u64, len: u64) {
    let e = &mut mbr[446 + 16 * i..446 + 16 * (i + 1)];
    e[4] = kind;
    e[8..12].copy_from_slice(&((start / 512) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&((len / 512) as u32).to_le_bytes());
}

fn write_mbr(file: &std::fs::File, parts: &[(u8, u64, u64)]) {
    let mut mbr = [0u8; 512];
    for (i, (kind, start, len)) in parts.iter().enumerate() {
        mbr_entry(&mut mbr, i, *kind, *start, *len);
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    file.write_all_at(&mbr, 0).unwrap();
}

/// Protective MBR, GPT header at LBA 1, 128 entries of 128 bytes at LBA 2.
fn write_gpt(file: &std::fs::File, disk_len: u64, parts: &[(u64, u64)]) {
    let last_lba = disk_len / 512 - 1;
    write_mbr(file, &[(0xee, 512, disk_len - 512)]);
    let mut entries = vec![0u8; 128 * 128];
    // Linux filesystem data: 0FC63DAF-8483-4772-8E79-3D69D8477DE4, mixed-endian.
    let linux = [
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ];
    for (i, (start, len)) in parts.iter().enumerate() {
        let e = &mut entries[128 * i..128 * (i + 1)];
        e[..16].copy_from_slice(&linux);
        e[16] = i as u8 + 1; // unique partition GUID: anything non-zero
        e[32..40].copy_from_slice(&(start / 512).to_le_bytes());
        e[40..48].copy_from_slice(&((start + len) / 512 - 1).to_le_bytes());
    }
    let mut h = [0u8; 92];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes()); // this header
    h[32..40].copy_from_slice(&last_lba.to_le_bytes()); // backup header (not written)
    h[40..48].copy_from_slice(&34u64.to_le_bytes()); // first usable
    h[48..56].copy_from_slice(&(last_lba - 33).to_le_bytes()); // last usable
    h[56] = 0x42; // disk GUID
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&h, 512).unwrap();
    file.write_all_at(&entries, 1024).unwrap();
}

fn cat(fs: &Fs, path: &str) -> String {
    let mut out = Vec::new();
    fs.read_to(path, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn to_qcow2(dir: &Path) -> DiskImage {
    run(
        dir,
        "qemu-img",
        &["convert", "-O", "qcow2", "disk.raw", "disk.qcow2"],
    );
    DiskImage::open(dir.join("disk.qcow2")).unwrap()
}

#[test]
fn the_only_filesystem_of_an_mbr_disk_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let f = disk_with_filesystems(dir.path(), 40, &[(1, 30, "first")]);
    write_mbr(&f, &[(0x83, MIB, 30 * MIB)]);
    let fs = Fs::open(to_qcow2(dir.path())).unwrap();
    assert_eq!(cat(&fs, "/which"), "first");
    let p = fs.partition().unwrap();
    assert_eq!((p.index, p.start, p.table), (1, MIB, "mbr"));
}

#[test]
fn gpt_disks_with_two_filesystems_need_a_choice() {
    let dir = tempfile::tempdir().unwrap();
    let f = disk_with_filesystems(dir.path(), 64, &[(1, 20, "one"), (30, 20, "two")]);
    write_gpt(&f, 64 * MIB, &[(MIB, 20 * MIB), (30 * MIB, 20 * MIB)]);
    let disk = to_qcow2(dir.path());
    let parts = cove_disk::partitions(&disk);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(
        (parts[1].index, parts[1].start, parts[1].len, parts[1].table),
        (2, 30 * MIB, 20 * MIB, "gpt")
    );
    let e = Fs::open(disk).unwrap_err();
    assert!(matches!(e, Error::AmbiguousPartitions { .. }), "{e}");
    assert!(e.to_string().contains("partitions 1, 2"), "{e}");
    let disk = DiskImage::open(dir.path().join("disk.qcow2")).unwrap();
    assert_eq!(cat(&Fs::open_partition(disk, 2).unwrap(), "/which"), "two");
    let disk = DiskImage::open(dir.path().join("disk.qcow2")).unwrap();
    let e = Fs::open_partition(disk, 3).unwrap_err();
    assert!(matches!(e, Error::NoSuchPartition { .. }), "{e}");
}

#[test]
fn a_partition_without_a_filesystem_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let f = disk_with_filesystems(dir.path(), 16, &[]);
    write_mbr(&f, &[(0x83, MIB, 8 * MIB)]);
    let e = Fs::open(to_qcow2(dir.path())).unwrap_err();
    assert!(matches!(e, Error::NoFilesystem { .. }), "{e}");
    assert!(
        e.to_string().contains("none of its 1 MBR partitions"),
        "{e}"
    );
}
