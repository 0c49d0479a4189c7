//! A guest whose root filesystem is the user's own system, given as a
//! tarball (the LevitateOS case of seed 003): not Debian, not cove's
//! minimal image, no strace and no ldd, only what its author put in. cove's
//! agent is all that is added, and trace, ldd and shared folders work there.

use cove_e2e::Cove;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// Copies a host file into the tree at the same path, following symlinks.
fn copy_in(tree: &Path, host: &str) {
    let dest = tree.join(host.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(host, &dest).unwrap_or_else(|e| panic!("copying {host}: {e}"));
}

/// A hand-made root: static busybox for the shell and init's tools, glibc's
/// loader and libc with `getent`, and an nsswitch.conf naming a module
/// (`levitate`) whose library was never installed.
fn own_root(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    for d in ["bin", "sbin", "etc", "root", "tmp", "usr/bin", "lib64"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let busybox = std::env::split_paths(&path)
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .expect("busybox-static is installed (scripts/install-deps)");
    std::fs::copy(&busybox, tree.join("bin/busybox")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = tree.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", link).unwrap();
        }
    }
    copy_in(&tree, "/usr/bin/getent");
    copy_in(&tree, "/lib/x86_64-linux-gnu/libc.so.6");
    copy_in(&tree, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    symlink(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        tree.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(tree.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(
        tree.join("etc/nsswitch.conf"),
        "passwd: levitate\ngroup: files\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=levitate-like\n").unwrap();
    let tarball = dir.join("root.tar");
    let st = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tarball
}

#[test]
#[ignore = "boots VMs"]
fn trace_ldd_and_shared_folders_work_in_a_guest_whose_root_is_the_users_own_tarball() {
    let cove = Cove::new();
    cove.minimal_image(); // the kernel and modules come from the same cache
    let dir = cove.root().join("own");
    std::fs::create_dir_all(&dir).unwrap();
    own_root(&dir);
    let spec = dir.join("own.toml");
    std::fs::write(
        &spec,
        "name = \"e2e-own-root\"\nrootfs = { tarball = \"root.tar\" }\n",
    )
    .unwrap();
    cove.ok(&["image", "build", spec.to_str().unwrap()]);
    let shared = cove.root().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("rebuilt"), "version 2\n").unwrap();
    cove.ok(&[
        "create",
        "own",
        "--image",
        "e2e-own-root",
        "--mount",
        &format!("{}:/mnt/host", shared.display()),
    ]);
    cove.ok(&["start", "own"]);

    // It is the user's system: their os-release, no strace, no ldd.
    let out = cove.ok(&["exec", "own", "--", "cat", "/etc/os-release"]);
    assert_eq!(out, "ID=levitate-like\n");
    let none = cove.run(&["exec", "own", "--", "sh", "-c", "command -v strace ldd"]);
    assert_ne!(none.status.code(), Some(0), "{none:?}");

    // The failure, silent as the seed's login was; trace names the library.
    let plain = cove.run(&["exec", "own", "--", "getent", "passwd", "root"]);
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    let traced = cove.run(&["trace", "own", "--", "getent", "passwd", "root"]);
    let report = String::from_utf8_lossy(&traced.stderr);
    assert_eq!(traced.status.code(), Some(2), "{report}");
    let summary = report
        .split("libraries searched for and not found:")
        .nth(1)
        .unwrap_or_else(|| panic!("no missing-library summary:\n{report}"));
    assert!(summary.contains("libnss_levitate.so.2"), "{report}");
    assert!(
        summary.contains("/lib/x86_64-linux-gnu/libnss_levitate.so.2"),
        "{report}"
    );

    // ldd without ldd, read from the ELF by the agent.
    let text = cove.ok(&["ldd", "own:/usr/bin/getent"]);
    assert!(
        text.contains("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"),
        "{text}"
    );

    // A host folder, seen at once, so a rebuilt binary needs no new image.
    let read = || cove.ok(&["exec", "own", "--", "cat", "/mnt/host/rebuilt"]);
    assert_eq!(read(), "version 2\n");
    std::fs::write(shared.join("rebuilt"), "version 3\n").unwrap();
    assert_eq!(read(), "version 3\n");
    cove.ok(&["stop", "own"]);
}
