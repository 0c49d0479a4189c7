//! Bounded, self-synchronising frames.
//!
//! Layout (little endian), 24 bytes of header then `len` bytes of payload:
//!
//! ```text
//! 0..4   MAGIC
//! 4      kind            (FrameKind)
//! 5      channel         (Channel for Data/Eof, 0 otherwise)
//! 6..8   reserved, 0
//! 8..12  stream id       (0 = the connection itself)
//! 12..16 payload length  (<= MAX_PAYLOAD)
//! 16..20 CRC-32 of the payload
//! 20..24 CRC-32 of bytes 0..20
//! ```
//!
//! Why two checksums: the byte stream between host and guest can hold stale bytes (a writer killed
//! mid-frame, a previous host client). The header CRC lets the decoder reject garbage that happens
//! to contain the magic without waiting for a bogus length's worth of bytes; the payload CRC lets
//! it notice that a stale partial frame "swallowed" the start of a fresh one, in which case it
//! rescans from just after the bad header instead of dropping the whole payload. Together with the
//! zero-filled [`SYNC_PREAMBLE_LEN`] a fresh sender writes first, any valid frame that follows
//! stale bytes is found again.

use std::io::{self, Read, Write};

/// Marks the start of every frame. Chosen to be unlikely in text and in zero-filled memory.
pub const MAGIC: [u8; 4] = [0xC6, 0x0E, 0xA9, 0x7D];
/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
/// Largest payload a frame may carry; the decoder never buffers more than one such frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest encoded frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;
/// Zero bytes a fresh sender writes before its first Hello: they complete any stale partial frame
/// on the wire (which then fails its payload CRC) and are skipped by a hunting decoder.
pub const SYNC_PREAMBLE_LEN: usize = MAX_FRAME;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// JSON [`crate::Hello`], stream 0: (re)starts a session; the receiver resets every stream.
    Hello = 1,
    /// JSON [`crate::OpenRequest`]: opens `stream` (only the host opens streams).
    Open = 2,
    /// Raw bytes on `channel` of `stream`; counts against the receiver's window.
    Data = 3,
    /// End of `channel` of `stream` (half close).
    Eof = 4,
    /// 4-byte LE credit increment for `stream`: the receiver consumed that many bytes.
    Window = 5,
    /// JSON [`crate::StreamMsg`] on `stream`; counts against the window like data.
    Msg = 6,
    /// The sender is done with `stream`; the id may be reused after both sides closed it.
    Close = 7,
    /// Abort `stream`; payload is a UTF-8 reason.
    Reset = 8,
    /// 8-byte nonce, stream 0; answered by Pong with the same nonce.
    Ping = 9,
    /// Answer to Ping.
    Pong = 10,
}

impl FrameKind {
    /// Parses the wire value; `None` for kinds this version does not know.
    pub fn from_u8(v: u8) -> Option<Self> {
        use FrameKind::*;
        Some(match v {
            1 => Hello,
            2 => Open,
            3 => Data,
            4 => Eof,
            5 => Window,
            6 => Msg,
            7 => Close,
            8 => Reset,
            9 => Ping,
            10 => Pong,
            _ => return None,
        })
    }
}

/// Byte channels within a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Channel {
    /// stdin of an exec, or file content (either direction).
    Data = 0,
    /// stdout of an exec (the merged output for a TTY).
    Stdout = 1,
    /// stderr of an exec.
    Stderr = 2,
}

impl Channel {
    /// Parses the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Channel::Data),
            1 => Some(Channel::Stdout),
            2 => Some(Channel::Stderr),
            _ => None,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub channel: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A frame that cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller must split data into chunks of at most [`MAX_PAYLOAD`] bytes.
    #[error(
        "frame payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit; split it into smaller chunks"
    )]
    TooLarge { len: usize },
}

