//! exec and console as streams: the request is checked and answered as
//! ordinary HTTP (a JSON error with its status when the VM is missing or not
//! running), then switched with HTTP/1.1 Upgrade (101 Switching Protocols) to
//! a raw byte stream on the same connection.
//!
//! Why Upgrade and not WebSocket: the streams are plain bytes with one exit
//! status at the end, so WebSocket's masking and message framing add nothing
//! but a dependency; Upgrade is what Docker's attach/exec use, and any HTTP
//! client that can hand back its connection (hyper, Go's net/http, Python's
//! http.client with a raw socket) speaks it.
//!
//! Why Docker's stdcopy framing for exec: stdout and stderr stay apart on one
//! connection, the end carries the exit status, and programs already parse it
//! (Docker SDKs' `stdcopy`/`demux`). Each frame is an 8-byte header (stream:
//! 1 stdout, 2 stderr, 3 system; three zero bytes; payload length as a
//! big-endian u32) and the payload. cove's last frame is always a system frame
//! holding an [`ExecEnd`] as JSON. The client's bytes are the command's stdin
//! until the client half-closes (shutdown of its write side).
//!
//! The console needs no framing: it is the serial console both ways, as
//! `cove console` shows it; the client closing its side detaches.
//!
//! Guest bytes only ever travel after the 101, inside frames (exec) or as
//! the raw stream the client asked for (console), so they cannot reach HTTP
//! headers. Every buffer is bounded (64 KiB pipes, 32 KiB reads), the
//! upgrade, the supervisor handshake and each write to the client have
//! deadlines, and an exec may carry its own `timeout_secs`.

