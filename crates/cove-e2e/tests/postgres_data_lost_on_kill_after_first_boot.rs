//! Issue 10's data loss: a data disk filled by cove-init at first boot
//! lived only in the guest's page cache for ~30 s, so a VMM kill soon after
//! `cove up` left PostgreSQL's cluster files empty ("not a valid data
//! directory") and every row with them. A database cove created must
//! survive a kill at any moment after `up` returns, and every commit a
//! client saw acknowledged must be there after a restart.
//!
//! Each variant kills differently, right after the inserts, on a data disk
//! that was filled during this very boot: `cove kill`, kill -9 of QEMU,
//! kill -9 of the supervisor and QEMU together.

use cove_e2e::{Cove, psql};
use std::path::Path;

#[derive(Clone, Copy)]
enum Kill {
    /// `cove kill`: the supervisor SIGKILLs QEMU.
    ByCove,
    /// kill -9 of QEMU from outside, as an OOM kill would.
    Qemu,
    /// kill -9 of the supervisor and QEMU at once, as a host crash would.
    SupervisorAndQemu,
}

fn sigkill(pid: u64) {
    // SAFETY: kill has no memory effects; the pid is this test's VM process.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}");
}

fn rows_survive(kill: Kill, port: u16, vm: &str) {
    let cove = Cove::new();
    let examples = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    // A copy of the example with its own VM name, port and (shared
    // directory) data disk name, so it collides with nothing.
    let disk = format!("lost{}{port}", std::process::id() % 100_000);
    let spec = std::fs::read_to_string(examples.join("postgres.toml"))
        .unwrap()
        .replace("\"15432:5432\"", &format!("\"{port}:5432\""))
        .replace("name = \"pg\"", &format!("name = \"{vm}\""))
        .replace("name = \"pgdata\"", &format!("name = \"{disk}\""));
    let spec_path = cove.root().join("postgres.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let spec_path = spec_path.to_str().unwrap();

    let up = cove.ok(&["up", spec_path]);
    assert!(up.contains("ALL 5 CHECKS PASSED"), "{up}");
    let create = psql(port, "create table acked(n int primary key)");
    assert!(create.status.success(), "{create:?}");
    // Each statement is its own transaction: every success is an
    // acknowledged commit that must survive.
    let mut acked = 0;
    for n in 1..=20 {
        let insert = psql(port, &format!("insert into acked values ({n})"));
        assert!(insert.status.success(), "{insert:?}");
        acked = n;
    }

    match kill {
        Kill::ByCove => {
            cove.ok(&["kill", vm]);
        }
        Kill::Qemu | Kill::SupervisorAndQemu => {
            let show = cove.json(&["show", vm]);
            let qemu = show["pid"].as_u64().expect("a running VM has a QEMU pid");
            if let Kill::SupervisorAndQemu = kill {
                sigkill(show["supervisor_pid"].as_u64().expect("a supervisor pid"));
            }
            sigkill(qemu);
            cove.wait_for(
                "the killed VM to be seen as not running",
                std::time::Duration::from_secs(30),
                || cove.state(vm) != "running",
            );
            // The kernel closes a killed QEMU's forwarded connections on its own time (orphaned
            // FIN_WAIT sockets hold the port for a while); `start` rightly refuses a port that
            // is not free, so wait for the teardown, as a user would.
            cove.wait_for(
                "the killed VMM's forwarded port to be free",
                std::time::Duration::from_secs(120),
                || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            );
        }
    }

    cove.ok(&["start", vm]);
    let report = cove.run(&["test", vm]);
    let console = cove.console_log(vm);
    assert!(
        report.status.success(),
        "PostgreSQL did not come back after the kill:\n{}\nconsole:\n{console}",
        String::from_utf8_lossy(&report.stdout)
    );
    let count = psql(port, "select count(*), max(n) from acked");
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        format!("{acked}|{acked}"),
        "{count:?}"
    );
    cove.ok(&["down", "--purge", spec_path]);
}

#[test]
#[ignore = "boots VMs; builds a Debian image"]
fn postgres_rows_survive_cove_kill_right_after_first_up() {
    rows_survive(Kill::ByCove, 25441, "pglost1");
}

#[test]
#[ignore = "boots VMs; builds a Debian image"]
fn postgres_rows_survive_kill_9_of_qemu_right_after_first_up() {
    rows_survive(Kill::Qemu, 25442, "pglost2");
}

#[test]
#[ignore = "boots VMs; builds a Debian image"]
fn postgres_rows_survive_kill_9_of_supervisor_and_qemu_right_after_first_up() {
    rows_survive(Kill::SupervisorAndQemu, 25443, "pglost3");
}
