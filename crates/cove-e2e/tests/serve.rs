//! `cove serve`: the VM verbs over HTTP on a unix socket, driven by a real
//! HTTP client (curl --unix-socket); answers are the `--json` shapes.

use cove_e2e::Cove;
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn start(cove: &Cove) -> Self {
        let socket = cove.root().join("api.sock");
        let child = cove
            .command()
            .args(["serve", "--socket"])
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning cove serve");
        cove.wait_for("the API socket", Duration::from_secs(10), || {
            std::fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket())
        });
        Self { child, socket }
    }

    /// (HTTP status, body as JSON) of one request.
    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        call(&self.socket, method, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(socket: &Path, method: &str, path: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "180",
            "--unix-socket",
        ])
        .arg(socket)
        .args(["-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://cove{path}"))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code.parse().unwrap(), value)
}

#[test]
fn the_socket_is_private_and_errors_are_json_with_their_status() {
    let cove = Cove::new();
    let server = Server::start(&cove);
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    assert_eq!(server.call("GET", "/v1/vms"), (200, serde_json::json!([])));
    let (status, body) = server.call("GET", "/v1/vms/nosuch");
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nosuch"), "{body}");
    let (status, body) = server.call("GET", "/v2/whatever");
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("openapi"),
        "{body}"
    );
    let (status, doc) = server.call("GET", "/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(
        doc["paths"]["/v1/vms/{name}/start"]["post"].is_object(),
        "{doc}"
    );
    // A second server on the same socket is refused, the first keeps serving.
    let err = cove.fails(&["serve", "--socket", server.socket.to_str().unwrap()]);
    assert!(err.contains("already serves"), "{err}");
    assert_eq!(server.call("GET", "/v1/vms").0, 200);
}

#[test]
#[ignore = "boots VMs"]
fn start_show_stop_over_the_api_answer_what_the_cli_prints() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "api", "--image", "minimal"]);
    let server = Server::start(&cove);
    let (status, listed) = server.call("GET", "/v1/vms");
    assert_eq!(status, 200);
    assert_eq!(
        listed,
        cove.json(&["list"]),
        "the API and `list --json` agree"
    );

    let (status, started) = server.call("POST", "/v1/vms/api/start");
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["state"], "running");
    let (_, shown) = server.call("GET", "/v1/vms/api");
    let mut cli = cove.json(&["show", "api"]);
    // `show` adds details beyond the VM's summary; the rest is the same type.
    for detail in ["console_log", "kernel"] {
        cli.as_object_mut().unwrap().remove(detail);
    }
    assert_eq!(shown, cli, "the API and `show --json` agree");

    let (status, again) = server.call("POST", "/v1/vms/api/start");
    assert_eq!(status, 409, "{again}");

    let (status, stopped) = server.call("POST", "/v1/vms/api/stop");
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(cove.state("api"), "stopped");
}

/// An HTTP/1.1 request over the API socket with hyper's client: the answer's
/// status and, after a 101, the upgraded connection.
async fn upgrade(
    socket: &Path,
    path: &str,
    protocol: Option<&str>,
    body: &str,
) -> (
    u16,
    Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, String>,
) {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut req = hyper::Request::post(format!("http://cove{path}"))
        .header("Host", "cove")
        .header("Content-Type", "application/json");
    if let Some(protocol) = protocol {
        req = req
            .header("Connection", "Upgrade")
            .header("Upgrade", protocol);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let mut resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    if status != 101 {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        return (status, Err(String::from_utf8_lossy(&body).into_owned()));
    }
    assert_eq!(resp.headers()["upgrade"], protocol.unwrap());
    let conn = hyper::upgrade::on(&mut resp).await.unwrap();
    (status, Ok(hyper_util::rt::TokioIo::new(conn)))
}

/// Splits a Docker stdcopy stream into (stream, payload) frames, checking
/// each header as Docker's own `stdcopy` does.
fn stdcopy_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 8, "a truncated header: {bytes:?}");
        assert!(matches!(bytes[0], 1..=3), "stream byte {}", bytes[0]);
        assert_eq!(bytes[1..4], [0, 0, 0]);
        let len = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
        assert!(bytes.len() >= 8 + len, "a truncated payload");
        frames.push((bytes[0], bytes[8..8 + len].to_vec()));
        bytes = &bytes[8 + len..];
    }
    frames
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Reads until the peer closes, within a deadline.
async fn read_to_end(conn: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), conn.read_to_end(&mut all))
        .await
        .expect("the stream ended within 2 minutes")
        .unwrap();
    all
}