use super::{Reply, routes};
use crate::commands::{agent_client, console, exec::parse_env};
use crate::views::{ApiError, ExecEnd, ExecOptions};
use bytes::Bytes;
use cove_agent_link::{ExecIo, ExecRequest, Input};
use cove_state::VmState;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Upgrade:` protocol names a client asks for.
pub const EXEC_PROTOCOL: &str = "cove-exec";
pub const CONSOLE_PROTOCOL: &str = "cove-console";
/// The content type Docker gives its multiplexed exec/attach streams.
const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";

/// Stream numbers of the stdcopy header.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const SYSTEM: u8 = 3;

/// The largest exec request body.
const MAX_BODY: usize = 64 * 1024;
/// Bytes of guest output held between the agent stream and the client, per stream.
const PIPE_BYTES: usize = 64 * 1024;
/// The most one read (and so one frame) carries.
const CHUNK: usize = 32 * 1024;
/// How long the client may take to finish the upgrade after the 101.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may leave a write unread before it is dropped (its
/// bytes would otherwise hold the guest's output back forever).
const WRITE_STALL: Duration = Duration::from_secs(60);
/// How long the supervisor may take to hand over the console.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout_secs` an exec may ask for (a day, as `cove exec`'s bound).
const MAX_EXEC_SECS: u64 = 86_400;

/// Runs a command in the guest and streams it (`cove exec`).
#[utoipa::path(
    post,
    path = "/v1/vms/{name}/exec",
    params(
        ("name" = String, Path, description = "the VM's name"),
        ("Upgrade" = String, Header, description = "`cove-exec`, with `Connection: Upgrade`"),
    ),
    request_body = ExecOptions,
    responses(
        (status = 101, description = "Switching to the exec stream. The client's bytes are the \
            command's stdin until it half-closes; the server sends Docker stdcopy frames (8-byte \
            header: stream 1 stdout, 2 stderr, 3 system; three zero bytes; big-endian u32 length), \
            the last a system frame holding an ExecEnd as JSON."),
        (status = 400, description = "a bad request body", body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the VM is not running", body = ApiError),
        (status = 426, description = "no `Upgrade: cove-exec`", body = ApiError),
    )
)]
pub async fn exec(paths: cove_state::Paths, name: String, mut req: Request<Incoming>) -> Reply {
    if let Some(refused) = refuse_without_upgrade(&req, EXEC_PROTOCOL) {
        return refused;
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let options: ExecOptions = match read_json(req.into_body()).await {
        Ok(options) => options,
        Err(message) => return routes::error(StatusCode::BAD_REQUEST, message),
    };
    let (request, deadline) = match exec_request(options) {
        Ok(parsed) => parsed,
        Err(message) => return routes::error(StatusCode::BAD_REQUEST, message),
    };
    let state = match vm_state(&paths, &name).await {
        Ok(state) => state,
        Err(reply) => return reply,
    };
    if let Some(why) = agent_client::not_running(&name, state) {
        return routes::error(StatusCode::CONFLICT, why);
    }
    let opener = agent_client::socket_opener(&name, paths.vm(&name).control_socket());
    tokio::spawn(async move {
        if let Some(conn) = upgraded(upgrade).await {
            run_exec(conn, &opener, request, deadline).await;
        }
    });
    switching(EXEC_PROTOCOL, MULTIPLEXED)
}

/// Attaches to the VM's serial console both ways (`cove console`).
#[utoipa::path(
    post,
    path = "/v1/vms/{name}/console",
    params(
        ("name" = String, Path, description = "the VM's name"),
        ("replay" = Option<u64>, Query, description = "bytes of recent output to send first (default 2048)"),
        ("Upgrade" = String, Header, description = "`cove-console`, with `Connection: Upgrade`"),
    ),
    responses(
        (status = 101, description = "Switching to the console: raw bytes both ways; the client \
            closing its side detaches, the server closing its side means the VM stopped."),
        (status = 404, body = ApiError),
        (status = 409, description = "the VM has no live console", body = ApiError),
        (status = 426, description = "no `Upgrade: cove-console`", body = ApiError),
    )
)]
pub async fn console(paths: cove_state::Paths, name: String, mut req: Request<Incoming>) -> Reply {
    if let Some(refused) = refuse_without_upgrade(&req, CONSOLE_PROTOCOL) {
        return refused;
    }
    let replay = match replay_bytes(req.uri().query()) {
        Ok(replay) => replay,
        Err(message) => return routes::error(StatusCode::BAD_REQUEST, message),
    };
    let state = match vm_state(&paths, &name).await {
        Ok(state) => state,
        Err(reply) => return reply,
    };
    if let Some(why) = console::no_console(&name, state) {
        return routes::error(StatusCode::CONFLICT, why);
    }
    // Attach before the 101, so a supervisor that refuses is an HTTP error.
    let socket = paths.vm(&name).control_socket();
    let vm = match tokio::time::timeout(ATTACH_TIMEOUT, console::connect(&name, &socket, replay))
        .await
    {
        Ok(Ok(vm)) => vm,
        Ok(Err(e)) => return routes::error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
        Err(_) => {
            return routes::error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the supervisor of `{name}` did not hand over the console in {ATTACH_TIMEOUT:?}"
                ),
            );
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Some(client) = upgraded(upgrade).await {
            run_console(client, vm).await;
        }
    });
    switching(CONSOLE_PROTOCOL, "application/octet-stream")
}

/// A 426 unless the request asks to upgrade to `protocol`.
fn refuse_without_upgrade(req: &Request<Incoming>, protocol: &str) -> Option<Reply> {
    let has = |header, want: &str| {
        req.headers().get_all(header).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(want))
            })
        })
    };
    if has(CONNECTION, "upgrade") && has(UPGRADE, protocol) {
        return None;
    }
    let mut reply = routes::error(
        StatusCode::UPGRADE_REQUIRED,
        format!(
            "this is a stream: send `Connection: Upgrade` and `Upgrade: {protocol}`, then use the \
             connection after 101 Switching Protocols"
        ),
    );
    reply
        .headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(protocol_value(protocol)));
    Some(reply)
}

fn protocol_value(protocol: &str) -> &'static str {
    if protocol == EXEC_PROTOCOL {
        EXEC_PROTOCOL
    } else {
        CONSOLE_PROTOCOL
    }
}

fn switching(protocol: &str, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()).boxed());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = reply.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(protocol_value(protocol)));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

async fn upgraded(upgrade: hyper::upgrade::OnUpgrade) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
        Ok(Ok(conn)) => Some(TokioIo::new(conn)),
        _ => None,
    }
}

