//! `why` on real console logs: the Debian cloud kernel booted under QEMU (TCG) into
//! deliberately broken initramfs archives made with the real `cpio` and busybox-static.

// cove-diagnose's own test helpers (the Debian cloud kernel, shared with its kernel tests).
#[path = "../../cove-diagnose/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cove_diagnose::why::{self, Cause, VmFacts};

/// Pack `files` (path in archive → (contents, mode)) with the real `cpio -o -H newc`.
fn initramfs(files: &[(&str, Vec<u8>, u32)]) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let mut names = Vec::new();
    for (path, data, mode) in files {
        let p = stage.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        let mut parent = Path::new(path).parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            names.push(d.display().to_string());
            parent = d.parent();
        }
        names.push(path.to_string());
    }
    names.sort();
    names.dedup();
    let out = dir.path().join("initrd.cpio");
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .expect("cpio");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all((names.join("\n") + "\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    (dir, out)
}

/// Boot under TCG until the kernel panics (`panic=-1` + `-no-reboot` make QEMU exit), and
/// return the serial console log.
fn boot(initrd: Option<&Path>, memory_mib: u32) -> String {
    let (vmlinuz, _) = common::debian_cloud_kernel();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "qemu-system-x86_64", "-M", "q35", "-accel", "tcg"])
        .args(["-m", &memory_mib.to_string()])
        .arg("-kernel")
        .arg(&vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1 tsc=reliable"])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(i) = initrd {
        cmd.arg("-initrd").arg(i);
    }
    let status = cmd.status().expect("qemu-system-x86_64");
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        status.code() != Some(124),
        "QEMU did not exit within 120 s; console:\n{text}"
    );
    text
}

fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("busybox-static installed")
}

#[test]
#[ignore = "boots a VM"]
fn no_root_and_no_initramfs_is_named() {
    let log = boot(None, 256);
    let d = why::analyze(&log, &VmFacts::default());
    let f = d
        .primary()
        .unwrap_or_else(|| panic!("no finding; console:\n{log}"));
    assert!(matches!(f.cause, Cause::RootNotMounted { .. }), "{d}");
    assert!(f.summary.contains("no root="), "{d}");
    assert!(
        f.evidence.iter().any(|e| e
            .text
            .contains("Kernel panic - not syncing: VFS: Unable to mount root fs")),
        "{d}"
    );
}

#[test]
#[ignore = "boots a VM"]
fn init_fatal_then_exit_is_named_with_its_status() {
    let script = b"#!/bin/busybox sh\necho 'cove-init: loading modules'\necho 'cove-init: FATAL: cannot find the root disk /dev/vda'\nexit 3\n".to_vec();
    let (_dir, initrd) = initramfs(&[("bin/busybox", busybox(), 0o755), ("init", script, 0o755)]);
    let log = boot(Some(&initrd), 256);
    let d = why::analyze(&log, &VmFacts::default());
    let causes: Vec<&Cause> = d.findings.iter().map(|f| &f.cause).collect();
    assert!(
        causes.iter().any(|c| matches!(
            c,
            Cause::InitExited {
                exit_status: Some(3),
                signal: None
            }
        )),
        "{d}\nconsole:\n{log}"
    );
    // The FATAL names the root disk, so it is reported as the root not being mounted.
    assert!(
        matches!(
            causes[0],
            Cause::RootNotMounted { .. } | Cause::InitFatal { .. }
        ),
        "{d}"
    );
    assert!(d.findings[0].evidence.iter().any(|e| {
        e.text
            .contains("cove-init: FATAL: cannot find the root disk")
    }));
}

#[test]
#[ignore = "boots a VM"]
fn dynamically_linked_init_without_its_loader() {
    // /usr/bin/true is dynamically linked; the initramfs has no ld.so, so exec fails ENOENT.
    let (_dir, initrd) = initramfs(&[("init", std::fs::read("/usr/bin/true").unwrap(), 0o755)]);
    let log = boot(Some(&initrd), 256);
    let d = why::analyze(&log, &VmFacts::default());
    let f = d
        .primary()
        .unwrap_or_else(|| panic!("no finding; console:\n{log}"));
    // Without a working /init the kernel falls back to the root= device, then panics.
    let named = d
        .findings
        .iter()
        .any(|f| matches!(f.cause, Cause::NoWorkingInit | Cause::RootNotMounted { .. }));
    assert!(named, "{d}");
    assert!(
        d.findings
            .iter()
            .flat_map(|f| &f.evidence)
            .any(|e| e.text.contains("error -2")),
        "{d}\n{}",
        f.summary
    );
}

#[test]
#[ignore = "boots a VM"]
fn out_of_memory_names_the_victim() {
    // Fill a ramfs (no size limit, never swapped) with more than the guest's memory.
    let script = b"#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n/bin/busybox mkdir /r\n/bin/busybox mount -t ramfs r /r\necho 'cove-init: ready'\n/bin/busybox dd if=/dev/zero of=/r/fill bs=1M count=1000\n".to_vec();
    let (_dir, initrd) = initramfs(&[
        ("bin/busybox", busybox(), 0o755),
        ("init", script, 0o755),
        ("dev/.keep", Vec::new(), 0o644),
    ]);
    let log = boot(Some(&initrd), 160);
    let d = why::analyze(&log, &VmFacts::default());
    let oom = d
        .findings
        .iter()
        .find(|f| matches!(f.cause, Cause::OutOfMemory { .. }))
        .unwrap_or_else(|| panic!("{d}\nconsole:\n{log}"));
    assert!(
        matches!(
            d.primary().map(|f| &f.cause),
            Some(Cause::OutOfMemory { .. })
        ),
        "the OOM is the cause, init's death its consequence:\n{d}"
    );
    assert!(
        oom.evidence
            .iter()
            .any(|e| e.text.contains("invoked oom-killer")),
        "{d}"
    );
}
