//! Issue 10, findings 3, 5 and 7: what cove keeps of a VM is its owner's
//! alone (directories 0700, files and sockets 0600), the runtime directory
//! is refused when it is not ours alone, and QEMU runs in its seccomp
//! sandbox while the guest still boots and answers.

use cove_e2e::Cove;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

#[test]
#[ignore = "boots a VM"]
fn a_vms_files_are_private_and_qemu_is_sandboxed() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "priv", "--image", "minimal"]);
    cove.ok(&["start", "priv"]);
    let out = cove.ok(&["exec", "priv", "--", "echo", "sandboxed"]);
    assert_eq!(out.trim(), "sandboxed");

    let state = cove.root().join("state/cove");
    let vm = cove.vm_dir("priv");
    let run = cove.root().join("run/cove");
    for dir in [
        state.clone(),
        state.join("vms"),
        vm.clone(),
        run.clone(),
        run.join("priv"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        state.join("cove.db"),
        vm.join("root.qcow2"),
        vm.join("console.log"),
        vm.join("supervisor.log"),
        vm.join("vmm.log"),
        vm.join("vmm.cmdline"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // Sockets: QEMU makes its own (0700 under a 077 umask; x means nothing
    // on a socket). What matters is that nobody else can connect.
    for sock in ["control", "vmm", "console", "agent"] {
        let sock = run.join(format!("priv/{sock}.sock"));
        assert_eq!(mode(&sock) & 0o077, 0, "{}", sock.display());
    }

    // QEMU runs with the seccomp filter (Seccomp: 2 = filter mode).
    let pid = cove.json(&["show", "priv"])["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]),
        "{status}"
    );
    cove.ok(&["stop", "priv"]);

    // A runtime directory another could have swapped sockets into: refused,
    // naming the cause and the way out.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = cove.fails(&["list"]);
    assert!(
        err.contains("refusing cove's runtime directory") && err.contains("777"),
        "{err}"
    );
}
