//! The one client of a supervisor's control socket. Every CLI-side caller (lifecycle, snapshot,
//! exec, console, `cove serve`) reaches a supervisor through [`Client`], so the API version is
//! checked in one place: the first contact with a supervisor asks its [`Status`] and refuses one
//! speaking another [`API_VERSION`] before any request it might misread is sent.
//!
//! Plain requests are synchronous (std sockets, no async runtime: a CLI verb that only asks a
//! supervisor something needs none); the byte streams (console, agent) are async, since their
//! callers relay them with tokio.

use crate::{API_VERSION, Failure, MAX_LINE, Request, Response, Status, WireError};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a status request may take: the supervisor answers it from memory.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody accepts connections on the socket (the supervisor is gone or wedged).
    #[error("the supervisor of `{vm}` does not answer on {}", socket.display())]
    Unreachable {
        vm: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The supervisor runs another version of the control API (a cove upgraded or downgraded
    /// while the VM ran).
    #[error(
        "the supervisor of `{vm}` speaks control API version {}, this cove speaks version \
         {ours}; it was started by another cove binary. Use that binary for `{vm}` \
         (`stop`, `exec`, …), or `cove kill {vm}` and start it again with this one",
        theirs.map_or_else(|| "unknown (older than 1)".to_owned(), |v| v.to_string())
    )]
    VersionMismatch {
        vm: String,
        ours: u32,
        theirs: Option<u32>,
    },
    /// The request reached the supervisor and it refused or failed it, with its evidence.
    #[error("{}", .0.render())]
    Failed(Failure),
    #[error(
        "the supervisor of `{vm}` answered {request} with {answer}, which this cove does not expect"
    )]
    Unexpected {
        vm: String,
        request: &'static str,
        answer: &'static str,
    },
    #[error("talking to the supervisor of `{vm}`")]
    Wire {
        vm: String,
        #[source]
        source: WireError,
    },
}

impl ClientError {
    /// True when the supervisor could not be talked to at all (as opposed to answering).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Wire {
                    source: WireError::Closed | WireError::Io(_),
                    ..
                }
        )
    }
}

/// A VM's supervisor, by its control socket. Cheap to clone; the version check is done once per
/// client (and its clones).
#[derive(Debug, Clone)]
pub struct Client {
    vm: String,
    socket: PathBuf,
    checked: Arc<AtomicBool>,
}

impl Client {
    pub fn new(vm: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        Client {
            vm: vm.into(),
            socket: socket.into(),
            checked: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the supervisor knows now; refuses a supervisor of another API version.
    pub fn status(&self) -> Result<Status, ClientError> {
        let mut conn = self.connect(Some(STATUS_TIMEOUT))?;
        write_line(&mut conn, &Request::Status).map_err(|e| self.wire(e))?;
        let line = read_line(&mut BufReader::new(conn)).map_err(|e| self.wire(e))?;
        // Not even JSON: not a supervisor of any version this cove knows.
        let value = serde_json::from_slice(&line).map_err(|_| self.mismatch(None))?;
        let status = self.judge_status(value)?;
        self.checked.store(true, Ordering::Relaxed);
        Ok(status)
    }

    /// Sends `request` and waits up to `timeout` for its answer. A `Failed` answer is
    /// [`ClientError::Failed`].
    pub fn call(&self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        self.ensure_compatible()?;
        let mut conn = self.connect(Some(timeout))?;
        write_line(&mut conn, request).map_err(|e| self.wire(e))?;
        let line = read_line(&mut BufReader::new(conn)).map_err(|e| self.wire(e))?;
        match serde_json::from_slice(&line).map_err(|e| self.wire(e.into()))? {
            Response::Failed(f) => Err(ClientError::Failed(f)),
            answer => Ok(answer),
        }
    }

    /// [`Client::call`] for requests answered with `Done { detail }`.
    pub fn call_done(&self, request: &Request, timeout: Duration) -> Result<String, ClientError> {
        match self.call(request, timeout)? {
            Response::Done { detail } => Ok(detail),
            other => Err(self.unexpected(request, &other)),
        }
    }

    /// Opens a byte stream (`Console`, `Agent`): the returned reader carries it, bytes already
    /// read past the answer included.
    pub async fn open_stream(
        &self,
        request: &Request,
    ) -> Result<tokio::io::BufReader<tokio::net::UnixStream>, ClientError> {
        if !self.checked.load(Ordering::Relaxed) {
            self.status_async().await?;
        }
        let conn = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.unreachable(source))?;
        let mut conn = tokio::io::BufReader::new(conn);
        crate::write_message(conn.get_mut(), request)
            .await
            .map_err(|e| self.wire(e))?;
        match crate::read_message::<Response>(&mut conn)
            .await
            .map_err(|e| self.wire(e))?
        {
            Response::Streaming => Ok(conn),
            Response::Failed(f) => Err(ClientError::Failed(f)),
            other => Err(self.unexpected(request, &other)),
        }
    }

    /// [`Client::status`] for async callers.
    pub async fn status_async(&self) -> Result<Status, ClientError> {
        let exchange = async {
            let conn = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| self.unreachable(source))?;
            let mut conn = tokio::io::BufReader::new(conn);
            crate::write_message(conn.get_mut(), &Request::Status)
                .await
                .map_err(|e| self.wire(e))?;
            match crate::read_message::<serde_json::Value>(&mut conn).await {
                Ok(value) => self.judge_status(value),
                Err(WireError::Malformed(_)) => Err(self.mismatch(None)),
                Err(e) => Err(self.wire(e)),
            }
        };
        let status = tokio::time::timeout(STATUS_TIMEOUT, exchange)
            .await
            .map_err(|_| self.unreachable(std::io::ErrorKind::TimedOut.into()))??;
        self.checked.store(true, Ordering::Relaxed);
        Ok(status)
    }

