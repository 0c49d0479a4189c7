//! Runs the `cove` binary in isolated state and runtime directories, and
//! deletes every VM it created when dropped.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `cove` binary with its own `XDG_STATE_HOME` and `XDG_RUNTIME_DIR`
/// (cache and data are shared with the user, so images stay cached).
pub struct Cove {
    bin: PathBuf,
    /// Short on purpose: unix socket paths are limited to 108 bytes.
    root: tempfile::TempDir,
    created: RefCell<Vec<String>>,
    /// Run every command inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

impl Cove {
    pub fn new(bin: PathBuf) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("cb.")
            .tempdir_in("/tmp")
            .context("creating a temporary state directory under /tmp")?;
        let run = root.path().join("run");
        std::fs::create_dir_all(&run)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            bin,
            root,
            created: RefCell::new(Vec::new()),
            netns: None,
        })
    }

    /// A separate installation whose commands (and so its supervisors, QEMU and dnsmasq) run
    /// inside the network namespace `ns`.
    pub fn in_netns(bin: PathBuf, ns: &str) -> Result<Self> {
        let mut c = Self::new(bin)?;
        c.netns = Some(ns.to_owned());
        Ok(c)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn state_home(&self) -> PathBuf {
        self.root.path().join("state")
    }

    /// The per-VM directory cove keeps under the state home.
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.state_home().join("cove/vms").join(name)
    }

    /// A `cove` command with the isolated directories set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(args)
            .env("XDG_STATE_HOME", self.state_home())
            .env("XDG_RUNTIME_DIR", self.root.path().join("run"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cove ARGS`, failing with its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_cmd(self.command(args), args)
    }

    /// Runs `cmd`, a [`Cove::command`] of `args` with something added (an environment
    /// variable), failing with its stderr when it fails.
    pub fn run_cmd(&self, mut cmd: Command, args: &[&str]) -> Result<Output> {
        let out = cmd
            .output()
            .with_context(|| format!("running {} {}", self.bin.display(), args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`cove {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Runs `cove ARGS` and returns its wall time, the whole CLI included.
    pub fn timed(&self, args: &[&str]) -> Result<Duration> {
        self.timed_cmd(self.command(args), args)
    }

    pub fn timed_cmd(&self, mut cmd: Command, args: &[&str]) -> Result<Duration> {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running cove {}", args.join(" ")))?;
        let d = t.elapsed();
        if !out.status.success() {
            bail!(
                "`cove {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(d)
    }

    /// `cove --json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all)?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing the JSON of `cove --json {}`", args.join(" ")))
    }

    /// Builds an image (a cache hit when it was built before).
    pub fn build_image(&self, what: &str, extra: &[&str], cwd: Option<&Path>) -> Result<()> {
        let mut args = vec!["image", "build", what];
        args.extend_from_slice(extra);
        let mut cmd = self.command(&args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let out = cmd.output().context("running cove image build")?;
        if !out.status.success() {
            bail!(
                "`cove image build {what}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Records a VM name so that drop deletes it even when a step failed.
    pub fn track(&self, name: &str) {
        let mut c = self.created.borrow_mut();
        if !c.iter().any(|n| n == name) {
            c.push(name.to_owned());
        }
    }

    /// `cove create NAME ARGS...`, tracked for deletion.
    pub fn create(&self, name: &str, extra: &[&str]) -> Result<()> {
        self.track(name);
        let mut args = vec!["create", name];
        args.extend_from_slice(extra);
        self.run(&args).map(|_| ())
    }

    /// Kills (if running) and deletes a VM and, with `purge`, its data disks.
    pub fn delete_purging(&self, name: &str) -> Result<()> {
        self.run(&["delete", "--force", "--purge", name])?;
        self.created.borrow_mut().retain(|n| n != name);
        Ok(())
    }

    /// Kills (if running) and deletes a VM.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.run(&["delete", "--force", name])?;
        self.created.borrow_mut().retain(|n| n != name);
        Ok(())
    }

    /// Deletes every VM this run created except `keep`, so that a benchmark
    /// that failed half-way leaves no guest burning CPU during the next one.
    pub fn delete_all_except(&self, keep: &[&str]) {
        let names: Vec<String> = self.created.borrow().clone();
        for name in names.iter().filter(|n| !keep.contains(&n.as_str())) {
            if let Err(e) = self.delete(name) {
                eprintln!("warning: could not delete VM {name}: {e:#}");
            }
        }
    }

    /// `cove --json show NAME`.
    pub fn show(&self, name: &str) -> Result<Value> {
        self.json(&["show", name])
    }
}

impl Drop for Cove {
    fn drop(&mut self) {
        for name in self.created.borrow().iter() {
            let _ = self
                .command(&["delete", "--force", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `u64` field of a JSON object, with the field named in the error.
pub fn json_u64(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .with_context(|| format!("`{key}` missing from cove's JSON: {v}"))
}
