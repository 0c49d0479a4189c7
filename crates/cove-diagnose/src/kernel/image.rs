//! Kernel image formats: x86 bzImage (setup header + compressed payload), raw ELF vmlinux,
//! arm64 `Image` / `Image.gz`, and the embedded IKCONFIG blob inside any of them.
//!
//! The bzImage layout is documented in the kernel's Documentation/arch/x86/boot.rst; we only
//! read the few header fields we need, so a dedicated crate would not pay for itself.

use std::io::Read;
use std::time::{Duration, Instant};

use memchr::memmem;
use serde::Serialize;

use super::KernelError;

/// Offset of the `HdrS` magic in the real-mode setup header.
const HDRS_OFFSET: usize = 0x202;
const SETUP_SECTS_OFFSET: usize = 0x1f1;
const VERSION_OFFSET: usize = 0x206;
const PAYLOAD_OFFSET_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH_OFFSET: usize = 0x24c;

const IKCFG_START: &[u8] = b"IKCFG_ST";
const IKCFG_END: &[u8] = b"IKCFG_ED";

/// A compression format the kernel build can use for its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Xz,
    Lzma,
    /// The legacy LZ4 frame format (`lz4 -l`), which is what the kernel build produces.
    Lz4,
    Zstd,
    Bzip2,
}

impl Compression {
    /// All formats, in the order we try them when scanning for magics.
    pub const ALL: [Compression; 6] = [
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
        Compression::Lz4,
        Compression::Bzip2,
        Compression::Lzma,
    ];

    /// The magic bytes a stream of this format starts with.
    fn magic(self) -> &'static [u8] {
        match self {
            Compression::Gzip => &[0x1f, 0x8b, 0x08],
            Compression::Xz => &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            // lzma "alone" header: properties byte 0x5d (lc=3 lp=0 pb=2), dictionary size LE.
            // Weak magic; only used after the stronger ones failed.
            Compression::Lzma => &[0x5d, 0x00, 0x00],
            Compression::Lz4 => &[0x02, 0x21, 0x4c, 0x18],
            Compression::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Compression::Bzip2 => b"BZh",
        }
    }

    /// Detect the format of a stream from its first bytes.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| data.starts_with(c.magic()))
    }

    /// Decompress one stream, ignoring anything after its end (the kernel build appends the
    /// uncompressed size as 4 bytes after the payload). Output beyond [`MAX_DECOMPRESSED`] is
    /// an error: a few KiB of crafted zstd or gzip must not take gigabytes.
    pub fn decompress(self, data: &[u8]) -> Result<Vec<u8>, KernelError> {
        let wrap = |source: std::io::Error| KernelError::Decompress {
            format: self,
            source,
        };
        let mut out = Vec::with_capacity(data.len().saturating_mul(3).min(MAX_DECOMPRESSED));
        let cap = MAX_DECOMPRESSED as u64 + 1;
        match self {
            Compression::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .take(cap)
                    .read_to_end(&mut out)
                    .map_err(wrap)?;
            }
            Compression::Xz => {
                let stream = xz2::stream::Stream::new_stream_decoder(DECODER_MEMLIMIT, 0)
                    .map_err(|e| wrap(e.into()))?;
                xz_like(stream, data, &mut out).map_err(wrap)?;
            }
            Compression::Lzma => {
                let stream = xz2::stream::Stream::new_lzma_decoder(DECODER_MEMLIMIT)
                    .map_err(|e| wrap(e.into()))?;
                xz_like(stream, data, &mut out).map_err(wrap)?;
            }
            Compression::Lz4 => lz4_legacy(data, &mut out).map_err(wrap)?,
            Compression::Zstd => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(data)
                    .map_err(wrap)?
                    .single_frame();
                // The kernel compresses with `zstd -22 --ultra`, whose window may exceed the
                // library's default limit; no window needs to be larger than the most cove
                // decompresses (256 MiB), and a frame asking for more (up to 2 GiB, found by
                // the `kernel_image` fuzz target) would only make the decoder allocate it.
                dec.window_log_max(MAX_DECOMPRESSED.ilog2()).map_err(wrap)?;
                dec.take(cap).read_to_end(&mut out).map_err(wrap)?;
            }
            Compression::Bzip2 => {
                bzip2::read::BzDecoder::new(data)
                    .take(cap)
                    .read_to_end(&mut out)
                    .map_err(wrap)?;
            }
        }
        if out.len() > MAX_DECOMPRESSED {
            return Err(wrap(too_big()));
        }
        Ok(out)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        };
        f.write_str(s)
    }
}

