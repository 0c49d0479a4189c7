//! Kernels with an embedded config (IKCONFIG) in every compression the kernel build uses,
//! built from real parts: the Debian cloud kernel's real config, gzip'd between the
//! IKCFG_ST/IKCFG_ED markers, inside a payload compressed by the real `gzip`, `xz`, `lzma`,
//! `lz4 -l`, `zstd` and `bzip2` binaries, wrapped in a bzImage layout with a correct setup
//! header.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use cove_diagnose::kernel::{self, Compression, ImageKind};

/// Run a compressor the way the kernel's Makefile does (stdin → stdout).
fn compress(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{tool} {args:?} failed");
    out.stdout
}

/// The kernel's compressor invocations (arch/x86/boot/compressed/Makefile, scripts/Makefile.lib).
fn kernel_compress(c: Compression, data: &[u8]) -> Vec<u8> {
    let mut out = match c {
        Compression::Gzip => compress("gzip", &["-n", "-f", "-9"], data),
        Compression::Xz => compress(
            "xz",
            &["--check=crc32", "--x86", "--lzma2=,dict=32MiB"],
            data,
        ),
        Compression::Lzma => compress("lzma", &["-9"], data),
        Compression::Lz4 => compress("lz4", &["-l", "-9", "-"], data),
        Compression::Zstd => compress("zstd", &["-22", "--ultra", "-c"], data),
        Compression::Bzip2 => compress("bzip2", &["-9"], data),
    };
    // size_append: the kernel build appends the uncompressed size, LE u32.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn ikconfig_blob(config: &str) -> Vec<u8> {
    let mut blob = b"IKCFG_ST".to_vec();
    blob.extend(compress("gzip", &["-n", "-9"], config.as_bytes()));
    blob.extend_from_slice(b"IKCFG_ED");
    blob
}

/// A minimal bzImage: 4 setup sectors + boot sector with the setup header, then protected-mode
/// code (filler) and the payload at `payload_offset`.
fn bzimage(payload: &[u8], with_payload_fields: bool) -> Vec<u8> {
    const SETUP_SECTS: usize = 4;
    const PAYLOAD_OFFSET: usize = 0x3c0;
    let pm_start = (SETUP_SECTS + 1) * 512;
    let mut img = vec![0u8; pm_start + PAYLOAD_OFFSET];
    img[0x1f1] = SETUP_SECTS as u8;
    img[0x1fe] = 0x55;
    img[0x1ff] = 0xaa;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    let version: u16 = if with_payload_fields { 0x020f } else { 0x0206 };
    img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    if with_payload_fields {
        img[0x248..0x24c].copy_from_slice(&(PAYLOAD_OFFSET as u32).to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    }
    // Filler standing in for the decompressor stub.
    for (i, b) in img[pm_start..].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 0x80;
    }
    img.extend_from_slice(payload);
    img.extend_from_slice(&[0u8; 64]);
    img
}

/// A real ELF (`/usr/bin/true`) with the IKCONFIG blob appended: a small stand-in vmlinux.
fn small_vmlinux(config: &str) -> Vec<u8> {
    let mut elf = std::fs::read("/usr/bin/true").expect("/usr/bin/true");
    elf.extend(ikconfig_blob(config));
    elf
}

#[test]
#[ignore = "downloads packages"]
fn ikconfig_found_in_bzimages_of_every_compression() {
    let (_, config_path) = common::debian_cloud_kernel();
    let config = std::fs::read_to_string(&config_path).unwrap();
    let vmlinux = small_vmlinux(&config);
    for c in Compression::ALL {
        for with_fields in [true, false] {
            let img = bzimage(&kernel_compress(c, &vmlinux), with_fields);
            let got = kernel::extract_ikconfig(&img)
                .unwrap_or_else(|e| panic!("{c} (payload fields {with_fields}): {e}"));
            assert_eq!(got.kind, ImageKind::BzImage(c));
            assert_eq!(got.text, config, "{c}");
            assert_eq!(kernel::vmlinux_from_bzimage(&img).unwrap(), vmlinux, "{c}");
        }
    }
}

#[test]
#[ignore = "downloads packages"]
fn ikconfig_found_in_vmlinux_and_arm64_images() {
    let (_, config_path) = common::debian_cloud_kernel();
    let config = std::fs::read_to_string(&config_path).unwrap();
    let vmlinux = small_vmlinux(&config);
    let got = kernel::extract_ikconfig(&vmlinux).unwrap();
    assert_eq!(got.kind, ImageKind::Elf);
    assert_eq!(got.text, config);

    // arm64 `Image`: raw bytes with the "ARM\x64" magic at 0x38, config inside.
    let mut image = vec![0u8; 64];
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    image.extend(ikconfig_blob(&config));
    image.extend(vec![0u8; 4096]);
    let got = kernel::extract_ikconfig(&image).unwrap();
    assert_eq!(got.kind, ImageKind::Raw);
    assert_eq!(got.text, config);

    let image_gz = compress("gzip", &["-n", "-9"], &image);
    let got = kernel::extract_ikconfig(&image_gz).unwrap();
    assert_eq!(got.kind, ImageKind::Compressed(Compression::Gzip));
    assert_eq!(got.text, config);

    let (parsed, _) = {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Image.gz");
        std::fs::write(&p, &image_gz).unwrap();
        kernel::load_config(&p).unwrap()
    };
    assert_eq!(parsed.value("SYSVIPC"), kernel::Value::Yes);
}

/// The real Debian vmlinux with a real config embedded, recompressed with LZ4 (what Debian
/// uses) into the real Debian setup header: the timing here is the figure for a real kernel.
#[test]
#[ignore = "downloads packages"]
fn ikconfig_in_full_size_debian_kernel() {
    let (vmlinuz, config_path) = common::debian_cloud_kernel();
    let config = std::fs::read_to_string(&config_path).unwrap();
    let original = std::fs::read(&vmlinuz).unwrap();
    let mut vmlinux = kernel::vmlinux_from_bzimage(&original).unwrap();
    vmlinux.extend(ikconfig_blob(&config));
    let payload = kernel_compress(Compression::Lz4, &vmlinux);

    let setup_sects = original[0x1f1] as usize;
    let pm_start = (setup_sects + 1) * 512;
    let off = u32::from_le_bytes(original[0x248..0x24c].try_into().unwrap()) as usize;
    let mut img = original[..pm_start + off].to_vec();
    img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    img.extend_from_slice(&payload);

    let got = kernel::extract_ikconfig(&img).unwrap();
    eprintln!(
        "IKCONFIG from a {} MiB LZ4 bzImage ({} MiB vmlinux): {:?}",
        img.len() >> 20,
        vmlinux.len() >> 20,
        got.elapsed
    );
    assert_eq!(got.kind, ImageKind::BzImage(Compression::Lz4));
    assert_eq!(got.text, config);
}
