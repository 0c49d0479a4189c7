//! Snapshots and clones of real guests: what a snapshot freezes, what each clone must get anew,
//! and snapshots that no longer fit being refused.

use cove_e2e::Cove;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// The guest's wall clock to the microsecond (busybox `date` has no `%N`; `adjtimex` reads the
/// kernel's time as `time.tv_sec` and `time.tv_usec`).
fn guest_clock_nanos(cove: &Cove, vm: &str) -> i128 {
    let out = cove.ok(&["exec", vm, "--", "adjtimex"]);
    let field = |name: &str| -> i128 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in adjtimex's output: {out}"))
    };
    field("time.tv_sec:") * 1_000_000_000 + field("time.tv_usec:") * 1_000
}

#[test]
#[ignore = "boots VMs"]
fn clones_of_one_snapshot_resume_its_state_with_their_own_entropy_clock_and_name() {
    let cove = Cove::new();
    cove.minimal_image();
    // Data disks live in the shared data directory: a name of its own.
    let vol = format!("snap{}", std::process::id() % 1_000_000);
    let disk = format!("{vol}:16M:/data");
    cove.ok(&["create", "src", "--image", "minimal", "--disk", &disk]);
    cove.ok(&["start", "src"]);
    // State that must survive: a file on the root disk and on the data disk, and a running
    // process.
    cove.ok(&[
        "exec",
        "src",
        "--",
        "sh",
        "-c",
        "echo before > /root/mark; echo before > /data/mark; sync",
    ]);
    cove.ok(&[
        "exec",
        "src",
        "--",
        "sh",
        "-c",
        "setsid sleep 100000 </dev/null >/dev/null 2>&1 &",
    ]);
    let out = cove.ok(&["snapshot", "src", "base"]);
    assert!(out.contains("snapshot `base`"), "{out}");
    // The source runs on, and what it does after the snapshot is not in the snapshot.
    cove.ok(&[
        "exec",
        "src",
        "--",
        "sh",
        "-c",
        "echo after > /root/mark; echo after > /data/mark; sync",
    ]);
    let listed = cove.ok(&["snapshot", "ls", "src"]);
    assert!(listed.contains("src@base"), "{listed}");

    let out = cove.ok(&["clone", "src@base", "c1", "c2"]);
    assert_eq!(
        out.matches("restored from snapshot src@base").count(),
        2,
        "{out}"
    );
    let mut randoms = Vec::new();
    for clone in ["c1", "c2"] {
        assert_eq!(
            cove.ok(&["exec", clone, "--", "cat", "/root/mark"]).trim(),
            "before"
        );
        // Each clone has its own copy of the data disk as the snapshot had it, its writes its
        // own: not the source's, nor the other clone's.
        assert_eq!(
            cove.ok(&["exec", clone, "--", "cat", "/data/mark"]).trim(),
            "before",
            "{clone}'s data disk is not the snapshot's"
        );
        let write = format!("echo {clone} > /data/mark; sync");
        cove.ok(&["exec", clone, "--", "sh", "-c", &write]);
        let ps = cove.ok(&["exec", clone, "--", "ps"]);
        assert!(
            ps.contains("sleep 100000"),
            "{clone} lost the process: {ps}"
        );
        assert_eq!(cove.ok(&["exec", clone, "--", "hostname"]).trim(), clone);
        let before = now_nanos();
        let guest = guest_clock_nanos(&cove, clone);
        let after = now_nanos();
        assert!(
            guest >= before - 1_000_000_000 && guest <= after + 1_000_000_000,
            "{clone}'s clock is {guest}, host window {before}..{after}: more than 1 s off"
        );
        randoms.push(cove.ok(&[
            "exec",
            clone,
            "--",
            "sh",
            "-c",
            "head -c 32 /dev/urandom | od -An -tx1",
        ]));
    }
    assert_ne!(
        randoms[0], randoms[1],
        "two clones read the same random bytes"
    );
    let ids: Vec<String> = ["c1", "c2"]
        .iter()
        .map(|c| cove.ok(&["exec", c, "--", "cat", "/etc/machine-id"]))
        .collect();
    assert_ne!(ids[0], ids[1]);

    assert_eq!(
        cove.ok(&["exec", "src", "--", "cat", "/data/mark"]).trim(),
        "after"
    );
    assert_eq!(
        cove.ok(&["exec", "c1", "--", "cat", "/data/mark"]).trim(),
        "c1"
    );

    // The source cannot go while clones depend on its snapshot, and says which.
    let err = cove.fails(&["delete", "--force", "src"]);
    assert!(err.contains("c1") && err.contains("c2"), "{err}");
    let err = cove.fails(&["snapshot", "rm", "src", "base"]);
    assert!(err.contains("c1"), "{err}");

    // A changed VM is refused with the reason, and a cold boot offered.
    cove.ok(&["stop", "c1"]);
    cove.ok(&["set", "c1", "--memory", "384M"]);
    let err = cove.fails(&["start", "c1", "--from", "src@base"]);
    assert!(
        err.contains("memory changed") && err.contains("cove start c1"),
        "{err}"
    );
    // A truncated file too.
    let state = cove.vm_dir("src").join("snapshots/base/state");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    cove.ok(&["stop", "c2"]);
    let err = cove.fails(&["start", "c2", "--from", "src@base"]);
    assert!(err.contains("truncated"), "{err}");

    // On the disks themselves: the clones' writes never reached the source's data disk.
    cove.ok(&["stop", "src"]);
    let on_disk = |vm: &str| cove.ok(&["disk", "cat", "--disk", &vol, &format!("{vm}:/mark")]);
    assert_eq!(on_disk("src").trim(), "after");
    assert_eq!(on_disk("c1").trim(), "c1");
    assert_eq!(on_disk("c2").trim(), "c2");

    for vm in ["c1", "c2"] {
        cove.ok(&["delete", "--force", "--purge", vm]);
    }
    // A clone's purge took only its own copies: the source's disk is there.
    assert_eq!(on_disk("src").trim(), "after");
    cove.ok(&["snapshot", "rm", "src", "base"]);
    cove.ok(&["delete", "--force", "--purge", "src"]);
}

