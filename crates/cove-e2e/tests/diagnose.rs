//! Name the cause in one command (seeds 000, 001, 003): a guest whose agent
//! can never answer, an init that exits, and a file read back from a stopped
//! VM's disk without mounting it.

use cove_e2e::Cove;

#[test]
#[ignore = "boots VMs"]
fn missing_virtio_console_fails_start_and_why_names_the_driver() {
    let cove = Cove::new();
    let build = [
        "image",
        "build",
        "minimal",
        "--name",
        "noconsole",
        "--module",
        "-virtio_console",
    ];
    // cove refuses to build an image whose agent cannot work, naming the option…
    let refused = cove.fails(&build);
    assert!(
        refused.contains("CONFIG_VIRTIO_CONSOLE") && refused.contains("--skip-kernel-check"),
        "{refused}"
    );
    // …so this test has to insist, to see what such a guest does at boot.
    cove.ok(&[&build[..], &["--skip-kernel-check"]].concat());
    cove.ok(&["create", "nc", "--image", "noconsole"]);
    let started = std::time::Instant::now();
    let err = cove.fails(&["start", "nc", "--timeout", "30"]);
    assert!(
        started.elapsed().as_secs() < 60,
        "start gave up within its timeout"
    );
    assert!(
        err.contains("agent never answered"),
        "says what went wrong: {err}"
    );
    assert!(
        err.contains("last console lines"),
        "quotes the console: {err}"
    );
    assert_eq!(cove.state("nc"), "crashed");
    // `why` exits 1 when it found what went wrong.
    let why = cove.run(&["why", "nc"]);
    assert_eq!(why.status.code(), Some(1));
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(
        text.contains("CONFIG_VIRTIO_CONSOLE") && text.contains("virtio_console.ko"),
        "{text}"
    );
    let json = cove.run(&["--json", "why", "nc"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(json.to_string().contains("VIRTIO_CONSOLE"), "{json}");
}

#[test]
#[ignore = "boots VMs"]
fn an_init_that_exits_is_named_by_why() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "ie", "--image", "minimal"]);
    cove.ok(&["start", "ie"]);
    // Break the init on the VM's own disk, then boot it again.
    cove.ok(&[
        "exec",
        "ie",
        "--",
        "sh",
        "-c",
        "printf '#!/bin/sh\\necho init gives up\\nexit 3\\n' > /sbin/cove-init; sync",
    ]);
    cove.ok(&["stop", "ie"]);
    let err = cove.fails(&["start", "ie", "--timeout", "30"]);
    assert!(err.contains("panic") || err.contains("init"), "{err}");
    let why = cove.run(&["why", "ie"]);
    let why = String::from_utf8_lossy(&why.stdout).to_lowercase();
    assert!(why.contains("init") && why.contains("exit"), "{why}");
}

#[test]
#[ignore = "boots VMs"]
fn a_file_written_in_the_guest_is_read_back_from_the_stopped_disk() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "dk", "--image", "minimal"]);
    cove.ok(&["start", "dk"]);
    cove.ok(&[
        "exec",
        "dk",
        "--",
        "sh",
        "-c",
        "mkdir -p /var/log && echo 'initdb: shmget: Function not implemented' > /var/log/init.log",
    ]);
    let err = cove.fails(&["disk", "cat", "dk:/var/log/init.log"]);
    assert!(
        err.contains("cove exec") || err.contains("cove cp"),
        "a running VM is refused: {err}"
    );
    cove.ok(&["stop", "dk"]);
    let text = cove.ok(&["disk", "cat", "dk:/var/log/init.log"]);
    assert_eq!(text, "initdb: shmget: Function not implemented\n");
    let listing = cove.ok(&["disk", "ls", "dk:/var/log"]);
    assert!(listing.contains("init.log"), "{listing}");
    // And the cause behind that line, in one command.
    let explain = cove.ok(&["kernel", "explain", "ENOSYS", "shmget"]);
    assert!(explain.contains("SYSVIPC"), "{explain}");
}

#[test]
#[ignore = "boots VMs"]
fn a_start_that_runs_out_of_memory_names_the_cause_at_once() {
    // Regression: a 72 MiB guest died of OOM in about a second, and `start` waited the whole
    // boot timeout to report "the guest's agent never answered"; only `cove why` said why.
    let cove = Cove::new();
    cove.minimal_image();
    // `create` refuses 72M now (below the image's need)…
    let refused = cove.fails(&["create", "oom", "--image", "minimal", "--memory", "72M"]);
    assert!(refused.contains("at least 96M"), "{refused}");
    // …so QEMU is given 72M behind cove's back: the last `-m` wins, and a RAM backend of that
    // size replaces cove's memory file (the last `memory-backend=` wins; sizes must match).
    cove.ok(&["create", "oom", "--image", "minimal", "--memory", "96M"]);
    let out = cove
        .command()
        .args(["start", "oom", "--timeout", "300"])
        .env(
            "COVE_QEMU_EXTRA_ARGS",
            "-m 72M -object memory-backend-ram,id=mem72,size=72M -machine memory-backend=mem72",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the guest ran out of memory"), "{err}");
    assert!(!err.contains("never answered"), "{err}");
    // The kernel's panic ended the boot, not the 300 s timeout: the VM is crashed, not killed.
    assert_eq!(cove.state("oom"), "crashed");
    let why = cove.run(&["why", "oom"]);
    assert!(String::from_utf8_lossy(&why.stdout).contains("the guest ran out of memory"));
}
