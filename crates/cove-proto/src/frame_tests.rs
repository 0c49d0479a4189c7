use super::*;

fn frame(kind: FrameKind, stream: u32, payload: &[u8]) -> Vec<u8> {
    Frame::new(kind, 0, stream, payload.to_vec())
        .encode()
        .unwrap()
}

fn decode_all(dec: &mut Decoder, bytes: &[u8]) -> (Vec<Frame>, Vec<DecodeError>) {
    let mut frames = Vec::new();
    let mut errs = Vec::new();
    let mut off = 0;
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => errs.push(e),
            }
        }
        if off == bytes.len() {
            break;
        }
        off += dec.push(&bytes[off..]);
    }
    (frames, errs)
}

#[test]
fn roundtrip_one_byte_at_a_time() {
    let mut wire = frame(FrameKind::Data, 7, b"hello");
    wire.extend(frame(FrameKind::Close, 7, b""));
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    for b in &wire {
        assert_eq!(dec.push(std::slice::from_ref(b)), 1);
        while let Some(f) = dec.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload, b"hello");
    assert_eq!(got[0].stream, 7);
    assert_eq!(got[1].kind, FrameKind::Close);
}

#[test]
fn oversized_payload_is_refused_by_encoder() {
    let big = vec![0u8; MAX_PAYLOAD + 1];
    assert_eq!(
        Frame::new(FrameKind::Data, 0, 1, big).encode(),
        Err(EncodeError::TooLarge {
            len: MAX_PAYLOAD + 1
        })
    );
}

