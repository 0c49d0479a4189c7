//! Regression tests for the races that lost or orphaned things (issue 10,
//! finding 8): each one holds or kills the real thing it is about. Also the CLI side of talking
//! to a supervisor that refuses (issue 11): a failed stop named as such, another API version.

use crate::error::LifecycleError;
use crate::lifecycle::{delete, kill, remove_unused_disk};
use crate::{data_disk, liveness};
use cove_state::store::now;
use cove_state::{Paths, Store, VmName, VmRecord, VmState};

fn paths() -> (tempfile::TempDir, Paths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    (dir, paths)
}

/// A stopped VM's record and directory, as `create` leaves them.
fn put_record(paths: &Paths, name: &str, disks: &[&str]) -> VmRecord {
    let record = VmRecord {
        name: VmName::new(name).unwrap(),
        image_id: "0123456789".into(),
        image_name: "minimal".into(),
        cpus: 1,
        memory_mib: 256,
        state: VmState::Stopped,
        supervisor_pid: None,
        vmm_pid: None,
        backend: Default::default(),
        accel: None,
        machine: Default::default(),
        arch: Default::default(),
        ports: vec![],
        data_disks: disks.iter().map(|d| d.to_string()).collect(),
        disk_mounts: Default::default(),
        host_mounts: vec![],
        networks: vec![],
        host_loopback: false,
        last_exit: None,
        agent_answered: false,
        last_error: None,
        created_at: now(),
        started_at: None,
        cloned_from: None,
        restored_from: None,
    };
    let dir = paths.vm(name).dir;
    Store::open(paths)
        .unwrap()
        .create_vm(&record, || std::fs::create_dir_all(&dir))
        .unwrap();
    record
}

/// A `start` holds the supervisor lock from before its supervisor exists: a
/// delete then must not remove the VM under it (it left an orphan VMM).
#[test]
fn delete_refuses_while_a_start_holds_the_lock() {
    let (_dir, paths) = paths();
    put_record(&paths, "web", &[]);
    let vm = paths.vm("web");
    let held = liveness::try_lock(&vm.supervisor_lock()).unwrap().unwrap();
    let err = delete(&paths, "web", false, false).unwrap_err();
    assert!(matches!(err, LifecycleError::Running(..)), "{err}");
    let store = Store::open(&paths).unwrap();
    assert!(store.find_vm("web").unwrap().is_some());
    assert!(vm.dir.exists());
    drop(held);
    delete(&paths, "web", false, false).unwrap();
    assert!(store.find_vm("web").unwrap().is_none());
    assert!(!vm.dir.exists());
}

#[test]
fn purge_refuses_a_data_disk_another_vm_uses_and_deletes_nothing() {
    let (_dir, paths) = paths();
    put_record(&paths, "a", &["pg"]);
    put_record(&paths, "b", &["pg"]);
    let disk = data_disk::path(&paths, "pg");
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    std::fs::write(&disk, b"data").unwrap();
    let err = delete(&paths, "a", false, true).unwrap_err();
    assert!(
        matches!(&err, LifecycleError::DiskInUse { users, .. } if users == &["b"]),
        "{err}"
    );
    assert!(err.to_string().contains("`b`"), "{err}");
    assert!(disk.exists());
    assert!(Store::open(&paths).unwrap().find_vm("a").unwrap().is_some());
    // `down --purge` of a VM that is gone takes the same care.
    assert!(matches!(
        remove_unused_disk(&paths, "pg").unwrap_err(),
        LifecycleError::DiskInUse { .. }
    ));
    // Once no other VM uses it, purge removes it.
    delete(&paths, "b", false, false).unwrap();
    delete(&paths, "a", false, true).unwrap();
    assert!(!disk.exists());
}

/// Two `create`s of one data disk: the second never replaces the first's
/// (a VM may already be writing to it).
#[test]
fn a_data_disk_made_concurrently_is_never_replaced() {
    let (_dir, paths) = paths();
    let disk = data_disk::path(&paths, "pg");
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let paths = paths.clone();
            std::thread::spawn(move || data_disk::ensure(&paths, "pg", 16 << 20).unwrap())
        })
        .collect();
    let created: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&disk).unwrap());
    assert!(!data_disk::ensure(&paths, "pg", 16 << 20).unwrap());
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&disk).unwrap()),
        inode
    );
    // No half-made files are left beside it.
    let left: Vec<_> = std::fs::read_dir(paths.data_disks())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// A supervisor that holds its lock but does not answer, and a recorded VMM
