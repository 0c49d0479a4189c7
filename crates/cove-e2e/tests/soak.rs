//! The fault and soak run (issue 10): cycles of create → start → exec → cp → stop → delete
//! with kill -9 injected at random points into the CLI, the supervisor and QEMU, concurrent CLIs
//! on one VM, and a full disk under the state directory. After every cycle: nothing of the
//! cycle's VM is left (process, file, socket, record), every record tells the truth, and every
//! write the guest acknowledged (`sync` returned) is there after the VMM was killed. Across the
//! run: a long-lived VM's supervisor keeps the same file descriptors and bounded memory.
//!
//! The suite runs a short version (`COVE_SOAK_CYCLES`, default 4); `scripts/soak` runs 300 and
//! prints the figures RELIABILITY.md records. The fault points come from `COVE_SOAK_SEED`
//! (printed, so a failure can be replayed); what is asserted holds wherever a fault lands.

use cove_e2e::Cove;
use serde_json::Value;
use sha2::Digest;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const ANCHOR: &str = "anchor";

/// How long a VM may take to wind down on its own after a fault: a `stop` whose CLI was killed
/// goes on in the supervisor, which forces the VMM off after its 20 s grace.
const WIND_DOWN: Duration = Duration::from_secs(90);

fn sigkill(pid: u64) {
    // SAFETY: kill has no memory effects; every pid passed is one of this test's processes.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|t| t.trim_start().starts_with('Z'))
    })
}

fn open_fds(pid: u64) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The supervisor's descriptors once the connections of the commands just run are gone: a CLI
/// exits as soon as it has its answer, and the supervisor closes its end a moment later. The
/// count that holds for half a second (or the last one after 10 s).
fn settled_fds(pid: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = open_fds(pid);
    let mut same_since = Instant::now();
    while Instant::now() < deadline && same_since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        let now = open_fds(pid);
        if now != last {
            (last, same_since) = (now, Instant::now());
        }
    }
    last
}

fn rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Pids of this installation's processes that belong to VM `name` (QEMU names its directory on
/// its command line; a supervisor is started with the VM's name as an argument).
fn processes_of(cove: &Cove, name: &str) -> Vec<u32> {
    let dir = cove.vm_dir(name).to_string_lossy().into_owned();
    cove.processes()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let text = String::from_utf8_lossy(&cmdline);
            pid_alive(u64::from(*pid))
                && (text.contains(&format!("{dir}/")) || args.contains(&name.as_bytes()))
        })
        .collect()
}

#[derive(Default, Debug)]
struct Figures {
    cycles: u32,
    cli_kills: u32,
    supervisor_kills: u32,
    qemu_kills: u32,
    concurrent_rounds: u32,
    acked_writes_checked: u32,
}

struct Soak {
    cove: Cove,
    rng: fastrand::Rng,
    figures: Figures,
}

impl Soak {
    fn show(&self, name: &str) -> Value {
        self.cove.json(&["show", name])
    }

    /// The record says what is true: `running` means its QEMU lives, anything else means no
    /// process of the VM is left (after the supervisor's own wind-down).
    fn assert_state_true(&self, name: &str) {
        let show = self.show(name);
        match show["state"].as_str() {
            Some("running") => {
                let pid = show["pid"].as_u64().expect("a running VM has a pid");
                assert!(
                    pid_alive(pid),
                    "{name} recorded running but QEMU {pid} is gone"
                );
            }
            Some(_) => self.cove.wait_for(
                &format!("no process of the not-running VM {name}"),
                WIND_DOWN,
                || processes_of(&self.cove, name).is_empty(),
            ),
            None => panic!("show without state: {show}"),
        }
    }

