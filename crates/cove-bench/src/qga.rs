//! A minimal qemu-guest-agent client over its unix socket. Hand-written:
//! the protocol is one JSON object per line, and the QMP library cove uses
//! speaks QEMU's monitor (with its greeting and capabilities negotiation),
//! which qemu-ga does not have.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Qga {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qga {
    /// Connects and synchronises (`guest-sync`), discarding any stale
    /// replies a previous client left in the channel.
    pub fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to qemu-ga at {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut q = Self {
            writer: stream,
            reader,
        };
        let id = u64::from(std::process::id()) * 1000 + 7;
        q.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        loop {
            let v = q.recv()?;
            if v["return"].as_u64() == Some(id) {
                return Ok(q);
            }
        }
    }

    fn send(&mut self, v: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        self.writer.write_all(&line).context("writing to qemu-ga")
    }

    fn recv(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .context("reading from qemu-ga")?
                == 0
            {
                bail!("qemu-ga closed the connection");
            }
            // Skip anything that is not JSON (e.g. a 0xFF sync delimiter).
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                return Ok(v);
            }
        }
    }

    /// One command and its `return` value.
    pub fn call(&mut self, execute: &str, arguments: Value) -> Result<Value> {
        self.send(&json!({"execute": execute, "arguments": arguments}))?;
        let v = self.recv()?;
        if let Some(e) = v.get("error") {
            bail!("qemu-ga {execute}: {e}");
        }
        v.get("return")
            .cloned()
            .with_context(|| format!("qemu-ga {execute}: no return in {v}"))
    }

    /// `guest-exec` then `guest-exec-status` polled back to back until the
    /// process has exited; returns its exit code. No sleep between polls: the
    /// fastest this protocol can go.
    pub fn exec(&mut self, path: &str, args: &[&str]) -> Result<i64> {
        let r = self.call(
            "guest-exec",
            json!({"path": path, "arg": args, "capture-output": true}),
        )?;
        let pid = r["pid"].as_i64().context("guest-exec returned no pid")?;
        loop {
            let st = self.call("guest-exec-status", json!({"pid": pid}))?;
            if st["exited"].as_bool() == Some(true) {
                return Ok(st["exitcode"].as_i64().unwrap_or(-1));
            }
        }
    }
}
