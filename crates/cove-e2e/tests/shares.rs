//! Host folders in the guest (`--mount`, virtiofs): changes on the host are seen at once,
//! read-only holds against the guest's own remount, and nothing outside the folder is reachable
//! through `..` or symlinks.

use cove_e2e::Cove;

#[test]
#[ignore = "boots a VM"]
fn shared_folders_are_live_read_only_by_default_and_cannot_be_escaped() {
    let cove = Cove::new();
    cove.minimal_image();
    let root = cove.root().join("host");
    let ro = root.join("share");
    let rw = root.join("out");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(root.join("secret.txt"), "host-secret\n").unwrap();
    std::fs::write(ro.join("a.txt"), "one\n").unwrap();
    std::os::unix::fs::symlink("../secret.txt", ro.join("up")).unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), ro.join("abs")).unwrap();

    // Guest paths that could reach the kernel command line are refused before anything exists.
    for bad in ["/mnt/a b", "/mnt/x\"init=/bin/sh", "relative", "/a/../etc"] {
        let err = cove.fails(&[
            "create",
            "bad",
            "--mount",
            &format!("{}:{bad}", ro.display()),
        ]);
        assert!(err.contains("guest path"), "{bad}: {err}");
    }

    cove.ok(&[
        "create",
        "sh",
        "--image",
        "minimal",
        "--mount",
        &format!("{}:/mnt/host", ro.display()),
        "--mount",
        &format!("{}:/mnt/out:rw", rw.display()),
    ]);
    cove.ok(&["start", "sh"]);
    let sh = |script: &str| cove.run(&["exec", "sh", "--", "sh", "-c", script]);
    assert_eq!(
        cove.ok(&["exec", "sh", "--", "cat", "/mnt/host/a.txt"]),
        "one\n"
    );

    // A host change is visible at once.
    std::fs::write(ro.join("a.txt"), "two\n").unwrap();
    assert_eq!(
        cove.ok(&["exec", "sh", "--", "cat", "/mnt/host/a.txt"]),
        "two\n"
    );

    // Read-only: refused, also after the guest remounts it read-write.
    let w = sh("echo x > /mnt/host/new");
    assert_ne!(w.status.code(), Some(0));
    let w = sh("mount -o remount,rw /mnt/host; echo x > /mnt/host/new");
    assert_ne!(w.status.code(), Some(0), "{w:?}");
    assert!(!ro.join("new").exists());

    // No way out: symlinks resolve in the guest, `..` leaves into the guest's own tree.
    for p in ["/mnt/host/up", "/mnt/host/abs", "/mnt/host/../secret.txt"] {
        let out = sh(&format!("cat {p}"));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("host-secret"),
            "{p} reached the host's file"
        );
    }

    // Read-write: the guest's file lands on the host.
    let out = sh("echo from-guest > /mnt/out/g.txt && sync");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(rw.join("g.txt")).unwrap(),
        "from-guest\n"
    );
    // A guest-made symlink to / is a symlink on the host, never followed by virtiofsd.
    sh("ln -s / /mnt/out/root && ls /mnt/out/root/ >/dev/null");
    assert!(
        std::fs::symlink_metadata(rw.join("root"))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(true)
    );
    cove.ok(&["stop", "sh"]);
}