/// pid now used by another process: `kill` must not signal that process.
#[test]
fn kill_never_signals_a_process_that_reused_the_vmm_pid() {
    let (_dir, paths) = paths();
    put_record(&paths, "web", &[]);
    let mut stranger = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    Store::open(&paths)
        .unwrap()
        .update_vm("web", |r| {
            r.state = VmState::Running;
            r.vmm_pid = Some(stranger.id());
        })
        .unwrap();
    let lock = paths.vm("web").supervisor_lock();
    let held = liveness::try_lock(&lock).unwrap().unwrap();
    assert!(kill(&paths, "web").is_err());
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "kill signalled a process that is not the VM's VMM"
    );
    drop(held);
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

/// A supervisor double on `vm`'s control socket: answers a status of `api_version`, then
/// refuses the next request with `refusal`. Returns the requests it saw.
fn refusing_supervisor(
    paths: &Paths,
    name: &str,
    api_version: u32,
    refusal: &str,
) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{BufRead, Write};
    let vm = paths.vm(name);
    std::fs::create_dir_all(&vm.run).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(vm.control_socket()).unwrap();
    let refusal = refusal.to_owned();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            let mut line = String::new();
            std::io::BufReader::new(&conn).read_line(&mut line).unwrap();
            let request: serde_json::Value = serde_json::from_str(&line).unwrap();
            let kind = request["request"].as_str().unwrap().to_owned();
            let answer = if kind == "status" {
                serde_json::json!({"response": "status", "api_version": api_version,
                    "phase": "ready", "vmm_pid": null, "accel": "", "machine": "microvm",
                    "agent_version": null, "boot_ms": 1, "console_viewers": 0})
            } else {
                serde_json::json!({"response": "failed", "message": refusal,
                    "hint": null, "console_tail": []})
            };
            writeln!(conn, "{answer}").unwrap();
            seen.push(kind);
            if api_version != cove_api::API_VERSION {
                break;
            }
        }
        seen
    })
}

/// A running VM as far as reconcile can tell: recorded running, its supervisor lock held.
fn running(paths: &Paths, name: &str) -> std::fs::File {
    put_record(paths, name, &[]);
    Store::open(paths)
        .unwrap()
        .update_vm(name, |r| r.state = VmState::Running)
        .unwrap();
    liveness::try_lock(&paths.vm(name).supervisor_lock())
        .unwrap()
        .unwrap()
}

/// Regression (issue 11): a stop the supervisor refused was printed as "the VM did not start".
#[test]
fn a_refused_stop_is_a_stop_failure_not_a_boot_failure() {
    let (_dir, paths) = paths();
    let _lock = running(&paths, "web");
    let double = refusing_supervisor(&paths, "web", cove_api::API_VERSION, "disk busy");
    let err = crate::lifecycle::stop(&paths, "web", std::time::Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(
            &err,
            LifecycleError::Control {
                op: crate::ControlOp::Stop,
                ..
            }
        ),
        "{err:?}"
    );
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("stopping `web` failed") && text.contains("disk busy"),
        "{text}"
    );
    assert!(!text.contains("did not start"), "{text}");
    assert_eq!(double.join().unwrap(), ["status", "stop"]);
}

/// A CLI meeting a supervisor of another API version says so, names both, and sends it nothing
/// it might misread.
#[test]
fn a_supervisor_of_another_api_version_is_refused_by_name() {
    let (_dir, paths) = paths();
    let _lock = running(&paths, "web");
    let theirs = cove_api::API_VERSION + 1;
    let double = refusing_supervisor(&paths, "web", theirs, "unused");
    let err = crate::lifecycle::stop(&paths, "web", std::time::Duration::from_secs(1)).unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        cause.contains(&format!("version {theirs}"))
            && cause.contains(&format!("speaks version {}", cove_api::API_VERSION))
            && cause.contains("cove kill web"),
        "{cause}"
    );
    assert_eq!(double.join().unwrap(), ["status"]);
}
