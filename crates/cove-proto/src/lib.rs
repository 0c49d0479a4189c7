//! The protocol between the cove host side and `cove-agent` in the guest.
//!
//! * [`frame`]: bounded frames with magic, checksums and a resynchronising decoder.
//! * [`session`]: the Hello rules that resynchronise after either end restarts.
//! * [`credit`]: per-stream flow control.
//! * [`msg`]: the serde messages (exec, files, ps, shutdown, errors).
//!
//! Serde only: no async runtime, so both the static agent and the tokio host use it.
//!
//! # Wire protocol (version [`PROTOCOL_VERSION`])
//!
//! One byte stream (the virtio-serial port `org.cove.agent`, or a unix socket in tests) carries
//! [`Frame`]s: a 24-byte header (magic, kind, channel, stream id, length, payload CRC, header
//! CRC) and at most [`MAX_PAYLOAD`] bytes. Control payloads are JSON, data payloads raw bytes.
//!
//! * Session: each side starts (and restarts after a decode error or a silent peer) by writing
//!   [`SYNC_PREAMBLE_LEN`] zero bytes and a `Hello` request; the receiver of a request resets all
//!   streams and replies. Until synced, everything but Hello is dropped. See [`session`].
//! * Streams: only the host opens them (`Open` with an [`OpenRequest`], ids never reused on a
//!   connection). The agent answers [`StreamMsg::Started`] (or `Error` then `Close`), then data
//!   on [`Channel`]s (`Eof` per channel), messages (`Exit`, `FileMeta`, `Proc`, `Done`, …) and
//!   finally `Close`. The host aborts with `Reset`, which kills an exec's process group.
//! * Flow control: every Data/Msg frame costs its length plus [`FRAME_COST`] of the receiver's
//!   per-stream window ([`INITIAL_WINDOW`]); `Window` frames return credit as the consumer takes
//!   the bytes. See [`credit`].
//! * Liveness: `Ping`/`Pong` on stream 0.

pub mod credit;
pub mod frame;
pub mod msg;
pub mod session;

pub use credit::{FRAME_COST, INITIAL_WINDOW, RecvWindow, cost};
pub use frame::{
    Channel, DecodeError, Decoder, EncodeError, Frame, FrameKind, HEADER_LEN, MAGIC, MAX_FRAME,
    MAX_PAYLOAD, ReadFrameError, SYNC_PREAMBLE_LEN, encode_into, read_frame, write_frame,
};
pub use msg::*;
pub use session::{HelloAction, Session, fresh_nonce};

/// Name of the virtio-serial port the agent listens on (defined by the guest contract).
pub use cove_guest::AGENT_PORT_NAME;
