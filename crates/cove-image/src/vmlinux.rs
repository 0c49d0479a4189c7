//! The uncompressed `vmlinux` inside a bzImage, which QEMU boots through its
//! PVH entry point without running the kernel's decompressor (about 0.45 s
//! less per boot under TCG).
//!
//! Interim: cove-diagnose is to provide `kernel::vmlinux_from_bzimage`; this
//! small version (the payload location from the boot header, then the
//! matching decompressor) serves until then and should be replaced by it.

use std::io::Read;

/// Why no vmlinux could be taken out of a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("not a bzImage (no `HdrS` boot header)")]
    NotBzImage,
    #[error("the bzImage payload lies outside the file")]
    BadPayload,
    #[error("the payload is compressed with a method cove does not read (magic {0:02x?})")]
    UnknownCompression([u8; 4]),
    #[error("decompressing the payload failed: {0}")]
    Decompress(String),
    #[error("the payload is not an ELF image: {0}")]
    NotElf(String),
    #[error("the kernel has no PVH entry point (CONFIG_PVH), so QEMU cannot boot its vmlinux")]
    NoPvhNote,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Extracts the ELF vmlinux from a bzImage and checks QEMU can boot it (it
/// carries the Xen PVH entry note).
pub fn vmlinux_from_bzimage(bz: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        return Err(VmlinuxError::NotBzImage);
    }
    let setup_sects = match bz.get(0x1f1).copied().ok_or(VmlinuxError::NotBzImage)? {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let off = u32_at(bz, 0x248).ok_or(VmlinuxError::BadPayload)? as usize;
    let len = u32_at(bz, 0x24c).ok_or(VmlinuxError::BadPayload)? as usize;
    let payload = bz
        .get(pm_start + off..pm_start + off + len)
        .ok_or(VmlinuxError::BadPayload)?;
    let magic: [u8; 4] = payload
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or(VmlinuxError::BadPayload)?;
    let dec = |e: std::io::Error| VmlinuxError::Decompress(e.to_string());
    let mut out = Vec::new();
    match magic {
        [0x02, 0x21, 0x4c, 0x18] => out = lz4_legacy(payload)?,
        [0x1f, 0x8b, _, _] => {
            flate2::read::GzDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(dec)?;
        }
        [0xfd, 0x37, 0x7a, 0x58] => {
            xz2::read::XzDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(dec)?;
        }
        [0x28, 0xb5, 0x2f, 0xfd] => {
            // The kernel appends the size after the frame; the decoder stops at the frame's end.
            let mut d = zstd::stream::read::Decoder::new(payload)
                .map_err(dec)?
                .single_frame();
            d.read_to_end(&mut out).map_err(dec)?;
        }
        m => return Err(VmlinuxError::UnknownCompression(m)),
    }
    let elf = goblin::elf::Elf::parse(&out).map_err(|e| VmlinuxError::NotElf(e.to_string()))?;
    // XEN_ELFNOTE_PHYS32_ENTRY, the note QEMU looks for.
    const PHYS32_ENTRY: u32 = 18;
    let has_pvh = elf
        .iter_note_headers(&out)
        .into_iter()
        .flatten()
        .flatten()
        .any(|n| n.name == "Xen" && n.n_type == PHYS32_ENTRY);
    if !has_pvh {
        return Err(VmlinuxError::NoPvhNote);
    }
    Ok(out)
}

/// The LZ4 "legacy" framing the kernel uses: the magic, then blocks of
/// (u32 compressed length, data), each up to 8 MiB decompressed, and a
/// trailing u32 with the total size.
fn lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 4;
    while let Some(clen) = u32_at(payload, pos) {
        if clen == 0x184c_2102 {
            pos += 4; // a concatenated stream starts again
            continue;
        }
        let clen = clen as usize;
        if clen == 0 {
            break;
        }
        let Some(block) = payload.get(pos + 4..pos + 4 + clen) else {
            break; // the trailing size field
        };
        let n = lz4_flex::block::decompress_into(block, &mut buf)
            .map_err(|e| VmlinuxError::Decompress(e.to_string()))?;
        out.extend_from_slice(&buf[..n]);
        pos += 4 + clen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_kernels_are_refused() {
        assert!(matches!(
            vmlinux_from_bzimage(b"hello"),
            Err(VmlinuxError::NotBzImage)
        ));
        let mut fake = vec![0u8; 0x300];
        fake[0x202..0x206].copy_from_slice(b"HdrS");
        fake[0x248..0x24c].copy_from_slice(&0x1000u32.to_le_bytes());
        fake[0x24c..0x250].copy_from_slice(&16u32.to_le_bytes());
        assert!(matches!(
            vmlinux_from_bzimage(&fake),
            Err(VmlinuxError::BadPayload)
        ));
    }

    #[test]
    fn lz4_legacy_blocks_concatenate() {
        let a = vec![1u8; 100_000];
        let b = b"tail".to_vec();
        let mut payload = vec![0x02, 0x21, 0x4c, 0x18];
        for part in [&a, &b] {
            let c = lz4_flex::block::compress(part);
            payload.extend_from_slice(&(c.len() as u32).to_le_bytes());
            payload.extend_from_slice(&c);
        }
        payload.extend_from_slice(&(100_004u32).to_le_bytes());
        let out = lz4_legacy(&payload).unwrap();
        assert_eq!(out.len(), 100_004);
        assert_eq!(&out[100_000..], b"tail");
    }
}
