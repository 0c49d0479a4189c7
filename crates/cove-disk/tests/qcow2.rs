//! The virtual-disk layer: every read is compared byte for byte with
//! `qemu-img convert -O raw` of the same image.

mod common;

use common::{Fixture, assert_same_as_qemu, map, run};
use cove_disk::{DiskImage, Error, Format};
use std::io::{Read, Seek, SeekFrom};

/// A raw base full of a pattern, so that a read that wrongly falls through
/// to the backing file (instead of honouring a zero cluster) shows up.
fn patterned_base(dir: &std::path::Path) {
    run(
        dir,
        "qemu-img",
        &["create", "-q", "-f", "raw", "pat.raw", "8M"],
    );
    run(
        dir,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 0 8M", "pat.raw"],
    );
}

#[test]
fn overlay_with_allocated_backing_and_zero_clusters_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    patterned_base(d);
    run(
        d,
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", "pat.raw", "-F", "raw", "ov.qcow2",
        ],
    );
    run(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 1M 64k", // allocated clusters
            "-c",
            "write -z 2M 128k", // zero clusters over non-zero backing data
            "-c",
            "write -P 0xcd 3146240 4k", // partial cluster: copy-on-write of the rest
            "-c",
            "write -P 0xef 8384512 4k", // the last cluster
            "ov.qcow2",
        ],
    );
    // Prove the image really has what the test claims to cover.
    let m = map(d, "ov.qcow2");
    assert!(
        m.contains("\"zero\": true, \"data\": false"),
        "no zero clusters: {m}"
    );
    assert!(m.contains("\"depth\": 1"), "no backing fall-through: {m}");
    assert!(
        m.contains("\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"),
        "{m}"
    );
    assert_same_as_qemu(d, "ov.qcow2");

    let disk = DiskImage::open(d.join("ov.qcow2")).unwrap();
    assert_eq!(disk.format(), Format::Qcow2);
    assert_eq!(disk.layers().len(), 2);
    assert_eq!(disk.layers()[1].format, Format::Raw);
    let mut b = [0u8; 4];
    disk.read_exact_at(&mut b, 2 << 20).unwrap();
    assert_eq!(
        b, [0; 4],
        "zero cluster must not fall through to the 0x11 backing"
    );
    disk.read_exact_at(&mut b, 4 << 20).unwrap();
    assert_eq!(
        b, [0x11; 4],
        "unallocated cluster falls through to the backing file"
    );
}

#[test]
fn ext4_overlay_fixture_matches_qemu_and_differs_from_base() {
    let f = Fixture::new("64M");
    let m = map(f.path(), "overlay.qcow2");
    assert!(
        m.contains("\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"),
        "{m}"
    );
    assert_same_as_qemu(f.path(), "overlay.qcow2");
    assert_same_as_qemu(f.path(), "base.raw");
}

#[test]
fn cluster_sizes_and_header_versions_match_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    patterned_base(d);
    for (i, opts) in [
        "cluster_size=512",
        "cluster_size=4096",
        "cluster_size=2M",
        "compat=0.10",
        "compat=0.10,cluster_size=1024",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("c{i}.qcow2");
        run(
            d,
            "qemu-img",
            &[
                "create", "-q", "-f", "qcow2", "-o", opts, "-b", "pat.raw", "-F", "raw", &name,
            ],
        );
        run(
            d,
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x5a 100k 300k",
                "-c",
                "write -z 6M 1M",
                "-c",
                "write -P 0x77 7340035 9",
                &name,
            ],
        );
        assert_same_as_qemu(d, &name);
        let disk = DiskImage::open(d.join(&name)).unwrap();
        let expect_v = if opts.contains("compat=0.10") { 2 } else { 3 };
        assert_eq!(disk.layers()[0].qcow2_version, Some(expect_v), "{opts}");
    }
}