/// Bytes that are not a valid frame. The decoder has already skipped past them.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Bytes before a frame did not start with the magic: stale bytes or a peer that does not
    /// speak this protocol (check that the socket really is the cove agent's port).
    #[error(
        "{skipped} bytes of garbage before a frame (no frame magic); the peer may not be cove-agent or the stream held stale bytes"
    )]
    Garbage { skipped: u64 },
    /// The header checksum did not match.
    #[error("frame header checksum mismatch; the byte stream is corrupted or desynchronised")]
    HeaderChecksum,
    /// The header announced a payload larger than the limit.
    #[error(
        "frame announces {len} payload bytes, more than the {MAX_PAYLOAD}-byte limit; the peer is broken or hostile"
    )]
    TooLarge { len: u32 },
    /// The payload checksum did not match (typically a stale partial frame).
    #[error("frame payload checksum mismatch; a stale partial frame was discarded")]
    PayloadChecksum,
    /// A well-formed frame of a kind this version does not know; it was skipped.
    #[error(
        "unknown frame kind {kind}; the peer speaks a newer protocol (upgrade cove or the agent)"
    )]
    UnknownKind { kind: u8 },
}

/// Encodes one frame, appending to `out`.
pub fn encode_into(
    out: &mut Vec<u8>,
    kind: FrameKind,
    channel: u8,
    stream: u32,
    payload: &[u8],
) -> Result<(), EncodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::TooLarge { len: payload.len() });
    }
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(kind as u8);
    out.push(channel);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let hcrc = crc32fast::hash(&out[start..start + 20]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

impl Frame {
    /// Builds a frame.
    pub fn new(kind: FrameKind, channel: u8, stream: u32, payload: Vec<u8>) -> Self {
        Frame {
            kind,
            channel,
            stream,
            payload,
        }
    }

    /// Encodes into a fresh buffer.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        encode_into(
            &mut out,
            self.kind,
            self.channel,
            self.stream,
            &self.payload,
        )?;
        Ok(out)
    }
}

/// Incremental decoder over an untrusted byte stream.
///
/// It holds at most [`MAX_FRAME`] bytes: [`Decoder::push`] accepts only what fits, so a peer can
/// never make it allocate more. It starts "hunting" (silently skipping bytes until a magic), so a
/// sync preamble or stale bytes before the first frame are not reported as errors; after a valid
/// frame, bytes that are not a frame are reported once as a [`DecodeError`] and then skipped.
#[derive(Debug)]
pub struct Decoder {
    /// Fixed [`MAX_FRAME`]-byte buffer; bytes `pos..end` are pending. Reads go straight into
    /// `end..`, and the pending part moves to the front only when the end is reached, so a
    /// stream of small reads costs neither a memset nor a memmove per read.
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    hunting: bool,
    skipped: u64,
    /// Bytes the decoder may still hash for payloads that then fail their checksum (see
    /// [`Decoder::hashed_bytes`]); earned by bytes pushed, capped at [`HASH_BUDGET_CAP`].
    hash_budget: usize,
    hashed: u64,
}

