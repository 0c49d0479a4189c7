//! An arm64 guest on this x86-64 host under TCG (issue 15): the same commands as an amd64
//! guest. The image is Debian's arm64 cloud kernel, arm64 busybox and the arm64 agent that
//! `scripts/build` cross-compiles; QEMU is `qemu-system-aarch64 -M virt`.

use cove_e2e::Cove;

#[test]
#[ignore = "boots VMs"]
fn an_arm64_minimal_guest_boots_and_answers_exec_cp_and_test() {
    let cove = Cove::new();
    let built = cove.json(&["image", "build", "minimal", "--arch", "arm64"]);
    assert_eq!(built["arch"], "arm64", "{built}");
    assert_eq!(built["name"], "minimal-arm64");
    cove.ok(&["create", "arm", "--image", "minimal-arm64"]);
    let shown = cove.json(&["show", "arm"]);
    assert_eq!(shown["arch"], "arm64", "{shown}");
    assert_eq!(shown["machine"], "virt", "{shown}");
    cove.ok(&["start", "arm"]);
    assert!(
        cove.ok(&["list"])
            .lines()
            .any(|l| l.starts_with("arm ") && l.contains("arm64")),
        "list names the arch"
    );

    // exec: the guest really is aarch64, exit codes and streams as on amd64.
    assert_eq!(cove.ok(&["exec", "arm", "--", "uname", "-m"]), "aarch64\n");
    let out = cove.run(&[
        "exec",
        "arm",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // cp both ways, byte for byte.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = cove.root().join("in.bin");
    std::fs::write(&src, &data).unwrap();
    cove.ok(&["cp", src.to_str().unwrap(), "arm:/tmp/in.bin"]);
    let back = cove.root().join("back.bin");
    cove.ok(&["cp", "arm:/tmp/in.bin", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // test: the built-in checks pass on a running arm64 guest.
    let report = cove.ok(&["test", "arm"]);
    assert!(
        report.contains("PASS") && !report.contains("FAIL"),
        "{report}"
    );
    assert!(cove.ok(&["ps", "arm"]).contains("cove-agent"));

    // stop, then read the stopped guest's disk without booting it.
    cove.ok(&["stop", "arm"]);
    assert_eq!(cove.state("arm"), "stopped");
    cove.ok(&["start", "arm"]);
    cove.ok(&[
        "exec",
        "arm",
        "--",
        "sh",
        "-c",
        "echo kept > /root/note; sync",
    ]);
    cove.ok(&["stop", "arm"]);
    assert_eq!(cove.ok(&["disk", "cat", "arm:/root/note"]), "kept\n");
}
