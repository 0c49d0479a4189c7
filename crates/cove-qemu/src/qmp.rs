//! An async QMP client over the `qapi` crate.
//!
//! `qapi`'s tokio support speaks QMP over a `tokio::net::UnixStream`
//! directly: it reads the greeting, and a background task reads responses
//! (and discards events) while [`QmpClient`] sends commands. Commands are
//! typed (`qapi::qmp::*`), so no JSON is written by hand.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
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
        let handshake = async {
            let negotiation = QmpStreamTokio::open(stream).await?;
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
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        })
    }

    pub(crate) async fn run<C: qmp::QmpCommand>(
        &self,
        name: &'static str,
        command: C,
    ) -> Result<C::Ok, QmpError> {
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

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    /// The supervisor shares one client between tasks.
    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::QmpClient>();
    }
}
