//! The agent byte stream as a hostile peer sends it: the decoder over arbitrary chunking, the
//! Hello session rules, per-stream credit and message parsing. Invariants checked: the decoder's
//! hashing stays within its budget, credit never underflows or overflows one window.
#![no_main]

use cove_proto::{
    Decoder, FrameKind, Hello, HelloAction, INITIAL_WINDOW, MAX_FRAME, OpenRequest, RecvWindow,
    Role, Session, StreamMsg, cost, from_payload,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (&first, rest) = match data.split_first() {
        Some(x) => x,
        None => return,
    };
    // The first byte picks the read size, so the same bytes are tried in many chunkings.
    let chunk = usize::from(first).max(1) * 7;
    let mut dec = Decoder::new();
    let mut session = Session::new(Role::Host, "fuzz", vec![]);
    let _ = session.restart(1);
    let mut window = RecvWindow::default();
    let mut credit = u64::from(INITIAL_WINDOW);
    let mut pushed = 0u64;
    let mut off = 0;
    while off < rest.len() {
        let end = (off + chunk).min(rest.len());
        while off < end {
            let n = dec.push(&rest[off..end]);
            pushed += n as u64;
            off += n;
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => match f.kind {
                        FrameKind::Hello => {
                            if let Ok(h) = from_payload::<Hello>("hello", &f.payload) {
                                let _ = matches!(session.on_hello(&h), HelloAction::Synced);
                            }
                        }
                        FrameKind::Open => {
                            let _ = from_payload::<OpenRequest>("open", &f.payload);
                        }
                        FrameKind::Msg | FrameKind::Data => {
                            if f.kind == FrameKind::Msg {
                                let _ = from_payload::<StreamMsg>("stream", &f.payload);
                            }
                            let c = cost(f.payload.len());
                            if window.on_receive(c) {
                                let _ = window.on_consume(c);
                            }
                        }
                        FrameKind::Window => {
                            if let Ok(b) = <[u8; 4]>::try_from(&f.payload[..]) {
                                let inc = u64::from(u32::from_le_bytes(b));
                                // The host's rule (mux.rs): never above one window.
                                if credit + inc <= u64::from(INITIAL_WINDOW) {
                                    credit += inc;
                                }
                            }
                        }
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        }
    }
    assert!(credit <= u64::from(INITIAL_WINDOW));
    assert!(
        dec.hashed_bytes() <= 6 * pushed + 4 * MAX_FRAME as u64,
        "decoder hashed {} bytes for {pushed} received",
        dec.hashed_bytes()
    );
});
