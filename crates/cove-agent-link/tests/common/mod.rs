//! Test support: the real cove-agent binary on this host, behind a small broker that behaves like
//! QEMU's virtio-serial chardev (one host client at a time; while none is connected the agent's
//! bytes are not read, so its writes block; the agent never sees the host come and go).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

/// Builds (once) and returns the cove-agent binary of this workspace.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("COVE_AGENT_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "cove-agent"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p cove-agent");
        assert!(st.success(), "building cove-agent failed");
        // tests run from target/<profile>/deps/
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("cove-agent")
    })
    .clone()
}

/// A running agent process; killed when dropped.
pub struct Agent(pub Child);

impl Agent {
    pub fn start(sock: &Path) -> Agent {
        let mut cmd = Command::new(agent_bin());
        // As a background job starts it (POSIX shells without job control ignore SIGINT and
        // SIGQUIT for `cmd &`): the agent must not pass that on to the commands it runs,
        // however the suite itself was started.
        // SAFETY: only `signal`, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                Ok(())
            });
        }
        let child = cmd
            .arg("--connect-unix")
            .arg(sock)
            .arg("--no-poweroff")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var("COVE_TEST_AGENT_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start cove-agent");
        Agent(child)
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), sig) };
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The QEMU stand-in.
pub struct Broker {
    pub agent_sock: PathBuf,
    pub host_sock: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Writer = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        let agent_sock = dir.join("agent.sock");
        let host_sock = dir.join("chardev.sock");
        let agent_l = UnixListener::bind(&agent_sock).unwrap();
        let host_l = UnixListener::bind(&host_sock).unwrap();
        let agent_w: Writer = Arc::new(tokio::sync::Mutex::new(None));
        let host_w: Writer = Arc::new(tokio::sync::Mutex::new(None));
        let (present_tx, present_rx) = watch::channel(false);

        let (aw, hw) = (agent_w.clone(), host_w.clone());
        let agents = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = agent_l.accept().await else {
                    return;
                };
                let (mut r, w) = conn.into_split();
                *aw.lock().await = Some(w);
                let hw = hw.clone();
                let mut present = present_rx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        // Like virtio-serial: guest output waits until a host client is attached.
                        if present.wait_for(|p| *p).await.is_err() {
                            return;
                        }
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut g = hw.lock().await;
                        if let Some(w) = g.as_mut()
                            && w.write_all(&buf[..n]).await.is_err()
                        {
                            *g = None;
                        }
                    }
                });
            }
        });
        let hosts = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = host_l.accept().await else {
                    return;
                };
                let (mut r, w) = conn.into_split();
                *host_w.lock().await = Some(w);
                present_tx.send_replace(true);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(w) = agent_w.lock().await.as_mut() {
                        let _ = w.write_all(&buf[..n]).await;
                    }
                }
                present_tx.send_replace(false);
                *host_w.lock().await = None;
            }
        });
        Broker {
            agent_sock,
            host_sock,
            tasks: vec![agents, hosts],
        }
    }
}

/// An in-memory AsyncWrite whose contents stay readable after it was boxed away.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl AsyncWrite for SharedBuf {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls a condition every 10 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}
