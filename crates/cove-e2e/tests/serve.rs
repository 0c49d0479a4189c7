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