    /// `start`, killed with SIGKILL after a random delay inside the boot; the next `start`
    /// must bring the VM up whatever point the kill reached.
    fn start_with_cli_kill(&mut self, name: &str) {
        let mut cli_killed = false;
        if self.rng.u8(0..3) == 0 {
            let mut cli = self.cove.command().args(["start", name]).spawn().unwrap();
            thread::sleep(Duration::from_millis(self.rng.u64(0..4000)));
            let _ = cli.kill();
            cli.wait().unwrap();
            self.figures.cli_kills += 1;
            cli_killed = true;
            // The boot goes on without its CLI; if it is already done, there is nothing to join.
            if self.cove.state(name) == "running" {
                return;
            }
        }
        let out = self.cove.run(&["start", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        // The killed CLI's boot can finish between the state read above and this start, which
        // then finds the VM up: what it was run for.
        let finished_meanwhile = cli_killed && err.contains("is already running");
        assert!(
            out.status.success() || finished_meanwhile,
            "`cove start {name}` failed ({}): {err}",
            out.status
        );
        assert_eq!(self.cove.state(name), "running");
    }

    /// A write the guest acknowledged: `sync` returned inside the guest.
    fn acked_write(&self, name: &str, text: &str) {
        self.cove.ok(&[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!("echo {text} > /root/acked && sync"),
        ]);
    }

    fn read_acked(&self, name: &str) -> String {
        self.cove.ok(&["exec", name, "--", "cat", "/root/acked"])
    }

    /// Several CLIs at once on one VM: execs and copies in both directions.
    fn concurrent_clis(&mut self, name: &str, cycle: u32) {
        let dir = self.cove.root().join(format!("cp-{cycle}"));
        std::fs::create_dir_all(&dir).unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + cycle) as u8).collect();
        std::fs::write(dir.join("in"), &payload).unwrap();
        let into = format!("{name}:/root/copied");
        let from = format!("{name}:/root/acked");
        let local_in = dir.join("in").to_string_lossy().into_owned();
        let local_out = dir.join("out").to_string_lossy().into_owned();
        thread::scope(|s| {
            let cove = &self.cove;
            let execs: Vec<_> = (0..3)
                .map(|i| {
                    s.spawn(move || {
                        cove.ok(&["exec", name, "--", "echo", &format!("parallel-{i}")])
                    })
                })
                .collect();
            let copy_in = s.spawn(|| cove.ok(&["cp", &local_in, &into]));
            let copy_out = s.spawn(|| cove.ok(&["cp", &from, &local_out]));
            for (i, e) in execs.into_iter().enumerate() {
                assert_eq!(e.join().unwrap(), format!("parallel-{i}\n"));
            }
            copy_in.join().unwrap();
            copy_out.join().unwrap();
        });
        let back = self
            .cove
            .ok(&["exec", name, "--", "sha256sum", "/root/copied"]);
        let expected = hex::encode(sha2::Sha256::digest(&payload));
        assert!(back.starts_with(&expected), "{back} vs {expected}");
        assert_eq!(
            std::fs::read_to_string(dir.join("out")).unwrap(),
            self.read_acked(name)
        );
        std::fs::remove_dir_all(&dir).unwrap();
        self.figures.concurrent_rounds += 1;
    }

    /// kill -9 of QEMU, of the supervisor, or of both, then `start`: the acknowledged write
    /// is there.
    fn vmm_fault(&mut self, name: &str, cycle: u32) {
        let text = format!("cycle-{cycle}");
        self.acked_write(name, &text);
        let show = self.show(name);
        let qemu = show["pid"].as_u64().expect("qemu pid");
        let supervisor = show["supervisor_pid"].as_u64().expect("supervisor pid");
        let killed_qemu = match self.rng.u8(0..3) {
            0 => {
                sigkill(qemu);
                self.figures.qemu_kills += 1;
                true
            }
            1 => {
                sigkill(supervisor);
                self.figures.supervisor_kills += 1;
                false
            }
            _ => {
                sigkill(supervisor);
                sigkill(qemu);
                self.figures.supervisor_kills += 1;
                self.figures.qemu_kills += 1;
                true
            }
        };
        self.cove
            .wait_for("the killed processes to be gone", WIND_DOWN, || {
                !pid_alive(supervisor) && (!killed_qemu || !pid_alive(qemu))
            });
        self.assert_state_true(name);
        if self.cove.state(name) != "running" {
            self.start_with_cli_kill(name);
        }
        assert_eq!(
            self.read_acked(name).trim(),
            text,
            "acknowledged write lost"
        );
        self.figures.acked_writes_checked += 1;
    }

    /// `stop` or `delete --force`, sometimes with the CLI killed midway; afterwards nothing
    /// of the VM is left.
    fn end(&mut self, name: &str) {
        if self.rng.bool() {
            if self.rng.u8(0..3) == 0 {
                let mut cli = self.cove.command().args(["stop", name]).spawn().unwrap();
                thread::sleep(Duration::from_millis(self.rng.u64(0..1500)));
                let _ = cli.kill();
                cli.wait().unwrap();
                self.figures.cli_kills += 1;
                self.assert_state_true(name);
            }
            if self.cove.state(name) == "running" {
                self.cove.ok(&["stop", name]);
            }
            self.assert_state_true(name);
            self.cove.ok(&["delete", name]);
        } else {
            self.cove.ok(&["delete", "--force", name]);
        }
        let listed = self.cove.json(&["list"]);
        assert!(
            !listed.to_string().contains(&format!("\"{name}\"")),
            "{name} still listed: {listed}"
        );
        assert!(!self.cove.vm_dir(name).exists(), "{name}'s directory left");
        assert!(
            !self.cove.root().join("run/cove").join(name).exists(),
            "{name}'s runtime directory left"
        );
        // Its RAM file would hold host memory (on a tmpfs) for nobody.
        assert!(
            !self.cove.ram_file(name).parent().unwrap().exists(),
            "{name}'s RAM file left"
        );
        self.cove.wait_for(
            &format!("no process of the deleted VM {name}"),
            WIND_DOWN,
            || processes_of(&self.cove, name).is_empty(),
        );
    }

