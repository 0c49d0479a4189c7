//! Boots the Debian cloud kernel with a busybox initramfs through the real
//! argv, QMP client and process hygiene, under whatever accelerator the
//! probe picks (TCG on the build machines).
//!
//! `cargo test -p cove-e2e --test qemu_boot -- --include-ignored --test-threads=1`
//! (one at a time, or the timings printed are of two guests sharing 2 cores).

#[path = "helpers/qemu_guest.rs"]
mod guest;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cove_backend::host::{accel, tsc};
use cove_backend::{DataDisk, Machine, PortForward, VmSpec};
use cove_backend::{process, sockets};
use cove_qemu::{Qemu, QmpClient, RunState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use guest::{AGENT_HELLO, INIT_STARTED, READY};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

struct Boot {
    to_init: Duration,
    to_ready: Duration,
    /// QEMU's user+system CPU time when the guest was ready: less sensitive
    /// than wall time to other work on a shared 2-core machine.
    cpu_at_ready: Duration,
    console: String,
}

/// utime + stime of `pid` from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((fields[0] + fields[1]) * 1000 / hz)
}

fn qemu_img(path: &Path) {
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
}

async fn boot(machine: Machine, pvh: bool) -> Boot {
    boot_with(machine, pvh, 1).await
}

async fn boot_with(machine: Machine, pvh: bool, cpus: u32) -> Boot {
    let assets = guest::assets();
    // Sockets need a short path (108-byte limit), so not under target/.
    let dir = tempfile::Builder::new()
        .prefix("cq")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    qemu_img(&d.join("root.qcow2"));
    qemu_img(&d.join("data.qcow2"));
    let paths = cove_state::Paths::under(&d.join("cove"));
    let spec = VmSpec {
        name: "boot-test".into(),
        cpus,
        memory_mib: 256,
        kernel: assets.bzimage.clone(),
        vmlinux: pvh.then(|| assets.vmlinux.clone()),
        initrd: Some(assets.initrd.clone()),
        cmdline_extra: "quiet".into(),
        root_disk: d.join("root.qcow2"),
        data_disks: vec![DataDisk {
            path: d.join("data.qcow2"),
            serial: "cove-data1".into(),
        }],
        ports: vec![PortForward {
            host_addr: "127.0.0.1".into(),
            host_port: 0,
            guest_port: 22,
        }],
        machine,
        accel: accel::probe(&paths.cache).accel,
        transports: cove_backend::Transports {
            vmm: d.join("qmp.sock"),
            console: d.join("console.sock"),
            agent: d.join("agent.sock"),
        },
        memory: Default::default(),
        incoming: false,
        shares: vec![],
        taps: vec![],
        user_net: Default::default(),
        run_as: None,
    };
    let qemu = Qemu::find(tsc::host_tsc_khz_cached(&paths.cache)).unwrap();
    let mut cmd = qemu.command(&spec).unwrap();
    process::supervise(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("qemu.stderr")).unwrap());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let alive = || {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as i32, 0) == 0 }
    };
    let stderr = || std::fs::read_to_string(d.join("qemu.stderr")).unwrap_or_default();

    let qmp_stream = sockets::connect_when_ready(&spec.transports.vmm, SOCKET_TIMEOUT, alive)
        .await
        .unwrap_or_else(|e| panic!("QMP socket: {e}\n{}", stderr()));
    let qmp = QmpClient::from_stream(qmp_stream, &spec.transports.vmm)
        .await
        .unwrap();
    let console = sockets::connect_when_ready(&spec.transports.console, SOCKET_TIMEOUT, alive)
        .await
        .unwrap();
    let mut agent = sockets::connect_when_ready(&spec.transports.agent, SOCKET_TIMEOUT, alive)
        .await
        .unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);

    let start = Instant::now();
    qmp.cont().await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);

    let mut lines = BufReader::new(console).lines();
    let mut log = String::new();
    let mut to_init = None;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim_end_matches('\r').to_owned();
            if line.contains(INIT_STARTED) && to_init.is_none() {
                to_init = Some(start.elapsed());
            }
            log.push_str(&line);
            log.push('\n');
            if line.contains(READY) {
                return true;
            }
        }
        false
    };
    let ready = tokio::time::timeout(BOOT_TIMEOUT, read).await;
    let to_ready = start.elapsed();
    let cpu_at_ready = cpu_time(pid);
    assert!(
        matches!(ready, Ok(true)),
        "no {READY} within {BOOT_TIMEOUT:?} ({machine}, pvh={pvh}); console:\n{log}\nstderr:\n{}",
        stderr()
    );

    // The guest found its port by name and wrote to it.
    let mut hello = vec![0; AGENT_HELLO.len()];
    tokio::time::timeout(SOCKET_TIMEOUT, agent.read_exact(&mut hello))
        .await
        .expect("agent port answers")
        .unwrap();
    assert_eq!(hello, AGENT_HELLO.as_bytes());

    qmp.quit().await.unwrap();
    let status = tokio::time::timeout(SOCKET_TIMEOUT, child.wait())
        .await
        .expect("QEMU exits after quit")
        .unwrap();
    assert!(status.success(), "QEMU exited with {status}\n{}", stderr());
    Boot {
        to_init: to_init.expect("init started before it was ready"),
        to_ready,
        cpu_at_ready,
        console: log,
    }
}