#[test]
fn compressed_clusters_are_read() {
    let f = Fixture::new("32M");
    let d = f.path();
    run(
        d,
        "qemu-img",
        &[
            "convert",
            "-q",
            "-c",
            "-O",
            "qcow2",
            "base.raw",
            "comp.qcow2",
        ],
    );
    assert_same_as_qemu(d, "comp.qcow2");
    // 8 MiB of non-zero data in a file of a few hundred KiB: the clusters
    // really are compressed (zero clusters alone would not explain it).
    patterned_base(d);
    run(
        d,
        "qemu-img",
        &[
            "convert",
            "-q",
            "-c",
            "-O",
            "qcow2",
            "pat.raw",
            "pat-c.qcow2",
        ],
    );
    let comp = std::fs::metadata(d.join("pat-c.qcow2")).unwrap().len();
    assert!(comp < 1 << 20, "not compressed? {comp} bytes");
    assert_same_as_qemu(d, "pat-c.qcow2");
    // And a compressed qcow2 as the backing file of an overlay.
    run(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "comp.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    run(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x42 20M 1M", "top.qcow2"],
    );
    assert_same_as_qemu(d, "top.qcow2");
}

#[test]
fn three_layer_chain_with_relative_names_from_another_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("images/base")).unwrap();
    std::fs::create_dir_all(d.join("vms/web")).unwrap();
    run(
        &d.join("images/base"),
        "qemu-img",
        &["create", "-q", "-f", "raw", "b.raw", "4M"],
    );
    run(
        &d.join("images/base"),
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x01 0 4M", "b.raw"],
    );
    // mid.qcow2 names its backing relative to images/, top relative to vms/web/.
    run(
        &d.join("images"),
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base/b.raw",
            "-F",
            "raw",
            "mid.qcow2",
        ],
    );
    run(
        &d.join("images"),
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x02 1M 1M", "mid.qcow2"],
    );
    run(
        &d.join("vms/web"),
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "../../images/mid.qcow2",
            "-F",
            "qcow2",
            "root.qcow2",
        ],
    );
    run(
        &d.join("vms/web"),
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x03 1572864 1M",
            "-c",
            "write -z 3M 64k",
            "root.qcow2",
        ],
    );
    assert_same_as_qemu(&d.join("vms/web"), "root.qcow2");
    // Opened through an absolute path while the process cwd is elsewhere.
    let disk = DiskImage::open(d.join("vms/web/root.qcow2")).unwrap();
    let formats: Vec<_> = disk.layers().iter().map(|l| l.format).collect();
    assert_eq!(formats, [Format::Qcow2, Format::Qcow2, Format::Raw]);
}

#[test]
fn an_overlay_larger_than_its_backing_file_reads_zeros_past_its_end() {
    // What `qemu-img resize` of a VM's root overlay makes.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    patterned_base(d);
    run(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "pat.raw",
            "-F",
            "raw",
            "big.qcow2",
            "20M",
        ],
    );
    run(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x33 8384512 8192",
            "big.qcow2",
        ],
    );
    assert_same_as_qemu(d, "big.qcow2");
    // And a standalone data disk grown after it was written.
    run(
        d,
        "qemu-img",
        &["convert", "-q", "-O", "qcow2", "pat.raw", "data.qcow2"],
    );
    run(d, "qemu-img", &["resize", "-q", "data.qcow2", "12M"]);
    assert_same_as_qemu(d, "data.qcow2");
}

#[test]
fn read_and_seek_walk_the_virtual_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    patterned_base(d);
    run(
        d,
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", "pat.raw", "-F", "raw", "ov.qcow2",
        ],
    );
    run(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x99 64k 64k", "ov.qcow2"],
    );
    let mut disk = DiskImage::open(d.join("ov.qcow2")).unwrap();
    disk.seek(SeekFrom::Start(64 * 1024 - 2)).unwrap();
    let mut b = [0u8; 4];
    disk.read_exact(&mut b).unwrap();
    assert_eq!(b, [0x11, 0x11, 0x99, 0x99]);
    disk.seek(SeekFrom::End(-3)).unwrap();
    let mut rest = Vec::new();
    disk.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, [0x11; 3]);
    let mut past = [0u8; 1];
    assert!(
        disk.read_exact_at(&mut past, 8 << 20).is_err(),
        "read past the end must fail"
    );
}

fn open_err(dir: &std::path::Path, name: &str) -> Error {
    DiskImage::open(dir.join(name)).expect_err("open must fail")
}

/// A fresh 1 MiB qcow2 from `qemu-img create` with `edit` applied to its bytes: opening it is
/// refused as an invalid qcow2, with this error.
fn edited_qcow2_err(dir: &std::path::Path, edit: impl FnOnce(&mut Vec<u8>)) -> Error {
    let name = "edited.qcow2";
    run(
        dir,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", name, "1M"],
    );
    let mut image = std::fs::read(dir.join(name)).unwrap();
    edit(&mut image);
    std::fs::write(dir.join(name), &image).unwrap();
    let e = open_err(dir, name);
    assert!(matches!(e, Error::InvalidQcow2 { .. }), "{e}");
    e
}