/// Failed-payload hashing a decoder may bank: enough to rescan a stale partial frame twice.
const HASH_BUDGET_CAP: usize = 4 * MAX_FRAME;
/// Failed-payload hashing earned per byte received.
const HASH_BUDGET_PER_BYTE: usize = 4;

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Decoder {
    /// A decoder in hunting state.
    pub fn new() -> Self {
        Decoder {
            buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            pos: 0,
            end: 0,
            hunting: true,
            skipped: 0,
            hash_budget: HASH_BUDGET_CAP,
            hashed: 0,
        }
    }

    /// Total bytes run through the payload checksum so far. Bounded by a small multiple of the
    /// bytes received: a payload that fails its checksum is rescanned from the next byte (a
    /// fresh frame may hide inside a stale one) only while the budget earned by received bytes
    /// lasts; past it the whole claimed frame is skipped. Without that, headers nested 24
    /// bytes apart, each announcing 64 KiB with a bad checksum, cost 64 KiB of hashing per 24
    /// bytes a peer sends.
    pub fn hashed_bytes(&self) -> u64 {
        self.hashed
    }

    fn earn(&mut self, n: usize) {
        self.hash_budget = self
            .hash_budget
            .saturating_add(n.saturating_mul(HASH_BUDGET_PER_BYTE))
            .min(HASH_BUDGET_CAP);
    }

    /// How many more bytes [`Decoder::push`] would accept now.
    pub fn space(&self) -> usize {
        MAX_FRAME - (self.end - self.pos)
    }

    /// Total bytes skipped as garbage so far.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
    }

    /// Copies as much of `data` as fits; returns how many bytes were taken. Call
    /// [`Decoder::next_frame`] until it yields `Ok(None)` before pushing the rest.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.space());
        if self.end + n > MAX_FRAME {
            self.compact();
        }
        self.buf[self.end..self.end + n].copy_from_slice(&data[..n]);
        self.end += n;
        self.earn(n);
        n
    }

    /// Reads once from `r` into the free space. Returns 0 on EOF (or when full, which cannot
    /// happen if frames are drained between reads).
    pub fn read_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.end == MAX_FRAME {
            self.compact();
        }
        if self.end == MAX_FRAME {
            return Ok(0);
        }
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        self.earn(n);
        Ok(n)
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
        self.skipped += n as u64;
    }

    /// Drops bytes up to the next possible magic. Returns how many were dropped.
    fn hunt(&mut self) -> usize {
        let avail = &self.buf[self.pos..self.end];
        let mut i = 0;
        while i < avail.len() {
            if avail[i] == MAGIC[0] {
                let rest = &avail[i..];
                let m = rest.len().min(4);
                if rest[..m] == MAGIC[..m] {
                    break;
                }
            }
            i += 1;
        }
        self.skip(i);
        i
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed, or an error
    /// describing bytes that were just discarded (call again to continue).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        loop {
            let start = self.pos;
            let dropped = self.hunt();
            // A peer starting a new session first sends a zero-filled sync
            // preamble: padding, not garbage, even in the middle of a
            // session. Reporting it made both ends answer each other's
            // preamble with one of their own, forever (seen with a restarted
            // agent under TCG).
            let padding = self.buf[start..start + dropped].iter().all(|&b| b == 0);
            if dropped > 0 && !padding && !self.hunting {
                self.hunting = true;
                return Err(DecodeError::Garbage {
                    skipped: dropped as u64,
                });
            }
            let avail = &self.buf[self.pos..self.end];
            if avail.len() < HEADER_LEN {
                return Ok(None);
            }
            let hdr = &avail[..HEADER_LEN];
            if crc32fast::hash(&hdr[..20]) != u32_at(hdr, 20) {
                self.skip(1);
                if !std::mem::replace(&mut self.hunting, true) {
                    return Err(DecodeError::HeaderChecksum);
                }
                continue;
            }
            let len = u32_at(hdr, 12);
            if len as usize > MAX_PAYLOAD {
                self.skip(1);
                if !std::mem::replace(&mut self.hunting, true) {
                    return Err(DecodeError::TooLarge { len });
                }
                continue;
            }
            let total = HEADER_LEN + len as usize;
            if avail.len() < total {
                return Ok(None);
            }
            let payload = &avail[HEADER_LEN..total];
            self.hashed += len as u64;
            if crc32fast::hash(payload) != u32_at(hdr, 16) {
                // Rescan from just after the bad header: a fresh frame may hide in this
                // "payload". Only while the budget lasts; past it skip the whole claimed frame,
                // so hashing stays within a few times the bytes received.
                if self.hash_budget >= len as usize {
                    self.hash_budget -= len as usize;
                    self.skip(1);
                } else {
                    self.skip(total);
                }
                if !std::mem::replace(&mut self.hunting, true) {
                    return Err(DecodeError::PayloadChecksum);
                }
                continue;
            }
            let kind_raw = hdr[4];
            let channel = hdr[5];
            let stream = u32_at(hdr, 8);
            let payload = payload.to_vec();
            self.pos += total;
            self.hunting = false;
            return match FrameKind::from_u8(kind_raw) {
                Some(kind) => Ok(Some(Frame {
                    kind,
                    channel,
                    stream,
                    payload,
                })),
                None => Err(DecodeError::UnknownKind { kind: kind_raw }),
            };
        }
    }
}

/// What [`read_frame`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    #[error("reading from the peer failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The peer closed the byte stream.
    #[error("the peer closed the connection")]
    Eof,
}

/// Blocking helper: reads until one frame (or a decode error) is available.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, dec: &mut Decoder) -> Result<Frame, ReadFrameError> {
    loop {
        if let Some(f) = dec.next_frame()? {
            return Ok(f);
        }
        if dec.read_from(r)? == 0 {
            return Err(ReadFrameError::Eof);
        }
    }
}

/// Blocking helper: encodes and writes one frame with a single `write_all`.
pub fn write_frame<W: Write + ?Sized>(w: &mut W, frame: &Frame) -> io::Result<()> {
    let bytes = frame
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    w.write_all(&bytes)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