/// Largest decompressed kernel or initramfs segment read (a distribution vmlinux is ~60 MiB).
#[cfg(not(fuzzing))]
pub const MAX_DECOMPRESSED: usize = 256 << 20;
/// Under the fuzzer (cargo-fuzz sets `--cfg fuzzing`) the same limit is 8 MiB: every path
/// through the decoders and the limit check is the same, but a compression bomb the fuzzer
/// finds no longer fills and zeroes up to 256 MiB on each execution.
#[cfg(fuzzing)]
pub const MAX_DECOMPRESSED: usize = 8 << 20;

fn too_big() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "decompresses to more than {} MiB; not a kernel or initramfs cove can read",
            MAX_DECOMPRESSED >> 20
        ),
    )
}

/// The most memory liblzma may take to decode one kernel or initramfs. The header of an xz or
/// lzma stream names its dictionary size, up to 4 GiB: without a limit a crafted 100-byte file
/// made the decoder allocate 4 GiB (found by the `kernel_image` fuzz target). Linux compresses
/// with dictionaries of at most 64 MiB.
const DECODER_MEMLIMIT: u64 = 256 << 20;

/// Run a liblzma decoder until its stream ends, so trailing bytes are ignored.
fn xz_like(mut stream: xz2::stream::Stream, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut input = data;
    loop {
        if out.len() > MAX_DECOMPRESSED {
            return Err(too_big());
        }
        if out.capacity() - out.len() < 1 << 20 {
            out.reserve(4 << 20);
        }
        let before_in = stream.total_in();
        let before_out = stream.total_out();
        let status = stream
            .process_vec(input, out, xz2::stream::Action::Run)
            .map_err(std::io::Error::from)?;
        let consumed = (stream.total_in() - before_in) as usize;
        input = &input[consumed..];
        if status == xz2::stream::Status::StreamEnd {
            return Ok(());
        }
        if consumed == 0 && stream.total_out() == before_out && input.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "compressed stream is truncated",
            ));
        }
    }
}

/// Decode the legacy LZ4 format: a 4-byte magic, then blocks of `u32 LE compressed size` +
/// raw LZ4 block, each at most 8 MiB uncompressed. lz4_flex only implements the modern frame
/// format, so the (tiny) legacy framing is done here.
fn lz4_legacy(data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    const MAGIC: u32 = 0x184c_2102;
    const LZ4_MAX_RATIO: usize = 255;
    const BLOCK_MAX: usize = 8 << 20;
    let mut pos = 4;
    while pos + 4 <= data.len() {
        let size = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        if size == MAGIC {
            // Concatenated legacy streams.
            pos += 4;
            continue;
        }
        let size = size as usize;
        // A size larger than what remains is the appended uncompressed length (or garbage):
        // the stream is over.
        if size == 0 || pos + 4 + size > data.len() {
            break;
        }
        let block = &data[pos + 4..pos + 4 + size];
        // LZ4 expands at most 255-fold (a length byte adds at most 255 bytes of output): no
        // block needs more room, and a small block must not cost an 8 MiB zeroed buffer.
        let room = size.saturating_mul(LZ4_MAX_RATIO).min(BLOCK_MAX);
        let decoded = lz4_flex::block::decompress(block, room)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        out.extend_from_slice(&decoded);
        if out.len() > MAX_DECOMPRESSED {
            return Err(too_big());
        }
        pos += 4 + size;
    }
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no LZ4 block found",
        ));
    }
    Ok(())
}

