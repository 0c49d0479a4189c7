//! The Debian guest shared by the exec and copy benchmarks: cove-agent,
//! sshd (reached through a port forward) and qemu-guest-agent (reached
//! through an extra virtio-serial port) in one VM.

use crate::cove::Cove;
use crate::qga::Qga;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SPEC: &str = include_str!("../assets/bench-debian.toml");
pub const IMAGE: &str = "cove-bench-debian";
pub const NAME: &str = "deb";
const READY_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Guest {
    pub port: u16,
    pub key: PathBuf,
    pub qga: PathBuf,
    pub ctl: PathBuf,
}

/// Where the spec and the ssh key live: stable across runs so the image's
/// content hash, and therefore the image cache, stays valid.
fn bench_dir() -> Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(cache.join("cove-bench"))
}

impl Guest {
    pub fn boot(cove: &Cove) -> Result<Self> {
        let dir = bench_dir()?;
        std::fs::create_dir_all(&dir)?;
        let key = dir.join("id_ed25519");
        if !key.exists() {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "cove-bench", "-f"])
                .arg(&key)
                .status()
                .context("running ssh-keygen")?;
            if !st.success() {
                bail!("ssh-keygen failed");
            }
        }
        std::fs::write(dir.join("bench-debian.toml"), SPEC)?;
        eprintln!("building image {IMAGE} (debootstrap the first time, a few minutes)");
        cove.build_image("bench-debian.toml", &[], Some(&dir))?;

        let port = free_port()?;
        let qga = cove.root().join("qga.sock");
        let ctl = cove.root().join("ssh.ctl");
        let publish = format!("127.0.0.1:{port}:22");
        cove.create(
            NAME,
            &["--image", IMAGE, "--memory", "512M", "-p", &publish],
        )?;
        let extra = format!(
            "-chardev socket,id=qga,path={},server=on,wait=off -device virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0",
            qga.display()
        );
        let mut start = cove.command(&["start", NAME]);
        start.env(cove_qemu::EXTRA_ARGS_ENV, extra);
        cove.run_cmd(start, &["start", NAME])?;
        let g = Self {
            port,
            key,
            qga,
            ctl,
        };
        g.wait_ready()?;
        Ok(g)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            let mut cmd = self.ssh(&[]);
            cmd.args(["-o", "ConnectTimeout=10", "root@127.0.0.1", "true"]);
            match cmd.output() {
                Ok(o) if o.status.success() => break,
                Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                bail!("sshd in the guest did not answer within {READY_TIMEOUT:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        loop {
            match Qga::connect(&self.qga) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("qemu-ga in the guest did not answer within {READY_TIMEOUT:?}: {e:#}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Options every ssh and scp invocation shares.
    pub fn ssh_opts(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ]
        .map(String::from)
        .to_vec();
        v.push("-i".into());
        v.push(self.key.to_string_lossy().into_owned());
        v
    }

    /// `ssh -p PORT OPTS EXTRA`; the caller adds the destination and command.
    pub fn ssh(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_opts())
            .args(["-p", &self.port.to_string()])
            .args(extra)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts a ControlMaster in the background.
    pub fn start_master(&self) -> Result<()> {
        let ctl = self.ctl.to_string_lossy().into_owned();
        let st = self
            .ssh(&[
                "-M",
                "-S",
                &ctl,
                "-o",
                "ControlPersist=yes",
                "-fN",
                "root@127.0.0.1",
            ])
            .stdout(Stdio::null())
            .status()
            .context("starting an ssh ControlMaster")?;
        if !st.success() {
            bail!("ssh ControlMaster did not start");
        }
        Ok(())
    }

    pub fn stop_master(&self) {
        let ctl = self.ctl.to_string_lossy().into_owned();
        let _ = self
            .ssh(&["-S", &ctl, "-O", "exit", "root@127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn scp(&self, from: &str, to: &str) -> Command {
        let mut cmd = Command::new("scp");
        cmd.arg("-q")
            .args(self.ssh_opts())
            .args(["-P", &self.port.to_string(), from, to])
            .stdin(Stdio::null());
        cmd
    }

    pub fn qga(&self) -> Result<Qga> {
        Qga::connect(&self.qga)
    }

    pub fn ctl(&self) -> &Path {
        &self.ctl
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(l.local_addr()?.port())
}
