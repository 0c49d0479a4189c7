//! A stand-in for Firecracker's API server and hybrid vsock, following the
//! published API contract (`src/firecracker/swagger/firecracker.yaml` of
//! firecracker-microvm/firecracker): the paths and methods it serves, each
//! body's required and allowed fields and their enums, which calls are
//! pre-boot only, and its answers (204 with no body; 400 with
//! `{"fault_message": ...}`). Firecracker itself needs KVM, which these
//! machines lack; this double is what the backend's requests are tested
//! against. It never pretends a guest booted: it only keeps the state
//! machine the API describes (not started, running, paused).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    configured: Vec<String>,
    started: bool,
    paused: bool,
    seen: Vec<Seen>,
    /// Paths answered with 400 and this fault, whatever the body.
    refuse: Vec<(String, String)>,
}

/// The API double; dropped, it stops serving.
pub struct ApiDouble {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiDouble {
    pub fn serve(socket: &Path) -> Self {
        let listener = UnixListener::bind(socket).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move { serve_one(stream, state).await });
            }
        });
        Self { state, task }
    }

    pub fn refuse(&self, path: &str, fault: &str) {
        self.state
            .lock()
            .unwrap()
            .refuse
            .push((path.into(), fault.into()));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// `METHOD path` of every request, in order.
    pub fn calls(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

async fn serve_one(mut stream: UnixStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (method, path, body) = loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
            // HTTP/1.1 requires Host; Firecracker's server takes JSON.
            assert_eq!(req.version, Some(1), "HTTP/1.1");
            assert!(
                req.headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("host"))
            );
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .unwrap_or(0);
            if buf.len() >= head + len {
                let body = if len == 0 {
                    Value::Null
                } else {
                    serde_json::from_slice(&buf[head..head + len]).unwrap_or(Value::Null)
                };
                break (
                    req.method.unwrap().to_owned(),
                    req.path.unwrap().to_owned(),
                    body,
                );
            }
        }
    };
    let verdict = {
        let mut st = state.lock().unwrap();
        let verdict = match st.refuse.iter().find(|(p, _)| *p == path) {
            Some((_, fault)) => Err(fault.clone()),
            None => judge(&mut st, &method, &path, &body),
        };
        st.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            status: if verdict.is_ok() { 204 } else { 400 },
        });
        verdict
    };
    let answer = match verdict {
        Ok(()) => {
            "HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
                .to_owned()
        }
        Err(fault) => {
            let body = serde_json::json!({ "fault_message": fault }).to_string();
            format!(
                "HTTP/1.1 400 Bad Request\r\nServer: Firecracker API\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = stream.write_all(answer.as_bytes()).await;
}

/// The body's fields are within `allowed` and include `required`.
fn fields<'a>(
    body: &'a Value,
    required: &[&str],
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let obj = body.as_object().ok_or("the body must be a JSON object")?;
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!("unknown field `{key}`"));
        }
    }
    for key in required {
        if !obj.contains_key(*key) {
            return Err(format!("missing field `{key}`"));
        }
    }
    Ok(obj)
}

fn one_of(obj: &Map<String, Value>, key: &str, values: &[&str]) -> Result<(), String> {
    match obj.get(key) {
        None => Ok(()),
        Some(Value::String(s)) if values.contains(&s.as_str()) => Ok(()),
        Some(v) => Err(format!("`{key}`: {v} is none of {values:?}")),
    }
}

/// A Linux interface name (at most 15 bytes), which Firecracker opens as a TAP.
fn host_dev_name(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some(n) if !n.is_empty() && n.len() <= 15 => Ok(()),
        _ => Err(format!("host_dev_name {v} is not an interface name")),
    }
}

fn pre_boot(st: &State, what: &str) -> Result<(), String> {
    if st.started {
        Err(format!("{what} is not allowed after the microVM started"))
    } else {
        Ok(())
    }
}