/// The VM's state, or the reply that says why there is none.
async fn vm_state(paths: &cove_state::Paths, name: &str) -> Result<VmState, Reply> {
    let (paths, name) = (paths.clone(), name.to_owned());
    match tokio::task::spawn_blocking(move || cove_vm::lifecycle::show(&paths, &name)).await {
        Ok(Ok(record)) => Ok(record.state),
        Ok(Err(e)) => Err(routes::lifecycle_error(&e)),
        Err(e) => Err(routes::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

pub(super) async fn read_json<T: serde::de::DeserializeOwned>(body: Incoming) -> Result<T, String> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the request body (at most {MAX_BODY} bytes): {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("the request body is not valid: {e}"))
}

fn exec_request(options: ExecOptions) -> Result<(ExecRequest, Option<Duration>), String> {
    if options.argv.is_empty() {
        return Err("`argv` is empty: give the command and its arguments".into());
    }
    let env = options
        .env
        .iter()
        .map(|kv| parse_env(kv))
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = match options.timeout_secs {
        None => None,
        Some(secs @ 1..=MAX_EXEC_SECS) => Some(Duration::from_secs(secs)),
        Some(secs) => {
            return Err(format!(
                "`timeout_secs` {secs} is not within 1..={MAX_EXEC_SECS}"
            ));
        }
    };
    let request = ExecRequest {
        argv: options.argv,
        env,
        cwd: options.workdir,
        user: options.user,
        tty: None,
    };
    Ok((request, deadline))
}

fn replay_bytes(query: Option<&str>) -> Result<u64, String> {
    let mut replay = 2048;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("replay", n)) => {
                replay = n
                    .parse()
                    .map_err(|_| format!("`replay={n}` is not a number of bytes"))?;
            }
            _ => {
                return Err(format!(
                    "unknown query parameter `{pair}`; only `replay=N` is known"
                ));
            }
        }
    }
    Ok(replay)
}

/// The exec itself: stdin from the client, stdout and stderr framed to it,
/// then the system frame with how it ended.
async fn run_exec<C>(
    conn: C,
    opener: &impl cove_agent_link::StreamOpener,
    request: ExecRequest,
    deadline: Option<Duration>,
) where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (from_client, mut to_client) = tokio::io::split(conn);
    let (stdout, stdout_pipe) = tokio::io::duplex(PIPE_BYTES);
    let (stderr, stderr_pipe) = tokio::io::duplex(PIPE_BYTES);
    let io = ExecIo {
        stdin: Input::Reader(Box::new(from_client)),
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        control: None,
    };
    let run = async {
        let exec = cove_agent_link::exec(opener, request, io);
        match deadline {
            None => exec.await.map_err(|e| routes::chain(&e)),
            Some(limit) => match tokio::time::timeout(limit, exec).await {
                Ok(ended) => ended.map_err(|e| routes::chain(&e)),
                Err(_) => Err(format!(
                    "the command did not end within {} s",
                    limit.as_secs()
                )),
            },
        }
    };
    // The pipes are dropped when the exec ends, which ends the framing;
    // a client that stops reading ends the framing, which fails the exec's
    // next write and so ends it too.
    let (ended, framed) = tokio::join!(run, frame_output(stdout_pipe, stderr_pipe, &mut to_client));
    if framed.is_err() {
        return; // the client is gone or stalled; nobody reads an exit status
    }
    let end = match ended {
        Ok(status) => ExecEnd::from(status),
        Err(error) => ExecEnd::failed(error),
    };
    let json = serde_json::to_vec(&end).unwrap_or_default();
    if write_frame(&mut to_client, SYSTEM, &json).await.is_ok() {
        let _ = stalled(to_client.shutdown()).await;
    }
}

/// Copies both pipes to the client as stdcopy frames until both end.
async fn frame_output(
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    client: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let (mut out_buf, mut err_buf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let (stream, n) = tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => (STDOUT, read?),
            read = stderr.read(&mut err_buf), if err_open => (STDERR, read?),
        };
        let chunk = if stream == STDOUT {
            &out_buf[..n]
        } else {
            &err_buf[..n]
        };
        match (n, stream) {
            (0, STDOUT) => out_open = false,
            (0, _) => err_open = false,
            _ => write_frame(client, stream, chunk).await?,
        }
    }
    Ok(())
}