#[test]
#[ignore = "boots VMs"]
fn test_fresh_runs_the_checks_on_a_throwaway_clone_and_leaves_the_vm_untouched() {
    let cove = Cove::new();
    cove.minimal_image();
    // A guest service on a forwarded port, and a check that leaves a trace where it runs.
    cove.ok(&["create", "keep", "--image", "minimal", "-p", "25451:8080"]);
    cove.ok(&["start", "keep"]);
    cove.ok(&[
        "exec",
        "keep",
        "--",
        "sh",
        "-c",
        "setsid nc -ll -p 8080 -e echo hi </dev/null >/dev/null 2>&1 &",
    ]);
    // No snapshot yet: the error says how to take one.
    let err = cove.fails(&["test", "--fresh", "keep"]);
    assert!(err.contains("cove snapshot keep"), "{err}");
    cove.ok(&["snapshot", "keep", "ready"]);
    // The checks file `cove up` would write for `keep`. Clones read the owner's declaration as
    // it is when they are made.
    let checks = r#"[{"name": "leaves a trace", "command": "touch /root/touched-by-test"},
                     {"name": "service answers", "tcp": 8080, "wait": "20s"}]"#;
    std::fs::write(cove.vm_dir("keep").join("checks.json"), checks).unwrap();
    let out = cove.run(&["test", "--fresh", "keep"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("a fresh clone of keep@ready"), "{stderr}");
    assert!(stdout.contains("service answers"), "{stdout}");
    // The VM itself has no trace of the checks, and the clone is gone.
    let trace = cove.run(&["exec", "keep", "--", "test", "-e", "/root/touched-by-test"]);
    assert!(!trace.status.success(), "the checks ran in the kept VM");
    let list = cove.json(&["list"]).to_string();
    assert!(
        !list.contains("fresh"),
        "the throwaway clone is left: {list}"
    );
    // keep's supervisor, QEMU and passt (its user-mode network), and nothing of the clone's.
    let (all, passts) = (cove.processes(), cove.passts());
    assert!(
        all.len() - passts.len() <= 2 && passts.len() <= 1,
        "only keep's supervisor, QEMU and passt run: {all:?} (passt: {passts:?})"
    );
    cove.ok(&["snapshot", "rm", "keep", "ready"]);
    cove.ok(&["delete", "--force", "keep"]);
}