/// What kind of image a file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "compression")]
pub enum ImageKind {
    /// x86 bzImage with a payload in the given compression.
    BzImage(Compression),
    /// Uncompressed ELF vmlinux.
    Elf,
    /// A whole-file compressed image (e.g. arm64 `Image.gz`).
    Compressed(Compression),
    /// An uncompressed raw image (e.g. arm64 `Image`).
    Raw,
}

/// The fields of the x86 setup header we use.
#[derive(Debug, Clone, Copy)]
struct SetupHeader {
    /// Offset of the protected-mode code in the file.
    pm_start: usize,
    /// Boot protocol version (0x0208 and later have payload_offset/length).
    version: u16,
    payload_offset: usize,
    payload_length: usize,
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn setup_header(data: &[u8]) -> Option<SetupHeader> {
    if data.get(HDRS_OFFSET..HDRS_OFFSET + 4)? != b"HdrS" {
        return None;
    }
    // setup_sects == 0 means 4 for historical reasons (boot.rst).
    let sects = match *data.get(SETUP_SECTS_OFFSET)? {
        0 => 4,
        n => n as usize,
    };
    let version = u16::from_le_bytes([*data.get(VERSION_OFFSET)?, *data.get(VERSION_OFFSET + 1)?]);
    Some(SetupHeader {
        pm_start: (sects + 1) * 512,
        version,
        payload_offset: read_u32(data, PAYLOAD_OFFSET_OFFSET)? as usize,
        payload_length: read_u32(data, PAYLOAD_LENGTH_OFFSET)? as usize,
    })
}

/// Is this an x86 bzImage (has the `HdrS` setup header magic)?
pub fn is_bzimage(data: &[u8]) -> bool {
    setup_header(data).is_some()
}

/// Decompress the payload of a bzImage: the result is the ELF `vmlinux` (usable for PVH boot).
///
/// The payload is located through the setup header's `payload_offset`/`payload_length`
/// (boot protocol 2.08+); older or odd images are scanned for compression magics instead.
pub fn vmlinux_from_bzimage(data: &[u8]) -> Result<Vec<u8>, KernelError> {
    let (_, vmlinux) = decompress_bzimage(data)?;
    if !vmlinux.starts_with(b"\x7fELF") {
        return Err(KernelError::NotElf);
    }
    Ok(vmlinux)
}

/// Decompress a bzImage payload, returning the compression used and the decompressed bytes.
pub fn decompress_bzimage(data: &[u8]) -> Result<(Compression, Vec<u8>), KernelError> {
    let hdr = setup_header(data).ok_or(KernelError::NotBzImage)?;
    if hdr.version >= 0x0208 && hdr.payload_length > 0 {
        let start = hdr.pm_start.saturating_add(hdr.payload_offset);
        let end = start.saturating_add(hdr.payload_length);
        if let Some(payload) = data.get(start..end)
            && let Some(c) = Compression::detect(payload)
        {
            return Ok((c, c.decompress(payload)?));
        }
    }
    scan_decompress(&data[hdr.pm_start.min(data.len())..], |out| {
        out.starts_with(b"\x7fELF")
    })
    .ok_or(KernelError::NoPayload)
}

/// Find a compressed stream anywhere in `data` whose decompressed content satisfies `accept`.
fn scan_decompress(data: &[u8], accept: impl Fn(&[u8]) -> bool) -> Option<(Compression, Vec<u8>)> {
    for c in Compression::ALL {
        for pos in memmem::find_iter(data, c.magic()) {
            if let Ok(out) = c.decompress(&data[pos..])
                && accept(&out)
            {
                return Some((c, out));
            }
        }
    }
    None
}

/// The kernel config text embedded in a kernel image, with how it was found.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedConfig {
    pub kind: ImageKind,
    /// The `.config` text.
    #[serde(skip)]
    pub text: String,
    /// Time spent decompressing and locating the config.
    pub elapsed: Duration,
}