#[test]
fn encrypted_external_data_zstd_and_missing_backing_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The encryption method is one header field (offset 32). Writing it
    // ourselves keeps the test deterministic: `qemu-img create` of a real LUKS
    // image times its PBKDF and fails now and then on a loaded machine
    // ("Unable to get accurate CPU usage").
    for (name, method) in [("enc.qcow2", 2u32), ("aes.qcow2", 1u32)] {
        run(d, "qemu-img", &["create", "-q", "-f", "qcow2", name, "4M"]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join(name))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &method.to_be_bytes(), 32).unwrap();
    }
    let e = open_err(d, "aes.qcow2");
    assert!(
        matches!(
            e,
            Error::Encrypted {
                method: "legacy AES",
                ..
            }
        ),
        "{e}"
    );
    let e = open_err(d, "enc.qcow2");
    assert!(matches!(e, Error::Encrypted { method: "LUKS", .. }), "{e}");
    assert!(e.to_string().contains("encrypted (LUKS)"), "{e}");

    run(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=ext.raw",
            "ext.qcow2",
            "4M",
        ],
    );
    let e = open_err(d, "ext.qcow2");
    assert!(
        matches!(&e, Error::ExternalDataFile { data_file, .. } if data_file == "ext.raw"),
        "{e}"
    );

    run(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compression_type=zstd",
            "z.qcow2",
            "4M",
        ],
    );
    let e = open_err(d, "z.qcow2");
    assert!(e.to_string().contains("zstd"), "{e}");

    run(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "gone.raw", "4M"],
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
            "gone.raw",
            "-F",
            "raw",
            "orphan.qcow2",
        ],
    );
    std::fs::remove_file(d.join("gone.raw")).unwrap();
    let e = open_err(d, "orphan.qcow2");
    assert!(matches!(e, Error::BackingMissing { .. }), "{e}");
    assert!(e.to_string().contains("gone.raw"), "{e}");

    let e = open_err(d, "does-not-exist.qcow2");
    assert!(matches!(e, Error::Open { .. }), "{e}");
}

#[test]
fn damaged_images_read_like_qemu_or_fail_clearly() {
    let f = Fixture::new("32M");
    let d = f.path();
    // An overlay cut short (a copy interrupted): clusters past the end of
    // the file read as zeros, exactly as QEMU reads them.
    let len = std::fs::metadata(&f.overlay).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&f.overlay)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    assert_same_as_qemu(d, "overlay.qcow2");
    // A header with a nonsense cluster size.
    let e = edited_qcow2_err(d, |header| {
        header[20..24].copy_from_slice(&40u32.to_be_bytes());
    });
    assert!(e.to_string().contains("cluster_bits is 40"), "{e}");
}

#[test]
fn a_backing_name_offset_near_the_end_of_the_address_space_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // backing_file_offset (8..16) and backing_file_size (16..20): their sum wraps past 2^64.
    let e = edited_qcow2_err(dir.path(), |header| {
        header[8..16].copy_from_slice(&(u64::MAX - 3).to_be_bytes());
        header[16..20].copy_from_slice(&16u32.to_be_bytes());
    });
    assert!(
        e.to_string().contains("backing file name is out of bounds"),
        "{e}"
    );
}

/// Found by the qcow2 fuzz target: a feature name table whose length is not whole 48-byte
/// entries made imago index past its last entry and panic, so `cove disk` crashed.
#[test]
fn a_feature_name_table_of_partial_entries_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let e = edited_qcow2_err(dir.path(), |image| {
        let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
        // Header extensions start at header_length (bytes 100..104 of a version 3 header).
        let mut at = be32(image, 100) as usize;
        let table = loop {
            let (kind, len) = (be32(image, at), be32(image, at + 4) as usize);
            assert_ne!(kind, 0, "qemu-img wrote no feature name table");
            if kind == 0x6803_f857 {
                break at;
            }
            at += 8 + len.next_multiple_of(8);
        };
        let len = be32(image, table + 4);
        assert_eq!(len % 48, 0, "qemu-img writes whole entries");
        image[table + 4..table + 8].copy_from_slice(&(len + 1).to_be_bytes());
    });
    assert!(e.to_string().contains("feature name table"), "{e}");
}
