//! `cove run --foreground`, as a scheduler runs it: the exit status says how
//! the VM ended, SIGTERM stops the guest gracefully, nothing is left behind.

use cove_e2e::Cove;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Boot (and retry) bounds of these tests: TCG boots of the minimal image
/// take 3-35 s on these loaded 2-core hosts.
const BOOT: Duration = Duration::from_secs(120);

struct Foreground {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Foreground {
    fn start(cove: &Cove, args: &[&str]) -> Self {
        let stderr = cove.root().join("run.stderr");
        let mut cmd = cove.command();
        cmd.arg("run")
            .arg("--foreground")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        Self {
            child: cmd.spawn().expect("spawning cove run"),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_ready(&self, cove: &Cove, name: &str) {
        cove.wait_for(&format!("{name} ready in the foreground"), BOOT, || {
            self.stderr().contains("is running")
        });
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory effects; the pid is our child's.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the exit (bounded); returns its status and stdout.
    fn finish(mut self, cove: &Cove, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                cove.dump_consoles();
                panic!(
                    "cove run did not exit within {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status, out)
    }
}

#[test]
#[ignore = "boots VMs"]
fn sigterm_stops_the_guest_gracefully_exits_0_and_leaves_nothing_behind() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "fg", "--image", "minimal"]);
    let console = cove.root().join("console.out");
    let run = Foreground::start(&cove, &["fg", "--console", console.to_str().unwrap()]);
    run.wait_ready(&cove, "fg");
    // The VM is an ordinary cove VM meanwhile.
    assert_eq!(cove.state("fg"), "running");
    assert_eq!(
        cove.ok(&["exec", "fg", "--", "echo", "inside"]).trim(),
        "inside"
    );
    let pid = cove.json(&["show", "fg"])["supervisor_pid"].as_u64();
    assert_eq!(
        pid,
        Some(run.child.id() as u64),
        "the supervisor is this process"
    );

    run.signal(libc::SIGTERM);
    let stderr_path = run.stderr.clone();
    let (status, stdout) = run.finish(&cove, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(stderr_path).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "graceful stop exits 0; stderr:\n{stderr}"
    );
    assert!(stderr.contains("SIGTERM: stopping fg"), "{stderr}");
    assert!(
        stdout.is_empty(),
        "console went to the file, not stdout: {stdout}"
    );
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("cove-init: ready"),
        "console file has the boot: {text}"
    );
    assert!(
        text.contains("reboot: Power down"),
        "the guest shut itself down: {text}"
    );
    let mode = std::fs::metadata(&console).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "console file mode {mode:o}");
    assert_eq!(cove.state("fg"), "stopped");
    assert!(
        cove.processes().is_empty(),
        "left behind: {:?}",
        cove.processes()
    );
    assert!(
        !cove.root().join("run/cove/fg").exists(),
        "runtime dir removed"
    );
}

#[test]
#[ignore = "boots VMs"]
fn a_vmm_that_dies_after_ready_exits_4_with_the_console_on_stdout() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "fg", "--image", "minimal"]);
    let run = Foreground::start(&cove, &["fg"]);
    run.wait_ready(&cove, "fg");
    let qemu = cove.json(&["show", "fg"])["pid"]
        .as_u64()
        .expect("QEMU pid");
    // SAFETY: kill has no memory effects; the pid is this test's QEMU.
    unsafe { libc::kill(qemu as i32, libc::SIGKILL) };
    let (status, stdout) = run.finish(&cove, Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "a crash after ready is status 4");
    assert!(
        stdout.contains("cove-init: ready"),
        "console on stdout: {stdout}"
    );
    assert_eq!(cove.state("fg"), "crashed");
    assert!(
        cove.processes().is_empty(),
        "left behind: {:?}",
        cove.processes()
    );
}

#[test]
#[ignore = "boots VMs"]
fn a_guest_that_never_becomes_ready_exits_3() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "fg", "--image", "minimal"]);
    // No guest answers within one second under TCG (a boot takes several).
    let run = Foreground::start(&cove, &["fg", "--timeout", "1"]);
    let stderr_path = run.stderr.clone();
    let (status, _) = run.finish(&cove, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(stderr_path).unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "boot failure is status 3; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("never answered"),
        "the cause is said: {stderr}"
    );
    assert!(
        cove.processes().is_empty(),
        "left behind: {:?}",
        cove.processes()
    );
}

#[test]
fn a_vm_that_cannot_start_exits_1_and_run_needs_foreground() {
    let cove = Cove::new();
    let err = cove.run(&["run", "--foreground", "nosuch"]);
    assert_eq!(err.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.contains("nosuch"), "{stderr}");
    let usage = cove.run(&["run", "nosuch"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "without --foreground: usage error"
    );
    let help = cove.ok(&["run", "--help"]);
    assert!(
        help.contains("Exit status:"),
        "the exit table is in --help: {help}"
    );
}