fn judge(st: &mut State, method: &str, path: &str, body: &Value) -> Result<(), String> {
    match (method, path) {
        ("PUT", "/machine-config") => {
            pre_boot(st, "machine configuration")?;
            let o = fields(
                body,
                &["vcpu_count", "mem_size_mib"],
                &[
                    "cpu_template",
                    "smt",
                    "mem_size_mib",
                    "track_dirty_pages",
                    "vcpu_count",
                    "huge_pages",
                ],
            )?;
            let vcpus = o["vcpu_count"]
                .as_u64()
                .ok_or("vcpu_count must be an integer")?;
            if !(1..=32).contains(&vcpus) || (vcpus > 1 && vcpus % 2 == 1) {
                return Err(format!("invalid vcpu_count {vcpus}"));
            }
            o["mem_size_mib"]
                .as_u64()
                .ok_or("mem_size_mib must be an integer")?;
            one_of(o, "huge_pages", &["None", "Transparent", "2M"])?;
            st.configured.push("machine-config".into());
            Ok(())
        }
        ("PUT", "/boot-source") => {
            pre_boot(st, "boot source")?;
            let o = fields(
                body,
                &["kernel_image_path"],
                &["kernel_image_path", "boot_args", "initrd_path"],
            )?;
            o["kernel_image_path"]
                .as_str()
                .ok_or("kernel_image_path must be a string")?;
            st.configured.push("boot-source".into());
            Ok(())
        }
        ("PUT", p) if p.starts_with("/drives/") => {
            pre_boot(st, "drive configuration")?;
            let o = fields(
                body,
                &["drive_id", "is_root_device"],
                &[
                    "drive_id",
                    "partuuid",
                    "is_root_device",
                    "cache_type",
                    "is_read_only",
                    "path_on_host",
                    "rate_limiter",
                    "io_engine",
                    "socket",
                ],
            )?;
            if o["drive_id"].as_str() != Some(&p["/drives/".len()..]) {
                return Err("the drive_id in the body differs from the path".into());
            }
            one_of(o, "cache_type", &["Unsafe", "Writeback"])?;
            one_of(o, "io_engine", &["Sync", "Async"])?;
            let virtio_block = o.contains_key("path_on_host") && o.contains_key("is_read_only");
            if !(o.contains_key("socket") || virtio_block) {
                return Err("a virtio-block drive needs path_on_host and is_read_only".into());
            }
            st.configured.push(p.into());
            Ok(())
        }
        ("PUT", p) if p.starts_with("/network-interfaces/") => {
            pre_boot(st, "network configuration")?;
            let o = fields(
                body,
                &["iface_id", "host_dev_name"],
                &[
                    "iface_id",
                    "host_dev_name",
                    "guest_mac",
                    "mtu",
                    "rx_rate_limiter",
                    "tx_rate_limiter",
                ],
            )?;
            if o["iface_id"].as_str() != Some(&p["/network-interfaces/".len()..]) {
                return Err("the iface_id in the body differs from the path".into());
            }
            host_dev_name(&o["host_dev_name"])?;
            if let Some(mac) = o.get("guest_mac") {
                let ok = mac.as_str().is_some_and(|m| {
                    m.len() == 17
                        && m.split(':')
                            .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
                });
                if !ok {
                    return Err(format!("guest_mac {mac} is not a MAC address"));
                }
            }
            st.configured.push(p.into());
            Ok(())
        }
        ("PUT", "/vsock") => {
            pre_boot(st, "vsock configuration")?;
            let o = fields(
                body,
                &["guest_cid", "uds_path"],
                &["guest_cid", "uds_path", "vsock_id"],
            )?;
            if o["guest_cid"].as_u64().is_none_or(|c| c < 3) {
                return Err("guest_cid must be at least 3".into());
            }
            st.configured.push("vsock".into());
            Ok(())
        }
        ("PUT", "/actions") => {
            let o = fields(body, &["action_type"], &["action_type"])?;
            one_of(
                o,
                "action_type",
                &["FlushMetrics", "InstanceStart", "SendCtrlAltDel"],
            )?;
            match o["action_type"].as_str() {
                Some("InstanceStart") => {
                    pre_boot(st, "InstanceStart")?;
                    if !st.configured.iter().any(|c| c == "boot-source") {
                        return Err("cannot start the microVM without a boot source".into());
                    }
                    st.started = true;
                    Ok(())
                }
                Some("SendCtrlAltDel") if !st.started => {
                    Err("SendCtrlAltDel needs a started microVM".into())
                }
                _ => Ok(()),
            }
        }
        ("PATCH", "/vm") => {
            let o = fields(body, &["state"], &["state"])?;
            one_of(o, "state", &["Paused", "Resumed"])?;
            if !st.started {
                return Err("the microVM is not started".into());
            }
            st.paused = o["state"] == "Paused";
            Ok(())
        }
        ("PUT", "/snapshot/create") => {
            let o = fields(
                body,
                &["mem_file_path", "snapshot_path"],
                &["mem_file_path", "snapshot_path", "snapshot_type"],
            )?;
            one_of(o, "snapshot_type", &["Full", "Diff"])?;
            if !st.paused {
                return Err("a snapshot needs a paused microVM".into());
            }
            Ok(())
        }
        ("PUT", "/snapshot/load") => {
            let o = fields(
                body,
                &["snapshot_path"],
                &[
                    "enable_diff_snapshots",
                    "track_dirty_pages",
                    "mem_file_path",
                    "mem_backend",
                    "snapshot_path",
                    "resume_vm",
                    "network_overrides",
                    "vsock_override",
                    "clock_realtime",
                ],
            )?;
            if o.contains_key("mem_file_path") == o.contains_key("mem_backend") {
                return Err("exactly one of mem_file_path and mem_backend".into());
            }
            if let Some(b) = o.get("mem_backend") {
                let b = fields(
                    b,
                    &["backend_type", "backend_path"],
                    &["backend_type", "backend_path"],
                )?;
                one_of(b, "backend_type", &["File", "Uffd"])?;
            }
            if let Some(list) = o.get("network_overrides") {
                for item in list
                    .as_array()
                    .ok_or("network_overrides must be an array")?
                {
                    let n = fields(
                        item,
                        &["iface_id", "host_dev_name"],
                        &["iface_id", "host_dev_name"],
                    )?;
                    host_dev_name(&n["host_dev_name"])?;
                }
            }
            if st.started || !st.configured.is_empty() {
                return Err("a snapshot loads only into a fresh microVM".into());
            }
            st.started = true;
            st.paused = o.get("resume_vm") != Some(&Value::Bool(true));
            Ok(())
        }
        _ => Err(format!(
            "invalid request method and/or path: {method} {path}"
        )),
    }
}

/// Firecracker's hybrid vsock host socket: `CONNECT <port>\n` is answered
/// `OK <host port>\n` if the (pretend) guest listens on that port, then the
/// connection echoes; otherwise it is closed.
pub fn serve_vsock(socket: &Path, guest_port: u32) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut byte = [0u8];
                while stream.read(&mut byte).await.unwrap_or(0) == 1 && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                if line != format!("CONNECT {guest_port}") {
                    return;
                }
                stream.write_all(b"OK 1073741824\n").await.unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

pub fn short_dir() -> (tempfile::TempDir, PathBuf) {
    // Unix socket paths must be short: not under target/.
    let dir = tempfile::Builder::new()
        .prefix("cfc")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().to_owned();
    (dir, path)
}