    fn ensure_compatible(&self) -> Result<(), ClientError> {
        if !self.checked.load(Ordering::Relaxed) {
            self.status()?;
        }
        Ok(())
    }

    /// Reads a status line by its version first: a supervisor of another version may shape
    /// its status differently, and must be named as such rather than as "malformed".
    fn judge_status(&self, value: serde_json::Value) -> Result<Status, ClientError> {
        let theirs = value
            .get("api_version")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        if theirs != Some(API_VERSION) {
            return Err(self.mismatch(theirs));
        }
        match serde_json::from_value(value).map_err(|e| self.wire(e.into()))? {
            Response::Status(s) => Ok(s),
            Response::Failed(f) => Err(ClientError::Failed(f)),
            other => Err(self.unexpected(&Request::Status, &other)),
        }
    }

    fn connect(&self, timeout: Option<Duration>) -> Result<UnixStream, ClientError> {
        let conn = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        conn.set_read_timeout(timeout)
            .and_then(|()| conn.set_write_timeout(timeout))
            .map_err(|e| self.unreachable(e))?;
        Ok(conn)
    }

    fn unreachable(&self, source: std::io::Error) -> ClientError {
        ClientError::Unreachable {
            vm: self.vm.clone(),
            socket: self.socket.clone(),
            source,
        }
    }

    fn wire(&self, source: WireError) -> ClientError {
        ClientError::Wire {
            vm: self.vm.clone(),
            source,
        }
    }

    fn mismatch(&self, theirs: Option<u32>) -> ClientError {
        ClientError::VersionMismatch {
            vm: self.vm.clone(),
            ours: API_VERSION,
            theirs,
        }
    }

    fn unexpected(&self, request: &Request, answer: &Response) -> ClientError {
        ClientError::Unexpected {
            vm: self.vm.clone(),
            request: request.kind(),
            answer: answer.kind(),
        }
    }
}

fn write_line(conn: &mut UnixStream, message: &Request) -> Result<(), WireError> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    conn.write_all(&line)?;
    Ok(())
}

/// One answer line, bounded like [`crate::read_message`].
fn read_line(conn: &mut impl BufRead) -> Result<Vec<u8>, WireError> {
    let mut line = Vec::new();
    let n = conn
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    crate::whole_line(n, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A supervisor double that answers every connection with `answer` for a status request
    /// and `Done` otherwise; returns the requests it saw.
    fn supervisor(dir: &Path, status: serde_json::Value) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(dir.join("control.sock")).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for conn in listener.incoming().take(2) {
                let Ok(conn) = conn else { break };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let request: serde_json::Value = serde_json::from_str(&line).unwrap();
                let kind = request["request"].as_str().unwrap().to_owned();
                let answer = if kind == "status" {
                    status.clone()
                } else {
                    serde_json::json!({"response": "done", "detail": "ok"})
                };
                let mut conn = conn;
                writeln!(conn, "{answer}").unwrap();
                seen.push(kind);
                if seen.len() == 1 && status["api_version"] != API_VERSION {
                    break;
                }
            }
            seen
        })
    }

    fn status_of(version: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "response": "status", "api_version": version, "phase": "ready", "vmm_pid": 1,
            "accel": "", "machine": "microvm", "agent_version": null, "boot_ms": 5,
            "console_viewers": 0,
        })
    }

    #[test]
    fn a_supervisor_of_another_api_version_is_named_and_sent_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = API_VERSION + 1;
        let double = supervisor(dir.path(), status_of(theirs.into()));
        let client = Client::new("web", dir.path().join("control.sock"));
        let err = client
            .call(&Request::Stop { timeout_secs: 1 }, STATUS_TIMEOUT)
            .unwrap_err();
        assert!(
            matches!(err, ClientError::VersionMismatch { theirs: Some(v), ours, .. }
                if v == theirs && ours == API_VERSION),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {theirs}"))
                && text.contains(&format!("speaks version {API_VERSION}"))
                && text.contains("cove kill web"),
            "{text}"
        );
        // The stop was never sent to a supervisor that might misread it.
        assert_eq!(double.join().unwrap(), vec!["status"]);
    }

    #[test]
    fn a_supervisor_whose_status_has_no_version_is_a_mismatch_not_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let double = supervisor(dir.path(), serde_json::json!({"response": "status"}));
        let client = Client::new("web", dir.path().join("control.sock"));
        let err = client.status().unwrap_err();
        assert!(
            matches!(err, ClientError::VersionMismatch { theirs: None, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("unknown"), "{err}");
        double.join().unwrap();
    }

    #[test]
    fn the_same_version_is_checked_once_then_requests_go_through() {
        let dir = tempfile::tempdir().unwrap();
        let double = supervisor(dir.path(), status_of(API_VERSION.into()));
        let client = Client::new("web", dir.path().join("control.sock"));
        let detail = client.call_done(&Request::Kill, STATUS_TIMEOUT).unwrap();
        assert_eq!(detail, "ok");
        assert_eq!(double.join().unwrap(), vec!["status", "kill"]);
    }

    #[test]
    fn no_supervisor_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new("web", dir.path().join("control.sock"));
        let err = client.status().unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
    }
}
