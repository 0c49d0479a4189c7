//! The control protocol between the `cove` CLI and a VM's supervisor.
//!
//! One request per connection to the supervisor's control socket: the CLI
//! writes a [`Request`] as one JSON line, the supervisor answers with one
//! [`Response`] line. Requests that open a byte stream (the console, an
//! agent stream) answer [`Response::Streaming`] and then the connection
//! carries that stream instead of JSON.

pub mod client;

pub use client::{Client, ClientError};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Bumped whenever a request or response changes incompatibly; a CLI and a
/// supervisor of different versions then say so instead of misreading.
pub const API_VERSION: u32 = 1;

/// Seconds a guest may take from QEMU's start to its agent's answer before a boot counts as
/// failed, unless the user says otherwise (`cove start --timeout`, `boot_timeout` in `cove up`).
/// One value for every way of starting a VM.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 90;

/// Longest JSON line either side accepts, so a confused peer cannot make
/// the other buffer without bound.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// What the supervisor knows now.
    Status,
    /// Waits until the guest's agent answered (`Ready`) or boot failed.
    WaitReady,
    /// Graceful shutdown (agent power-off, then ACPI), forced after `timeout_secs`.
    Stop { timeout_secs: u64 },
    /// Ends the VMM at once.
    Kill,
    /// Attaches to the serial console: the connection then carries console bytes both ways.
    Console {
        /// Replay this many bytes of console history before live output.
        replay_bytes: u64,
    },
    /// Opens one agent stream: the connection then carries cove-proto frames
    /// for that stream (see cove-agent-link).
    Agent,
    /// Saves the running VM (device state, memory, every disk) as snapshot `tag`, then resumes
    /// it or, with `resume: false`, ends it.
    Snapshot { tag: String, resume: bool },
}

impl Request {
    /// The request's name on the wire, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::WaitReady => "wait_ready",
            Request::Stop { .. } => "stop",
            Request::Kill => "kill",
            Request::Console { .. } => "console",
            Request::Agent => "agent",
            Request::Snapshot { .. } => "snapshot",
        }
    }
}

/// What the supervisor is doing, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Booting,
    Ready,
    Stopping,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub api_version: u32,
    pub phase: Phase,
    pub vmm_pid: Option<u32>,
    pub accel: String,
    pub machine: String,
    /// Version the agent announced in its handshake, once it did.
    pub agent_version: Option<String>,
    /// Milliseconds from QEMU's start to the agent's first answer.
    pub boot_ms: Option<u64>,
    /// Console viewers attached now.
    pub console_viewers: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Ready {
        boot_ms: u64,
    },
    /// The request was carried out.
    Done {
        detail: String,
    },
    /// The connection now carries a stream (console or agent).
    Streaming,
    Failed(Failure),
}

impl Response {
    /// The answer's name on the wire, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Ready { .. } => "ready",
            Response::Done { .. } => "done",
            Response::Streaming => "streaming",
            Response::Failed(_) => "failed",
        }
    }
}

/// Why something failed, with the evidence a person needs to act on it. Its `Display` is the
/// message alone; [`Failure::render`] adds the console lines and the next step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    /// What to do next, e.g. "run `cove why web`".
    pub hint: Option<String>,
    /// The last lines of the serial console, when they explain the failure.
    pub console_tail: Vec<String>,
}

impl Failure {
    /// The message, then the last console lines and the next step, one a line, for people.
    pub fn render(&self) -> String {
        let mut out = self.message.clone();
        if !self.console_tail.is_empty() {
            out.push_str("\n  last console lines:");
            for line in &self.console_tail {
                out.push_str("\n    | ");
                out.push_str(line);
            }
        }
        if let Some(hint) = &self.hint {
            out.push_str("\n  next: ");
            out.push_str(hint);
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the supervisor closed the connection without answering")]
    Closed,
    #[error("a control message was over {MAX_LINE} bytes")]
    TooLong,
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes one message as one JSON line.
pub async fn write_message<T: Serialize>(
    stream: &mut (impl AsyncWriteExt + Unpin),
    message: &T,
) -> Result<(), WireError> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one JSON line without reading past it, so the stream that may
/// follow on the same connection is left intact.
pub async fn read_message<T: for<'de> Deserialize<'de>>(
    stream: &mut BufReader<impl tokio::io::AsyncRead + Unpin>,
) -> Result<T, WireError> {
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    Ok(serde_json::from_slice(&whole_line(n, line)?)?)
}

/// A line read with at most [`MAX_LINE`] + 1 bytes (`n` of them): whole, or why not (the peer
/// closed, or sent more than a line may hold). The one rule of the sync and async readers.
pub(crate) fn whole_line(n: usize, line: Vec<u8>) -> Result<Vec<u8>, WireError> {
    if n == 0 {
        return Err(WireError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n > MAX_LINE {
            WireError::TooLong
        } else {
            WireError::Closed
        });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    #[tokio::test]
    async fn request_and_response_round_trip_over_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = BufReader::new(a);
        let mut b = BufReader::new(b);
        write_message(a.get_mut(), &Request::Stop { timeout_secs: 5 })
            .await
            .unwrap();
        let req: Request = read_message(&mut b).await.unwrap();
        assert_eq!(req, Request::Stop { timeout_secs: 5 });
        write_message(b.get_mut(), &Response::Ready { boot_ms: 7 })
            .await
            .unwrap();
        let resp: Response = read_message(&mut a).await.unwrap();
        assert_eq!(resp, Response::Ready { boot_ms: 7 });
    }

    #[tokio::test]
    async fn stream_bytes_after_a_message_are_not_consumed() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = a;
        let mut b = BufReader::new(b);
        write_message(&mut a, &Request::Agent).await.unwrap();
        a.write_all(b"raw-bytes").await.unwrap();
        drop(a);
        let _: Request = read_message(&mut b).await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"raw-bytes");
    }

    #[tokio::test]
    async fn an_endless_line_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = a;
        tokio::spawn(async move {
            let junk = vec![b'x'; MAX_LINE + 10];
            let _ = a.write_all(&junk).await;
        });
        let mut b = BufReader::new(b);
        let err = read_message::<Request>(&mut b).await.unwrap_err();
        assert!(matches!(err, WireError::TooLong), "{err}");
    }
}
