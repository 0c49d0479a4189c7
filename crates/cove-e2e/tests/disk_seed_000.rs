//! Seed 000, end to end: a guest's init logs why PostgreSQL failed to
//! /var/log/init.log, the VM dies without a clean shutdown, and the log is
//! read with `cove disk cat` (the team in the seed pulled the rootfs off the
//! device and ran e2fsck and fuse2fs by hand). Boots a real guest under
//! QEMU with the real `cove` binary, so it is ignored in plain `cargo test`.

// cove-disk's own test helpers (real images made with the real tools).
#[path = "../../cove-disk/tests/common/mod.rs"]
mod common;

use common::run;
use cove_e2e::Cove;

const LOG_LINES: &str = r#"(
  echo "init: starting postgres"
  echo "FATAL: could not create shared memory segment: Function not implemented"
  echo "DETAIL: Failed system call was shmget(key=2, size=56, 03600)"
) >> /var/log/init.log 2>&1
sync
echo "cove-init: ready" > /dev/console"#;

/// Puts a patched /sbin/cove-init into the VM's overlay the way a guest
/// image change would: flatten, debugfs, and a new overlay with only the
/// changed clusters over the same read-only base.
fn patch_init(cove: &Cove, vm: &str, work: &std::path::Path) {
    let root = cove.vm_dir(vm).join("root.qcow2");
    let info = run(
        work,
        "qemu-img",
        &["info", "--output=json", root.to_str().unwrap()],
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let base = info["full-backing-filename"]
        .as_str()
        .expect("overlay has a base")
        .to_string();
    cove.ok(&[
        "disk",
        "get",
        &format!("{vm}:/sbin/cove-init"),
        work.to_str().unwrap(),
    ]);
    let script = std::fs::read_to_string(work.join("cove-init")).unwrap();
    assert!(
        script.contains("echo \"cove-init: ready\" > /dev/console"),
        "{script}"
    );
    let script = script.replace("echo \"cove-init: ready\" > /dev/console", LOG_LINES);
    std::fs::write(work.join("cove-init"), script).unwrap();
    run(
        work,
        "qemu-img",
        &["convert", "-O", "raw", root.to_str().unwrap(), "flat.raw"],
    );
    run(
        work,
        "debugfs",
        &["-w", "-R", "rm /sbin/cove-init", "flat.raw"],
    );
    run(
        work,
        "debugfs",
        &["-w", "-R", "write cove-init /sbin/cove-init", "flat.raw"],
    );
    run(
        work,
        "debugfs",
        &["-w", "-R", "sif /sbin/cove-init mode 0100755", "flat.raw"],
    );
    std::fs::remove_file(&root).unwrap();
    let root = root.to_str().unwrap();
    run(
        work,
        "qemu-img",
        &[
            "convert", "-O", "qcow2", "-B", &base, "-F", "raw", "flat.raw", root,
        ],
    );
}

#[test]
#[ignore = "boots a VM"]
fn seed_000_init_log_of_a_killed_vm_is_read_without_mounting() {
    let cove = Cove::new();
    let work = tempfile::tempdir().unwrap();
    cove.minimal_image();
    cove.ok(&["create", "pg", "--image", "minimal"]);
    patch_init(&cove, "pg", work.path());
    cove.ok(&["start", "pg"]);

    // A running VM's disk is refused, with the commands that do work.
    let err = cove.fails(&["disk", "cat", "pg:/var/log/init.log"]);
    assert!(
        err.contains("is running") && err.contains("cove exec") && err.contains("cove cp"),
        "{err}"
    );

    // Power cut: the ext4 journal is left as the guest kernel wrote it.
    cove.ok(&["kill", "pg"]);
    let flat = work.path().join("killed.raw");
    let root = cove.vm_dir("pg").join("root.qcow2");
    run(
        work.path(),
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            root.to_str().unwrap(),
            flat.to_str().unwrap(),
        ],
    );
    let sb = run(work.path(), "dumpe2fs", &["-h", flat.to_str().unwrap()]);
    assert!(
        sb.contains("needs_recovery"),
        "the guest's filesystem should be left unclean:\n{sb}"
    );

    let log = cove.ok(&["disk", "cat", "pg:/var/log/init.log"]);
    assert!(log.contains("shmget(key=2, size=56, 03600)"), "{log}");
    let ls = cove.ok(&["disk", "ls", "pg:/var/log"]);
    assert!(ls.contains("init.log"), "{ls}");
    let json = cove.json(&["disk", "ls", "pg:/var/log/init.log"]);
    assert_eq!(json[0]["size"].as_u64(), Some(log.len() as u64), "{json}");
    let out = work.path().join("got");
    cove.ok(&["disk", "get", "pg:/var/log", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("init.log")).unwrap(), log);
}