#[test]
#[ignore = "boots VMs"]
fn exec_and_console_stream_over_an_http_upgrade() {
    use tokio::io::AsyncWriteExt;
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "streams", "--image", "minimal"]);
    let server = Server::start(&cove);
    let rt = runtime();
    let exec = r#"{"argv":["sh","-c","cat; echo oops >&2; printf 'HTTP/1.1 200 OK\r\n\r\n'; head -c 600000 /dev/zero; exit 3"]}"#;

    rt.block_on(async {
        // Before the upgrade, failures are ordinary JSON errors.
        let (status, body) = upgrade(
            &server.socket,
            "/v1/vms/streams/exec",
            Some("cove-exec"),
            exec,
        )
        .await;
        assert_eq!(status, 409, "a stopped VM: {body:?}");
        assert!(body.unwrap_err().contains("cove start streams"));
        let (status, body) = upgrade(
            &server.socket,
            "/v1/vms/nosuch/exec",
            Some("cove-exec"),
            exec,
        )
        .await;
        assert_eq!(status, 404, "{body:?}");
        let (status, body) = upgrade(&server.socket, "/v1/vms/streams/exec", None, exec).await;
        assert_eq!(status, 426, "{body:?}");
        assert!(body.unwrap_err().contains("Upgrade: cove-exec"));
    });

    cove.ok(&["start", "streams"]);
    rt.block_on(async {
        let (status, body) = upgrade(
            &server.socket,
            "/v1/vms/streams/exec",
            Some("cove-exec"),
            r#"{"argv":[]}"#,
        )
        .await;
        assert_eq!(status, 400, "{body:?}");

        // stdin until the client half-closes; stdout and stderr apart; the
        // guest's HTTP-looking bytes stay payload; the exit status last.
        let (status, conn) = upgrade(
            &server.socket,
            "/v1/vms/streams/exec",
            Some("cove-exec"),
            exec,
        )
        .await;
        assert_eq!(status, 101);
        let mut conn = conn.unwrap();
        conn.write_all(b"from stdin\n").await.unwrap();
        conn.shutdown().await.unwrap();
        let frames = stdcopy_frames(&read_to_end(&mut conn).await);
        let joined = |stream| {
            frames
                .iter()
                .filter(|(s, _)| *s == stream)
                .flat_map(|(_, b)| b.clone())
                .collect::<Vec<u8>>()
        };
        let stdout = joined(1);
        assert!(
            stdout.starts_with(b"from stdin\nHTTP/1.1 200 OK\r\n\r\n"),
            "{:?}",
            &stdout[..40.min(stdout.len())]
        );
        assert_eq!(stdout.len(), 11 + 19 + 600_000);
        assert_eq!(joined(2), b"oops\n");
        let (last_stream, last) = frames.last().unwrap();
        assert_eq!(*last_stream, 3, "the last frame is the system frame");
        let end: Value = serde_json::from_slice(last).unwrap();
        assert_eq!(end["exit_code"], 3, "{end}");
        assert_eq!(end["code"], 3, "{end}");

        // A command that outlives its deadline ends with an error, not a hang.
        let (_, conn) = upgrade(
            &server.socket,
            "/v1/vms/streams/exec",
            Some("cove-exec"),
            r#"{"argv":["sleep","600"],"timeout_secs":2}"#,
        )
        .await;
        let frames = stdcopy_frames(&read_to_end(&mut conn.unwrap()).await);
        let end: Value = serde_json::from_slice(&frames.last().unwrap().1).unwrap();
        assert!(
            end["error"].as_str().unwrap().contains("within 2 s"),
            "{end}"
        );

        // The console both ways: a line typed goes to the serial shell, its
        // answer comes back.
        let (status, conn) = upgrade(
            &server.socket,
            "/v1/vms/streams/console?replay=0",
            Some("cove-console"),
            "",
        )
        .await;
        assert_eq!(status, 101);
        let mut conn = conn.unwrap();
        conn.write_all(b"\necho api-console-$((6*7))\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("api-console-42") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the console closed early");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "console showed: {}",
            String::from_utf8_lossy(&seen)
        );
    });
    cove.ok(&["stop", "streams"]);
}

/// The events of one `POST /v1/images/build`, read with curl as they stream.
fn build_events(socket: &Path, body: &str) -> (u16, Vec<Value>) {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--no-buffer",
            "--max-time",
            "1800",
        ])
        .arg("--unix-socket")
        .arg(socket)
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
        ])
        .args(["-w", "\n%{http_code}", "http://cove/v1/images/build"])
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim_end()));
    let code: u16 = code.parse().unwrap();
    if code != 200 {
        return (code, vec![serde_json::json!({ "body": body })]);
    }
    let events = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (code, events)
}

fn stage_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "stage_started")
        .map(|e| e["stage"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "builds images"]
fn image_builds_stream_their_stages_and_end_with_the_image_or_a_typed_error() {
    let cove = Cove::new();
    cove.minimal_image();
    let server = Server::start(&cove);

    let (status, events) = build_events(&server.socket, r#"{"what":"minimal"}"#);
    assert_eq!(status, 200, "{events:?}");
    let last = events.last().expect("at least the last event");
    assert_eq!(last["event"], "built", "{last}");
    let stages = stage_names(&events);
    assert!(!stages.is_empty(), "no stages reported: {events:?}");
    for stage in &stages {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "stage_finished" && e["stage"] == *stage),
            "stage {stage} never finished"
        );
    }
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["event"] != "built" && e["event"] != "failed")
    );

    // The CLI's --json prints the same manifest and writes the same events.
    let out = cove
        .command()
        .args(["--json", "image", "build", "minimal"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        last["image"], manifest,
        "the API and `image build --json` agree"
    );
    let cli_events: Vec<Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(stage_names(&cli_events), stages);

    // A spec that does not parse ends the stream with a typed failure.
    let bad = cove.root().join("bad.toml");
    std::fs::write(&bad, "this is [not toml").unwrap();
    let (status, events) = build_events(
        &server.socket,
        &serde_json::json!({ "what": bad }).to_string(),
    );
    assert_eq!(status, 200);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "failed", "{last}");
    assert_eq!(last["kind"], "spec", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("bad.toml"),
        "{last}"
    );
    // One that does not exist is refused before anything streams.
    let (status, events) = build_events(&server.socket, r#"{"what":"/no/such.toml"}"#);
    assert_eq!(status, 400, "{events:?}");
}