/// One stdcopy frame, within the write deadline.
async fn write_frame(
    client: &mut (impl AsyncWrite + Unpin),
    stream: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let frame = frame(stream, payload);
    stalled(async {
        client.write_all(&frame).await?;
        client.flush().await
    })
    .await
}

/// Docker's stdcopy frame: stream, three zero bytes, big-endian length, payload.
fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frames are at most CHUNK bytes");
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&[stream, 0, 0, 0]);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `work` within [`WRITE_STALL`], a stall as an error.
async fn stalled<T>(work: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(WRITE_STALL, work)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Console bytes both ways until either side closes.
async fn run_console<C>(client: C, vm: tokio::io::BufReader<tokio::net::UnixStream>)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let early = vm.buffer().to_vec();
    let (mut from_vm, mut to_vm) = vm.into_inner().into_split();
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let output = async {
        if stalled(to_client.write_all(&early)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_vm.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stalled(async {
                        to_client.write_all(&buf[..n]).await?;
                        to_client.flush().await
                    })
                    .await
                    .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = stalled(to_client.shutdown()).await;
    };
    let input = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stalled(to_vm.write_all(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
}

impl From<cove_agent_link::ExitStatus> for ExecEnd {
    fn from(status: cove_agent_link::ExitStatus) -> Self {
        use cove_agent_link::ExitStatus::*;
        let (code, signal) = match status {
            Code(code) => (Some(code), None),
            Signal(signal) => (None, Some(signal)),
        };
        ExecEnd {
            exit_code: Some(status.shell_code()),
            code,
            signal,
            error: None,
        }
    }
}

impl ExecEnd {
    fn failed(error: String) -> Self {
        ExecEnd {
            exit_code: None,
            code: None,
            signal: None,
            error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_dockers_stdcopy() {
        assert_eq!(frame(STDERR, b"hi"), [2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(frame(SYSTEM, b"").len(), 8);
    }

    #[test]
    fn replay_and_exec_options_are_checked() {
        assert_eq!(replay_bytes(None), Ok(2048));
        assert_eq!(replay_bytes(Some("replay=10")), Ok(10));
        assert!(
            replay_bytes(Some("replay=x"))
                .unwrap_err()
                .contains("replay=x")
        );
        assert!(replay_bytes(Some("evil=1")).unwrap_err().contains("evil"));
        let options = |argv: &[&str], env: &[&str], timeout_secs| ExecOptions {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            workdir: None,
            user: None,
            timeout_secs,
        };
        assert!(
            exec_request(options(&[], &[], None))
                .unwrap_err()
                .contains("argv")
        );
        assert!(
            exec_request(options(&["true"], &["=x"], None))
                .unwrap_err()
                .contains("=x")
        );
        assert!(exec_request(options(&["true"], &[], Some(0))).is_err());
        let (req, deadline) = exec_request(options(&["env"], &["A=b"], Some(5))).unwrap();
        assert_eq!(req.env, [("A".to_string(), "b".to_string())]);
        assert_eq!(deadline, Some(Duration::from_secs(5)));
    }

    /// stdout and stderr come out as separate frames, and a client that
    /// stops reading does not hold the framing past the write deadline.
    #[tokio::test]
    async fn output_is_framed_per_stream() {
        let (mut out_w, out_r) = tokio::io::duplex(64);
        let (mut err_w, err_r) = tokio::io::duplex(64);
        out_w.write_all(b"out").await.unwrap();
        drop(out_w);
        err_w.write_all(b"err").await.unwrap();
        drop(err_w);
        let mut client = Vec::new();
        frame_output(out_r, err_r, &mut client).await.unwrap();
        let mut frames = [frame(STDOUT, b"out"), frame(STDERR, b"err")];
        let one = frames.concat();
        frames.reverse();
        assert!(client == one || client == frames.concat(), "{client:?}");
    }
}