#[test]
fn preamble_and_leading_garbage_are_skipped_silently() {
    let mut wire = vec![0u8; SYNC_PREAMBLE_LEN];
    wire.extend_from_slice(b"login: \x1b[6n garbage");
    wire.extend(frame(FrameKind::Ping, 0, &[1; 8]));
    let (frames, errs) = decode_all(&mut Decoder::new(), &wire);
    assert_eq!(frames.len(), 1);
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn garbage_after_sync_is_reported_once_then_skipped() {
    let mut wire = frame(FrameKind::Ping, 0, &[1; 8]);
    wire.extend(std::iter::repeat_n(0x55u8, 100_000));
    wire.extend(frame(FrameKind::Pong, 0, &[1; 8]));
    let mut dec = Decoder::new();
    let (frames, errs) = decode_all(&mut dec, &wire);
    assert_eq!(frames.len(), 2);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(matches!(errs[0], DecodeError::Garbage { .. }));
    assert_eq!(dec.skipped_bytes(), 100_000);
}

#[test]
fn a_sync_preamble_in_the_middle_of_a_session_is_padding_not_garbage() {
    // What a restarted peer sends: its zero preamble, then a Hello. Reporting
    // the zeros made both ends answer with preambles of their own, forever.
    let mut wire = frame(FrameKind::Ping, 0, &[1; 8]);
    wire.extend(std::iter::repeat_n(0u8, SYNC_PREAMBLE_LEN));
    wire.extend(frame(FrameKind::Hello, 0, &[2; 8]));
    let mut dec = Decoder::new();
    let (frames, errs) = decode_all(&mut dec, &wire);
    assert_eq!(frames.len(), 2);
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn stale_partial_frame_does_not_swallow_the_next_hello() {
    // A writer died after the header and 10 payload bytes of a 60000-byte frame; the new writer
    // sends the preamble and a frame. The decoder must find that frame.
    let stale = frame(FrameKind::Data, 3, &vec![0xAB; 60_000]);
    let mut wire = frame(FrameKind::Ping, 0, &[2; 8]);
    wire.extend_from_slice(&stale[..HEADER_LEN + 10]);
    wire.extend(vec![0u8; SYNC_PREAMBLE_LEN]);
    wire.extend(frame(FrameKind::Hello, 0, b"{}"));
    let (frames, errs) = decode_all(&mut Decoder::new(), &wire);
    assert_eq!(
        frames.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [FrameKind::Ping, FrameKind::Hello]
    );
    assert_eq!(errs, [DecodeError::PayloadChecksum]);
}

#[test]
fn hello_hidden_inside_a_stale_payload_is_found() {
    // Without a preamble: the stale frame's payload is completed by the fresh frames themselves.
    let stale = frame(FrameKind::Data, 3, &[0xAB; 40]);
    let mut wire = stale[..HEADER_LEN + 5].to_vec();
    for _ in 0..3 {
        wire.extend(frame(FrameKind::Hello, 0, b"{\"x\":1}"));
    }
    let (frames, _errs) = decode_all(&mut Decoder::new(), &wire);
    assert!(
        frames.iter().any(|f| f.kind == FrameKind::Hello),
        "{frames:?}"
    );
}

#[test]
fn huge_length_in_valid_looking_header_is_rejected() {
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&MAGIC);
    hdr.extend_from_slice(&[3, 0, 0, 0]);
    hdr.extend_from_slice(&1u32.to_le_bytes());
    hdr.extend_from_slice(&u32::MAX.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    let c = crc32fast::hash(&hdr);
    hdr.extend_from_slice(&c.to_le_bytes());
    let mut wire = frame(FrameKind::Ping, 0, &[0; 8]);
    wire.extend(hdr);
    let (_, errs) = decode_all(&mut Decoder::new(), &wire);
    assert_eq!(errs, [DecodeError::TooLarge { len: u32::MAX }]);
}

#[test]
fn unknown_kind_is_skipped_with_typed_error() {
    let mut f = frame(FrameKind::Ping, 0, b"");
    f[4] = 200;
    let hc = crc32fast::hash(&f[..20]);
    f[20..24].copy_from_slice(&hc.to_le_bytes());
    f.extend(frame(FrameKind::Pong, 0, b""));
    let (frames, errs) = decode_all(&mut Decoder::new(), &f);
    assert_eq!(errs, [DecodeError::UnknownKind { kind: 200 }]);
    assert_eq!(frames.len(), 1);
}

/// Small xorshift generator: the test must be deterministic and dependency free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_never_panic_and_memory_stays_bounded() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let valid = frame(FrameKind::Data, 1, b"payload");
    for round in 0..300 {
        let mut dec = Decoder::new();
        let len = (rng.next() % 300_000) as usize;
        let mut wire: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Sprinkle magics, valid frames and truncated frames so the interesting paths run.
        for _ in 0..(rng.next() % 50) {
            let at = (rng.next() as usize) % (wire.len() + 1);
            let piece: Vec<u8> = match rng.next() % 3 {
                0 => MAGIC.to_vec(),
                1 => valid.clone(),
                _ => valid[..(rng.next() as usize % valid.len())].to_vec(),
            };
            wire.splice(at..at, piece);
        }
        let mut off = 0;
        while off < wire.len() {
            let chunk = 1 + (rng.next() % 9000) as usize;
            let end = (off + chunk).min(wire.len());
            off += dec.push(&wire[off..end]);
            while let Ok(Some(_)) | Err(_) = dec.next_frame() {}
            assert_eq!(dec.buf.len(), MAX_FRAME, "round {round}: buffer grew");
            assert!(dec.end - dec.pos <= MAX_FRAME);
        }
    }
}

#[test]
fn blocking_helpers_roundtrip() {
    let mut wire = Vec::new();
    write_frame(&mut wire, &Frame::new(FrameKind::Msg, 0, 9, b"{}".to_vec())).unwrap();
    let mut r = &wire[..];
    let mut dec = Decoder::new();
    let f = read_frame(&mut r, &mut dec).unwrap();
    assert_eq!(f.stream, 9);
    assert!(matches!(
        read_frame(&mut r, &mut dec),
        Err(ReadFrameError::Eof)
    ));
}

/// Regression (issue 10, finding 1): valid headers nested 24 bytes apart, each announcing a
/// full payload whose checksum is wrong, made the decoder hash 64 KiB per 24 bytes received.
#[test]
fn nested_headers_with_bad_checksums_cost_a_bounded_amount_of_hashing() {
    fn bad_header(len: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&[FrameKind::Data as u8, 0, 0, 0]);
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        let hcrc = crc32fast::hash(&h[..20]);
        h.extend_from_slice(&hcrc.to_le_bytes());
        h
    }
    let mut dec = Decoder::new();
    let mut sent = 0u64;
    // A real frame first, so the decoder is synced and reports errors.
    let first = frame(FrameKind::Ping, 0, &[1; 8]);
    let (frames, _) = decode_all(&mut dec, &first);
    assert_eq!(frames.len(), 1);
    sent += first.len() as u64;
    let hdr = bad_header(MAX_PAYLOAD as u32);
    for _ in 0..20_000 {
        let (frames, _) = decode_all(&mut dec, &hdr);
        assert!(frames.is_empty());
        sent += hdr.len() as u64;
    }
    let bound = 6 * sent + 4 * MAX_FRAME as u64;
    assert!(
        dec.hashed_bytes() <= bound,
        "hashed {} bytes for {sent} received (bound {bound})",
        dec.hashed_bytes()
    );
    // And a valid frame behind the flood is still found.
    let tail = frame(FrameKind::Pong, 0, &[2; 8]);
    let mut wire = vec![0u8; SYNC_PREAMBLE_LEN];
    wire.extend_from_slice(&tail);
    let (frames, _) = decode_all(&mut dec, &wire);
    assert_eq!(frames.last().map(|f| f.kind), Some(FrameKind::Pong));
}