    fn cycle(&mut self, cycle: u32) {
        let name = format!("s{cycle}");
        self.cove.ok(&["create", &name, "--image", "minimal"]);
        self.start_with_cli_kill(&name);
        self.acked_write(&name, "first");
        self.concurrent_clis(&name, cycle);
        self.vmm_fault(&name, cycle);
        self.end(&name);
        // The long-lived VM serves a command every cycle.
        assert_eq!(
            self.cove
                .ok(&["exec", ANCHOR, "--", "echo", &cycle.to_string()])
                .trim(),
            cycle.to_string()
        );
        self.figures.cycles += 1;
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "boots VMs"]
fn soak_cycles_with_kill_9_leave_nothing_and_lose_no_acknowledged_write() {
    let cycles = env_u64("COVE_SOAK_CYCLES", 4) as u32;
    let seed = env_u64("COVE_SOAK_SEED", 0x5eed_c0fe);
    eprintln!("soak: {cycles} cycles, seed {seed} (COVE_SOAK_SEED replays)");
    let mut soak = Soak {
        cove: Cove::new(),
        rng: fastrand::Rng::with_seed(seed),
        figures: Figures::default(),
    };
    let started = Instant::now();
    soak.cove.minimal_image();
    soak.cove.ok(&["create", ANCHOR, "--image", "minimal"]);
    soak.cove.ok(&["start", ANCHOR]);
    soak.cove.ok(&["exec", ANCHOR, "--", "true"]);
    let supervisor = soak.show(ANCHOR)["supervisor_pid"].as_u64().unwrap();
    let (fds_before, rss_before) = (settled_fds(supervisor), rss_kib(supervisor));

    for cycle in 0..cycles {
        soak.cycle(cycle);
        if cycle % 25 == 24 {
            eprintln!("soak: {} cycles, {:?}", cycle + 1, started.elapsed());
        }
    }

    assert_eq!(
        soak.show(ANCHOR)["supervisor_pid"].as_u64(),
        Some(supervisor),
        "the long-lived supervisor never restarted"
    );
    let (fds_after, rss_after) = (settled_fds(supervisor), rss_kib(supervisor));
    assert_eq!(
        fds_after, fds_before,
        "the supervisor leaks file descriptors"
    );
    let vms = soak.cove.root().join("state/cove/vms");
    let left: Vec<_> = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![ANCHOR.to_owned()], "VM directories left");
    soak.cove.ok(&["delete", "--force", ANCHOR]);
    assert!(
        soak.cove.processes().is_empty(),
        "processes left: {:?}",
        soak.cove.processes()
    );
    let f = &soak.figures;
    eprintln!(
        "soak figures: cycles={} seed={seed} wall={:.0}s cli_kills={} supervisor_kills={} \
         qemu_kills={} concurrent_rounds={} acked_writes_checked={} lost=0 \
         supervisor_fds={fds_before}->{fds_after} supervisor_rss_kib={rss_before}->{rss_after}",
        f.cycles,
        started.elapsed().as_secs_f64(),
        f.cli_kills,
        f.supervisor_kills,
        f.qemu_kills,
        f.concurrent_rounds,
        f.acked_writes_checked,
    );
}

/// The state directory on a full filesystem: commands fail naming the cause, records and
/// disks already there survive, and everything works again once space is freed. Needs root
/// (it mounts a small tmpfs under the test's own directory).
#[test]
#[ignore = "boots VMs; mounts a tmpfs (root)"]
fn a_full_state_disk_fails_commands_clearly_and_loses_nothing() {
    if !cove_util::process::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let cove = Cove::new();
    let state = cove.root().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m,mode=0700", "cove-soak"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mount.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(&state);
    cove.minimal_image();

    cove.ok(&["create", "full", "--image", "minimal"]);
    cove.ok(&["start", "full"]);
    cove.ok(&[
        "exec",
        "full",
        "--",
        "sh",
        "-c",
        "echo kept > /root/kept && sync",
    ]);
    cove.ok(&["stop", "full"]);

    // Fill the filesystem to the last block.
    let filler = state.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 1 << 16];
    use std::io::Write;
    while file.write_all(&block).is_ok() {}
    while file.write_all(&block[..512]).is_ok() {}
    drop(file);

    // Every command either works or fails naming the full disk and what to do; none of them
    // loses what was recorded before.
    let err = cove.fails(&["create", "other", "--image", "minimal"]);
    assert!(
        err.contains("no space left"),
        "create names the cause: {err}"
    );
    for args in [&["start", "full"][..], &["list"], &["show", "full"]] {
        let out = cove.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("no space left") && err.contains("free some"),
            "`cove {}` on a full disk: {err}",
            args.join(" ")
        );
    }

    std::fs::remove_file(&filler).unwrap();
    let list = cove.json(&["list"]).to_string();
    assert!(list.contains("\"full\""), "{list}");
    assert!(!list.contains("\"other\""), "{list}");
    if cove.state("full") != "running" {
        cove.ok(&["start", "full"]);
    }
    assert_eq!(
        cove.ok(&["exec", "full", "--", "cat", "/root/kept"]),
        "kept\n"
    );
    cove.ok(&["create", "other", "--image", "minimal"]);
    cove.ok(&["delete", "--force", "full", "other"]);
}