/// Extract the IKCONFIG (`CONFIG_IKCONFIG=y`) blob from any supported kernel image.
pub fn extract_ikconfig(data: &[u8]) -> Result<EmbeddedConfig, KernelError> {
    let started = Instant::now();
    let (kind, text) = if is_bzimage(data) {
        let (c, vmlinux) = decompress_bzimage(data)?;
        (ImageKind::BzImage(c), ikconfig_in(&vmlinux)?)
    } else if data.starts_with(b"\x7fELF") {
        (ImageKind::Elf, ikconfig_in(data)?)
    } else if let Some(c) = Compression::detect(data) {
        let inner = c.decompress(data)?;
        (ImageKind::Compressed(c), ikconfig_in(&inner)?)
    } else {
        (ImageKind::Raw, ikconfig_in(data)?)
    };
    Ok(EmbeddedConfig {
        kind,
        text,
        elapsed: started.elapsed(),
    })
}

/// Find `IKCFG_ST<gzip>IKCFG_ED` in uncompressed kernel bytes and return the config text.
pub fn ikconfig_in(data: &[u8]) -> Result<String, KernelError> {
    let start = memmem::find(data, IKCFG_START).ok_or(KernelError::NoIkconfig)? + IKCFG_START.len();
    let len = memmem::find(&data[start..], IKCFG_END).ok_or(KernelError::NoIkconfig)?;
    let bytes = Compression::Gzip.decompress(&data[start..start + len])?;
    String::from_utf8(bytes).map_err(|_| KernelError::NoIkconfig)
}

#[cfg(test)]
mod bomb_tests {
    use super::*;

    /// Regression (issue 10, found by fuzzing): a zstd frame asking for a 2 GiB window is
    /// refused instead of allocated.
    #[test]
    fn a_huge_zstd_window_is_refused_not_allocated() {
        let crafted = [
            0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa7, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x13, 0x1b,
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x49, 0x82,
        ];
        let err = Compression::Zstd.decompress(&crafted).unwrap_err();
        let chain = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(chain.contains("too much memory"), "{chain}");
    }

    /// Regression (issue 10, found by fuzzing): an lzma header asking for a 4 GiB dictionary
    /// is refused by the decoder's memory limit instead of allocated.
    #[test]
    fn a_huge_lzma_dictionary_is_refused_not_allocated() {
        let mut crafted = vec![0x5d, 0x00, 0x00, 0x80, 0xff]; // props, dictionary 0xff800000
        crafted.extend([0xff; 8]); // size unknown
        crafted.extend([0x00, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47]);
        let err = Compression::Lzma.decompress(&crafted).unwrap_err();
        let chain = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(chain.to_lowercase().contains("memory"), "{chain}");
    }

    /// An LZ4 block as dense as LZ4 gets (zeros, about 255 to 1) decodes whole: the room a
    /// block is given follows its size and must not cut the densest real block short.
    #[test]
    fn the_densest_lz4_block_decodes_whole() {
        let zeros = vec![0u8; 4 << 20];
        let block = lz4_flex::block::compress(&zeros);
        assert!(zeros.len() / block.len() > 250, "{} bytes", block.len());
        let mut legacy = 0x184c_2102u32.to_le_bytes().to_vec();
        legacy.extend((block.len() as u32).to_le_bytes());
        legacy.extend(&block);
        assert_eq!(Compression::Lz4.decompress(&legacy).unwrap(), zeros);
    }

    /// Regression (issue 10): a small crafted stream decompressed without limit.
    #[test]
    fn a_decompression_bomb_is_refused_not_inflated() {
        let zeros = std::io::repeat(0).take(MAX_DECOMPRESSED as u64 + (16 << 20));
        let bomb = zstd::stream::encode_all(zeros, 3).unwrap();
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let err = Compression::Zstd.decompress(&bomb).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        assert!(
            std::error::Error::source(&err)
                .is_some_and(|s| s.to_string().contains("more than 256 MiB")),
            "{err:?}"
        );
    }
}
