//! The protocol between the cove host side and `cove-agent` in the guest.
//!
//! * [`frame`]: bounded frames with magic, checksums and a resynchronising decoder.
//! * [`session`]: the Hello rules that resynchronise after either end restarts.
//! * [`credit`]: per-stream flow control.
//! * [`msg`]: the serde messages (exec, files, ps, shutdown, errors).
//!
//! Serde only: no async runtime, so both the static agent and the tokio host use it.

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

/// Name of the virtio-serial port the agent listens on.
pub const AGENT_PORT_NAME: &str = "org.cove.agent";
