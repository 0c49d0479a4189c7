//! An async QMP client over the `qapi` crate.
//!
//! `qapi`'s tokio support speaks QMP over a `tokio::net::UnixStream`
//! directly: it reads the greeting, and a background task reads responses
//! (and discards events) while [`QmpClient`] sends commands. Commands are
//! typed (`qapi::qmp::*`), so no JSON is written by hand. The greeting is found
//! here first (see [`read_greeting`]): QEMU 7.2 can send an event before it.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader, WriteHalf};
use tokio::net::UnixStream;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// How long one command may take before the VMM is considered hung.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The QMP socket could not be reached or the greeting failed.
    #[error("cannot connect to QMP at {path}: {source}; is the VMM running?")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The connection broke while a command ran (typically: the VMM exited).
    #[error("QMP `{command}` failed: connection lost ({source}); the VMM has probably exited")]
    Io {
        command: &'static str,
        #[source]
        source: io::Error,
    },
    /// QEMU refused the command.
    #[error("QEMU refused `{command}`: {class}: {desc}")]
    Refused {
        command: &'static str,
        class: String,
        desc: String,
    },
    #[error("QMP `{command}` got no answer within {timeout:?}; the VMM is hung, kill it")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
}

/// The VM's run state as QEMU reports it (QAPI `RunState`), reduced to what
/// cove acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// Paused by `-S` before the first `cont`.
    Prelaunch,
    Paused,
    /// The guest shut down (QEMU exits right after under `-no-reboot`).
    Shutdown,
    GuestPanicked,
    InternalError,
    IoError,
    /// Another QAPI state (e.g. `inmigrate`, `postmigrate`), by its QAPI name.
    Other(String),
}

impl RunState {
    fn from_qapi(state: &qmp::RunState) -> Self {
        // The QAPI name is what serde produces for the generated enum.
        let name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{state:?}"));
        match name.as_str() {
            "running" => Self::Running,
            "prelaunch" => Self::Prelaunch,
            "paused" => Self::Paused,
            "shutdown" => Self::Shutdown,
            "guest-panicked" => Self::GuestPanicked,
            "internal-error" => Self::InternalError,
            "io-error" => Self::IoError,
            _ => Self::Other(name),
        }
    }
}

/// A QMP connection with capabilities negotiated. Cheap to share by reference:
/// commands take `&self` and may run concurrently.
pub struct QmpClient {
    service: Service,
    reader: JoinHandle<()>,
    /// The QMP socket again, for what qapi cannot send: descriptors ([`QmpClient::pass_fd`]).
    socket: OwnedFd,
    /// Held shared by every command and exclusively while a descriptor is passed, so its byte
    /// never lands inside another command's JSON.
    passing: RwLock<()>,
    /// Per-command timeout; [`DEFAULT_COMMAND_TIMEOUT`] unless changed.
    pub command_timeout: Duration,
}

