//! The harness for cove's end-to-end tests (in `tests/`, one file per area).
//!
//! Each test gets a [`Cove`]: its own state and runtime directories, so
//! tests run in parallel without seeing each other's VMs, and a shared
//! cache and data directory, so the minimal image is built once per
//! machine (cove's cache is content-addressed, and safe to share).
//!
//! VM-booting tests are `#[ignore]`d so a plain `cargo test` never boots a
//! guest; `scripts/test` runs them with `--include-ignored`. A failed test
//! prints the VM's console log: the evidence is what matters.

pub mod netns;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `cove` binary under test: `$COVE_BIN`, else the one of the same
/// build profile as this test (`<target>/<profile>/deps/test` → `<target>/<profile>/cove`).
/// `psql` on the host against a guest's PostgreSQL forwarded to 127.0.0.1:`port`, as user
/// `postgres`, unaligned and tuples only (so stdout is just the values).
pub fn psql(port: u16, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", "postgres", "-c", sql])
        .output()
        .expect("the host's psql (postgresql-client) is installed")
}

pub fn cove_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("COVE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let candidate = exe
        .ancestors()
        .nth(2)
        .expect("test binary inside a target dir")
        .join("cove");
    assert!(
        candidate.exists(),
        "no cove binary at {}: run `scripts/test` (or `cargo build`) first, or set COVE_BIN",
        candidate.display()
    );
    candidate
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("test binary inside a target dir")
        .to_path_buf()
}

/// Where images and downloads are shared between tests of one machine.
fn shared_dir() -> PathBuf {
    std::env::var_os("COVE_E2E_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("e2e-shared"))
}

/// An isolated cove installation.
pub struct Cove {
    root: tempfile::TempDir,
    /// Run cove inside this network namespace (`ip netns exec`), see [`netns::NetNs`].
    netns: Option<String>,
    /// Images and data disks of its own instead of the shared ones (a test that removes
    /// images must not take those of other tests' VMs).
    own_data: bool,
}

impl Default for Cove {
    fn default() -> Self {
        Self::new()
    }
}

impl Cove {
    pub fn new() -> Self {
        // Short paths: unix socket paths must stay under 108 bytes.
        let root = tempfile::Builder::new()
            .prefix("cove-e2e.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Self {
            root,
            netns: None,
            own_data: false,
        }
    }

    /// An installation with its own images and data disks (downloads still shared).
    pub fn with_own_data() -> Self {
        let mut cove = Self::new();
        cove.own_data = true;
        cove
    }

    /// An installation whose every command runs inside the test's network namespace, so the
    /// supervisors, QEMU and dnsmasq cove starts live there too.
    pub fn in_netns(ns: &netns::NetNs) -> Self {
        let mut cove = Self::new();
        cove.netns = Some(ns.name.clone());
        cove
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn command(&self) -> Command {
        self.command_via(&[])
    }

    /// cove run through `wrapper` (e.g. `setpriv --bounding-set -net_admin`), with this
    /// installation's environment, inside its namespace if it has one.
    pub fn command_via(&self, wrapper: &[&str]) -> Command {
        let shared = shared_dir();
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(std::ffi::OsString::from));
        }
        argv.extend(wrapper.iter().map(std::ffi::OsString::from));
        argv.push(cove_bin().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.env("XDG_STATE_HOME", self.root.path().join("state"))
            .env("XDG_RUNTIME_DIR", self.root.path().join("run"))
            .env("XDG_CACHE_HOME", shared.join("cache"))
            .env(
                "XDG_DATA_HOME",
                match self.own_data {
                    true => self.root.path().join("data"),
                    false => shared.join("data"),
                },
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Runs cove with `args`, returning its output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running cove")
    }

    /// Runs cove and requires success, printing everything otherwise.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            self.dump_consoles();
            panic!(
                "`cove {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs cove and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "`cove {}` should have failed but succeeded:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).expect("cove printed JSON")
    }

    pub fn state(&self, name: &str) -> String {
        self.json(&["show", name])["state"]
            .as_str()
            .expect("state is a string")
            .to_owned()
    }

    /// Builds (or finds in the shared cache) the minimal image.
    pub fn minimal_image(&self) {
        self.image(&["minimal"]);
    }

    /// `cove image build ARGS`. In a network namespace, which has no way out to Debian's
    /// mirror, another installation outside it builds first and fills the shared cache; the
    /// build here then finds everything there and records the image for this installation.
    pub fn image(&self, args: &[&str]) -> String {
        let args = [&["image", "build"], args].concat();
        if self.netns.is_some() {
            Cove::new().ok(&args);
        }
        self.ok(&args)
    }

    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.root.path().join("state/cove/vms").join(name)
    }

    /// Where a cold-booted VM's RAM file is, by cove's own rule (a tmpfs where there is one).
    pub fn ram_file(&self, name: &str) -> PathBuf {
        self.ram_root().join(name).join("memory")
    }

    /// This installation's directory of RAM files (outside its root when on /dev/shm).
    fn ram_root(&self) -> PathBuf {
        let runtime = self.root.path().join("run/cove");
        cove_state::paths::ram_root(&runtime, Path::new(cove_state::paths::SHM))
    }

    pub fn console_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.vm_dir(name).join("console.log")).unwrap_or_default()
    }

    /// Prints every VM's console log: called when a test fails.
    pub fn dump_consoles(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.path().join("state/cove/vms")) else {
            return;
        };
        for entry in entries.flatten() {
            for file in ["console.log", "supervisor.log", "vmm.log"] {
                let text = std::fs::read_to_string(entry.path().join(file)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!(
                    "----- {} {file} (last 40 lines) -----",
                    entry.file_name().to_string_lossy()
                );
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Waits for a condition, failing the test with `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                self.dump_consoles();
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pids of processes of this installation: QEMU (its command line names
    /// our sockets) and supervisors (their environment names our state dir).
    pub fn processes(&self) -> Vec<u32> {
        let needle = self.root.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let mentions = |file: &str| {
                let bytes = std::fs::read(entry.path().join(file)).unwrap_or_default();
                String::from_utf8_lossy(&bytes).contains(&needle)
            };
            if pid != std::process::id() && (mentions("cmdline") || mentions("environ")) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Pids of this installation's passt processes (the user-mode networks of its VMs).
    pub fn passts(&self) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with("passt"))
            })
            .collect()
    }
}

impl Drop for Cove {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_consoles();
        }
        // Never leave a guest running behind a test, pass or fail.
        for pid in self.processes() {
            // SAFETY: kill has no memory effects; these pids belong to this test's VMs.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        // Killed VMs' RAM files, which a user's next `cove` command would release; the test's
        // installation has no next command.
        let ram = self.ram_root();
        if !ram.starts_with(self.root.path()) {
            let _ = std::fs::remove_dir_all(ram);
        }
    }
}