fn check_contract(boot: &Boot) {
    let c = &boot.console;
    assert!(c.contains(" cove-root\n"), "root disk serial:\n{c}");
    assert!(c.contains(" cove-data1\n"), "data disk serial:\n{c}");
    assert!(c.contains("COVE-PORT org.cove.agent"), "agent port:\n{c}");
    // Root first, then data disks: the first virtio-blk is vda.
}

async fn boot_and_report(machine: Machine, pvh: bool) {
    let b = boot(machine, pvh).await;
    eprintln!(
        "BOOT {machine} {}: /init after {:.2?}, ready after {:.2?}, QEMU CPU {:.2?}",
        if pvh { "vmlinux(PVH)" } else { "bzImage" },
        b.to_init,
        b.to_ready,
        b.cpu_at_ready
    );
    check_contract(&b);
}

#[tokio::test]
#[ignore = "boots a VM; downloads packages"]
async fn boots_microvm_bzimage() {
    boot_and_report(Machine::Microvm, false).await;
}

#[tokio::test]
#[ignore = "boots a VM; downloads packages"]
async fn boots_microvm_vmlinux_pvh() {
    boot_and_report(Machine::Microvm, true).await;
}

/// Two vCPUs under multi-threaded TCG: both come up.
#[tokio::test]
#[ignore = "boots a VM; downloads packages"]
async fn boots_microvm_smp2() {
    let b = boot_with(Machine::Microvm, true, 2).await;
    check_contract(&b);
    assert!(b.console.contains("COVE-CPUS 2"), "{}", b.console);
    eprintln!(
        "BOOT microvm smp2 vmlinux(PVH): ready after {:.2?}",
        b.to_ready
    );
}

#[tokio::test]
#[ignore = "boots a VM; downloads packages"]
async fn boots_q35_bzimage() {
    boot_and_report(Machine::Q35, false).await;
}

#[tokio::test]
#[ignore = "boots a VM; downloads packages"]
async fn boots_q35_vmlinux_pvh() {
    boot_and_report(Machine::Q35, true).await;
}

/// Regression: microvm has no HPET or PM timer, so without `tsc_early_khz`
/// the kernel's TSC calibration against the PIT fails under TCG ("tsc:
/// Marking TSC unstable due to could not calculate TSC khz") and about one
/// boot in five hangs. With the host's TSC kHz on the command line, every
/// boot must come up and the kernel must use that frequency.
#[tokio::test]
#[ignore = "boots a VM; downloads packages"]
async fn microvm_boots_do_not_hang_on_tsc_calibration() {
    let rounds: usize = std::env::var("COVE_BOOT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for round in 0..rounds {
        let b = boot(Machine::Microvm, round % 2 == 1).await;
        let c = &b.console;
        assert!(
            !c.contains("could not calculate TSC khz"),
            "round {round}:\n{c}"
        );
        assert!(!c.contains("Marking TSC unstable"), "round {round}:\n{c}");
        let khz: u64 = c
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tsc_early_khz="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no tsc_early_khz on the command line:\n{c}"));
        assert!(
            c.contains(&format!(
                "tsc: Detected {}.{:03} MHz",
                khz / 1000,
                khz % 1000
            )),
            "round {round}: the kernel did not take tsc_early_khz={khz}:\n{c}"
        );
        eprintln!("round {round}: ready after {:.2?}", b.to_ready);
    }
}