impl QmpClient {
    /// Connects to the QMP socket at `path` and negotiates capabilities.
    /// The socket must exist; see `cove_backend::sockets::connect_when_ready` to
    /// wait for a VMM that is still starting.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Self::from_stream(stream, path).await
    }

    /// Like [`QmpClient::connect`] on an already connected socket (`path` is for messages).
    pub async fn from_stream(stream: UnixStream, path: &Path) -> Result<Self, QmpError> {
        let connect_err = |source| QmpError::Connect {
            path: path.to_owned(),
            source,
        };
        let socket = stream.as_fd().try_clone_to_owned().map_err(connect_err)?;
        let handshake = async {
            let (read, write) = tokio::io::split(stream);
            let mut read = BufReader::new(read);
            let greeting = read_greeting(&mut read).await?;
            // qapi reads the greeting itself: hand it the greeting again, then the rest.
            let read = std::io::Cursor::new(greeting).chain(read);
            let negotiation = QmpStreamTokio::open_split(read, write).await?;
            negotiation.negotiate().await
        };
        let stream = tokio::time::timeout(DEFAULT_COMMAND_TIMEOUT, handshake)
            .await
            .map_err(|_| connect_err(io::Error::from(io::ErrorKind::TimedOut)))?
            .map_err(connect_err)?;
        let (service, reader) = stream.spawn_tokio();
        Ok(Self {
            service,
            reader,
            socket,
            passing: RwLock::new(()),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        })
    }

    pub(crate) async fn run<C: qmp::QmpCommand>(
        &self,
        name: &'static str,
        command: C,
    ) -> Result<C::Ok, QmpError> {
        let _shared = self.passing.read().await;
        self.run_unlocked(name, command).await
    }

    async fn run_unlocked<C: qmp::QmpCommand>(
        &self,
        name: &'static str,
        command: C,
    ) -> Result<C::Ok, QmpError> {
        // A command cancelled in flight makes qapi drop the whole connection when its answer
        // comes: only a hung VMM's command is given up on, and it is then killed anyway.
        let result = tokio::time::timeout(self.command_timeout, self.service.execute(command))
            .await
            .map_err(|_| QmpError::Timeout {
                command: name,
                timeout: self.command_timeout,
            })?;
        result.map_err(|e| match e {
            qapi::ExecuteError::Qapi(e) => QmpError::Refused {
                command: name,
                class: format!("{:?}", e.class),
                desc: e.desc,
            },
            qapi::ExecuteError::Io(source) => QmpError::Io {
                command: name,
                source,
            },
        })
    }

    /// Hands QEMU a duplicate of `fd` under `name` (QMP `getfd`), for commands that take
    /// `fd:NAME` (QEMU then owns and closes its copy). A QEMU that dropped its privileges can
    /// open nothing, so what it must reach after its start comes this way.
    pub async fn pass_fd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        let _exclusive = self.passing.write().await;
        let io = |source| QmpError::Io {
            command: "getfd",
            source,
        };
        // QEMU keeps the descriptors that came with the last bytes it read until `getfd` takes
        // them; a space is whitespace between two commands to its JSON parser.
        let deadline = tokio::time::Instant::now() + self.command_timeout;
        let fds = [fd.as_raw_fd()];
        loop {
            let sent = sendmsg::<()>(
                self.socket.as_raw_fd(),
                &[IoSlice::new(b" ")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            );
            match sent {
                Ok(_) => break,
                // QEMU is not reading; its socket buffer is full.
                Err(nix::errno::Errno::EAGAIN) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(QmpError::Timeout {
                        command: "getfd",
                        timeout: self.command_timeout,
                    });
                }
                Err(e) => return Err(io(e.into())),
            }
        }
        self.run_unlocked(
            "getfd",
            qmp::getfd {
                fdname: name.to_owned(),
            },
        )
        .await
        .map(drop)
    }

    /// Starts (or resumes) the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.run("cont", qmp::cont {}).await.map(drop)
    }

    pub async fn query_status(&self) -> Result<RunState, QmpError> {
        let info = self.run("query-status", qmp::query_status {}).await?;
        Ok(RunState::from_qapi(&info.status))
    }

    /// Presses the ACPI power button. The guest powers off only if something
    /// in it handles the event (acpid, systemd); follow with a timeout and
    /// [`QmpClient::quit`].
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.run("system_powerdown", qmp::system_powerdown {})
            .await
            .map(drop)
    }

    /// Makes QEMU exit at once (the guest gets no say).
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.run("quit", qmp::quit {}).await {
            // QEMU may close the socket before its reply is read; it is
            // exiting either way, which is what was asked.
            Err(QmpError::Io { .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The longest QMP line read before the greeting (QEMU's greeting is ~140 bytes).
const MAX_LINE: u64 = 64 * 1024;
/// How many events may come before the greeting before the peer is not taken for QEMU.
const MAX_EVENTS_BEFORE_GREETING: usize = 16;

/// Reads up to and including QEMU's greeting line (`{"QMP": ...}`), skipping events before it.
///
/// The QMP protocol puts the greeting first, but QEMU 7.2 sends events to a monitor whose
/// first client has connected and not yet been greeted (its command table is still unset, which
/// its event filter reads as "negotiated"). A stream netdev (passt's socket) reports
/// `NETDEV_STREAM_CONNECTED` from QEMU's main loop just after start, so a supervisor that
/// connected early enough got that event as its first line, and qapi's strict greeting parser
/// failed the start with "missing field `QMP`" (once in ~130 clone starts).
async fn read_greeting<R: AsyncBufRead + Unpin>(read: &mut R) -> io::Result<Vec<u8>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    for _ in 0..=MAX_EVENTS_BEFORE_GREETING {
        let mut line = Vec::new();
        (&mut *read)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if line.last() != Some(&b'\n') {
            return Err(if line.is_empty() {
                io::Error::new(io::ErrorKind::UnexpectedEof, "QMP greeting expected")
            } else {
                invalid(format!(
                    "QMP greeting expected, got {} bytes without a line end",
                    line.len()
                ))
            });
        }
        let message: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|e| invalid(format!("QMP greeting expected, got no JSON object: {e}")))?;
        if message.get("QMP").is_some() {
            return Ok(line);
        }
        if message.get("event").is_none() {
            return Err(invalid(
                "QMP greeting expected, got a message that is neither a greeting nor an event"
                    .into(),
            ));
        }
        tracing::debug!("QMP event before the greeting: {}", message["event"]);
    }
    Err(invalid(format!(
        "QMP greeting expected, got more than {MAX_EVENTS_BEFORE_GREETING} events first"
    )))
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What QEMU 7.2 sent a supervisor before its greeting (byte for byte, from a real QEMU
    /// with passt's stream netdev; it is 167 columns, the column of the error it caused).
    const STREAM_EVENT: &str = r#"{"timestamp": {"seconds": 1796124018, "microseconds": 558473}, "event": "NETDEV_STREAM_CONNECTED", "data": {"netdev-id": "net0", "addr": {"path": "", "type": "unix"}}}"#;
    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

    /// A fake QMP peer that writes `lines`, then answers `qmp_capabilities` and one
    /// `query-status` the way QEMU does.
    async fn peer(lines: Vec<String>) -> tokio::net::UnixStream {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            for line in lines {
                theirs.write_all(line.as_bytes()).await.unwrap();
                theirs.write_all(b"\n").await.unwrap();
            }
            let (r, mut w) = theirs.split();
            let mut r = BufReader::new(r);
            let mut command = String::new();
            while r.read_line(&mut command).await.unwrap() > 0 {
                let request: serde_json::Value = serde_json::from_str(&command).unwrap();
                let mut answer = match request["execute"].as_str().unwrap() {
                    "query-status" => serde_json::json!({
                        "return": {"status": "prelaunch", "singlestep": false, "running": false}
                    }),
                    _ => serde_json::json!({"return": {}}),
                };
                if let Some(id) = request.get("id") {
                    answer["id"] = id.clone();
                }
                w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
                command.clear();
            }
        });
        ours
    }

    #[test]
    fn the_recorded_event_is_the_line_of_the_failure() {
        assert_eq!(STREAM_EVENT.len(), 167);
    }

    #[tokio::test]
    async fn events_before_the_greeting_are_skipped() {
        let stream = peer(vec![
            STREAM_EVENT.into(),
            STREAM_EVENT.into(),
            GREETING.into(),
        ])
        .await;
        let qmp = QmpClient::from_stream(stream, Path::new("fake.sock"))
            .await
            .unwrap();
        assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);
    }

    #[tokio::test]
    async fn a_peer_that_is_not_qemu_is_refused() {
        for first in [
            r#"{"return": {}}"#.to_string(),
            "not json".into(),
            "x".repeat(70_000),
        ] {
            let stream = peer(vec![first.clone(), GREETING.into()]).await;
            let err = QmpClient::from_stream(stream, Path::new("fake.sock"))
                .await
                .err()
                .unwrap();
            assert!(matches!(err, QmpError::Connect { .. }), "{err:?}");
            assert!(err.to_string().contains("greeting expected"), "{err}");
        }
        // Events without end are not waited for forever.
        let stream = peer(vec![STREAM_EVENT.to_string(); 40]).await;
        let err = QmpClient::from_stream(stream, Path::new("fake.sock"))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("events first"), "{err}");
    }

    /// The supervisor shares one client between tasks.
    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::QmpClient>();
    }
}