#[test]
#[ignore = "boots VMs"]
fn up_restores_its_kept_snapshot_only_into_fresh_vms_with_the_same_image_and_settings() {
    let cove = Cove::new();
    cove.minimal_image();
    // Data disks live in the shared data directory: a name of its own.
    let vol = format!("up{}", std::process::id() % 1_000_000);
    let spec_text = |memory: &str| {
        format!(
            "image = \"minimal\"\n[[vm]]\nname = \"upv\"\nmemory = \"{memory}\"\n\
             disks = [{{ name = \"{vol}\", size = \"16M\", mount = \"/data\" }}]\n\
             [[vm.check]]\nname = \"agent answers\"\ncommand = \"true\"\n"
        )
    };
    let spec = cove.root().join("up.toml");
    std::fs::write(&spec, spec_text("256M")).unwrap();
    let spec = spec.to_str().unwrap();

    // A fresh VM boots cold, and once its checks pass a snapshot of it is kept.
    let up = cove.ok(&["up", spec]);
    assert!(up.contains("created and started"), "{up}");
    assert!(up.contains("kept snapshot `up`"), "{up}");
    // Written after the snapshot: a later `up` must never resume over it.
    cove.ok(&[
        "exec",
        "upv",
        "--",
        "sh",
        "-c",
        "echo later > /data/mark; sync",
    ]);
    cove.ok(&["down", spec]);
    let up = cove.ok(&["up", spec]);
    assert!(
        up.contains("created and started") && !up.contains("restored"),
        "a VM whose data disk exists was restored over it: {up}"
    );
    assert_eq!(
        cove.ok(&["exec", "upv", "--", "cat", "/data/mark"]).trim(),
        "later"
    );

    // A fresh VM with fresh disks restores, as the snapshot had it.
    cove.ok(&["down", "--purge", spec]);
    let up = cove.ok(&["up", spec]);
    assert!(up.contains("restored from its `up` snapshot"), "{up}");
    assert!(up.contains("PASSED"), "{up}");
    let mark = cove.run(&["exec", "upv", "--", "test", "-e", "/data/mark"]);
    assert!(!mark.status.success(), "the purged disk's data came back");

    // A changed setting does not reuse it: a cold boot, then a snapshot kept for the new one.
    cove.ok(&["down", "--purge", spec]);
    std::fs::write(cove.root().join("up.toml"), spec_text("320M")).unwrap();
    let up = cove.ok(&["up", spec]);
    assert!(
        up.contains("created and started") && !up.contains("restored"),
        "{up}"
    );
    assert!(up.contains("kept snapshot `up`"), "{up}");
    cove.ok(&["down", "--purge", spec]);
}

/// A supervisor killed between pausing its VMM and resuming it (a snapshot's first and last
/// steps) leaves the vCPUs stopped. The next command adopts the VMM and must run the guest
/// again, not wait for an agent that cannot answer and then kill the VM. The pause is made
/// here over QMP once the supervisor is dead, so the moment is exact, not a race.
#[test]
#[ignore = "boots VMs"]
fn a_vmm_left_paused_by_a_killed_supervisor_runs_again_at_the_next_command() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "p", "--image", "minimal"]);
    cove.ok(&["start", "p"]);
    cove.ok(&["exec", "p", "--", "sh", "-c", "echo kept > /root/f && sync"]);
    let show = cove.json(&["show", "p"]);
    let (qemu, supervisor) = (show["pid"].as_u64(), show["supervisor_pid"].as_u64());
    let supervisor = supervisor.expect("supervisor pid") as i32;
    // SAFETY: kill has no memory effects; the pid is the test VM's supervisor.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGKILL) }, 0);
    while cove_util::process::alive(supervisor as u32) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let qmp_socket = cove.root().join("run/cove/p/vmm.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let qmp = cove_qemu::QmpClient::connect(&qmp_socket).await.unwrap();
        qmp.stop().await.unwrap();
        assert_eq!(
            qmp.query_status().await.unwrap(),
            cove_qemu::RunState::Paused
        );
    });
    // QEMU serves one QMP client at a time: this one's socket goes with its runtime's tasks.
    drop(rt);
    assert_eq!(cove.ok(&["exec", "p", "--", "cat", "/root/f"]), "kept\n");
    let show = cove.json(&["show", "p"]);
    assert_eq!(show["state"], "running", "{show}");
    assert_eq!(
        show["pid"].as_u64(),
        qemu,
        "the same VMM, adopted, not a new boot"
    );
    cove.ok(&["delete", "--force", "p"]);
}
