//! See inside a running VM: exec, cp, ps through the guest agent, and the
//! agent link surviving restarts of either end (seed 003).

use cove_e2e::Cove;
use sha2::Digest;
use std::process::Stdio;
use std::time::Duration;

fn running_vm(cove: &Cove, name: &str) {
    cove.minimal_image();
    cove.ok(&["create", name, "--image", "minimal"]);
    cove.ok(&["start", name]);
}

#[test]
#[ignore = "boots VMs"]
fn exec_propagates_exit_codes_and_keeps_streams_apart() {
    let cove = Cove::new();
    running_vm(&cove, "ex");
    let out = cove.run(&[
        "exec",
        "ex",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Environment, working directory and stdin.
    let mut child = cove
        .command()
        .args([
            "exec",
            "-i",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            "ex",
            "--",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(cat)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi /tmp from-stdin\n");
    let err = cove.fails(&["exec", "ex", "--", "/no/such/program"]);
    assert!(err.contains("/no/such/program"), "{err}");
    // Without -i the caller's stdin is left alone (a `cove exec` in a `while read` loop once
    // swallowed the rest of the loop's input).
    let (mut ours, mut theirs) = std::io::pipe().unwrap();
    theirs.write_all(b"for the loop\n").unwrap();
    drop(theirs);
    let st = cove
        .command()
        .args(["exec", "ex", "--", "true"])
        .stdin(ours.try_clone().unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let mut left = String::new();
    std::io::Read::read_to_string(&mut ours, &mut left).unwrap();
    assert_eq!(left, "for the loop\n");
    // HOME, SHELL and the default working directory are the user's from /etc/passwd, read
    // again when it changes (the agent keeps them between commands).
    let home = || cove.ok(&["exec", "ex", "--", "sh", "-c", "echo $HOME $SHELL $(pwd)"]);
    assert_eq!(home(), "/root /bin/sh /root\n");
    cove.ok(&[
        "exec",
        "ex",
        "--",
        "sed",
        "-i",
        "s#^root:x:0:0:root:/root:/bin/sh#root:x:0:0:root:/var/tmp:/bin/ash#",
        "/etc/passwd",
    ]);
    assert_eq!(home(), "/var/tmp /bin/ash /var/tmp\n");
}

#[test]
#[ignore = "boots VMs"]
fn twenty_concurrent_execs_each_get_their_own_output() {
    let cove = Cove::new();
    running_vm(&cove, "conc");
    let children: Vec<_> = (0..20)
        .map(|i| {
            cove.command()
                .args([
                    "exec",
                    "conc",
                    "--",
                    "sh",
                    "-c",
                    &format!("sleep 0.$((RANDOM % 5)) 2>/dev/null; echo exec-{i}"),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "exec {i}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("exec-{i}\n"));
    }
}

#[test]
#[ignore = "boots VMs"]
fn ten_megabytes_on_each_stream_arrive_on_the_right_one() {
    let cove = Cove::new();
    running_vm(&cove, "big");
    // Interleaved writers: 10 MB of 'o' lines to stdout, 10 MB of 'e' lines to stderr.
    let script = "yes oooooooooooooooooooo | head -c 10000000 & yes eeeeeeeeeeeeeeeeeeee | head -c 10000000 >&2; wait";
    let out = cove.run(&["exec", "big", "--", "sh", "-c", script]);
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 10_000_000);
    assert_eq!(out.stderr.len(), 10_000_000);
    assert!(
        out.stdout.iter().all(|b| *b == b'o' || *b == b'\n'),
        "stderr bytes leaked into stdout"
    );
    assert!(
        out.stderr.iter().all(|b| *b == b'e' || *b == b'\n'),
        "stdout bytes leaked into stderr"
    );
}

#[test]
#[ignore = "boots VMs"]
fn copy_100_mib_in_and_out_unchanged() {
    let cove = Cove::new();
    running_vm(&cove, "cp");
    let src = cove.root().join("in.bin");
    let mut data = vec![0u8; 100 << 20];
    // Deterministic but not compressible-trivially content.
    let mut x: u32 = 0x1234_5678;
    for chunk in data.chunks_mut(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    cove.ok(&["cp", src.to_str().unwrap(), "cp:/tmp/in.bin"]);
    let guest_sum = cove.ok(&[
        "exec",
        "cp",
        "--",
        "sh",
        "-c",
        "sha256sum /tmp/in.bin; stat -c %a /tmp/in.bin",
    ]);
    let host_sum = hex::encode(sha2::Sha256::digest(&data));
    assert!(
        guest_sum.contains(&host_sum),
        "guest {guest_sum} host {host_sum}"
    );
    assert!(guest_sum.contains("640"), "mode kept: {guest_sum}");
    let back = cove.root().join("out.bin");
    cove.ok(&["cp", "cp:/tmp/in.bin", back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the copy out differs"
    );
}

#[test]
#[ignore = "boots VMs"]
fn agent_killed_in_the_guest_comes_back_and_the_host_reconnects() {
    let cove = Cove::new();
    running_vm(&cove, "ak");
    // The agent runs the kill, so the exec itself may be cut off; that is fine.
    let _ = cove.run(&[
        "exec",
        "ak",
        "--",
        "sh",
        "-c",
        "kill -9 $(pidof cove-agent)",
    ]);
    cove.wait_for(
        "exec to work again after the agent restarted",
        Duration::from_secs(60),
        || cove.run(&["exec", "ak", "--", "true"]).status.success(),
    );
    assert!(
        cove.console_log("ak").contains("cove-agent exited"),
        "the init saw the agent die"
    );
}

#[test]
#[ignore = "boots VMs"]
fn a_killed_supervisor_is_replaced_and_the_vm_never_stops() {
    let cove = Cove::new();
    running_vm(&cove, "sv");
    let show = cove.json(&["show", "sv"]);
    let (supervisor, qemu) = (
        show["supervisor_pid"].as_u64().unwrap(),
        show["pid"].as_u64().unwrap(),
    );
    let passt = cove.passts();
    assert_eq!(passt.len(), 1, "one passt per VM");
    // SAFETY: kill has no memory effects; the pid is this test's supervisor.
    unsafe {
        libc::kill(supervisor as i32, libc::SIGKILL);
    }
    cove.wait_for("the supervisor to be gone", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{supervisor}")).exists()
    });
    // The next command notices and starts a supervisor that adopts the VM.
    let out = cove.ok(&["exec", "sv", "--", "echo", "still-here"]);
    assert_eq!(out, "still-here\n");
    let show = cove.json(&["show", "sv"]);
    assert_eq!(show["state"], "running");
    assert_eq!(
        show["pid"].as_u64(),
        Some(qemu),
        "the same QEMU, never restarted"
    );
    assert_ne!(show["supervisor_pid"].as_u64(), Some(supervisor));
    assert_eq!(
        cove.passts(),
        passt,
        "the same passt serves the adopted QEMU"
    );
    cove.ok(&["stop", "sv"]);
    assert_eq!(cove.state("sv"), "stopped");
    cove.wait_for("passt to end with QEMU", Duration::from_secs(10), || {
        cove.passts().is_empty()
    });
}

#[test]
#[ignore = "boots VMs"]
fn ps_lists_the_guest_processes() {
    let cove = Cove::new();
    running_vm(&cove, "ps");
    let procs = cove.json(&["ps", "ps"]);
    let commands: Vec<&str> = procs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["command"].as_str())
        .collect();
    assert!(
        commands.iter().any(|c| c.contains("cove-agent")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("cove-init")),
        "{commands:?}"
    );
}

#[test]
#[ignore = "boots VMs and reaches the Debian mirror"]
fn the_guest_reaches_the_network_and_forwarded_ports_reach_the_guest() {
    let cove = Cove::new();
    cove.minimal_image();
    let port = 20000 + std::process::id() % 20000;
    let forward = format!("{port}:8080");
    cove.ok(&["create", "net", "--image", "minimal", "-p", &forward]);
    cove.ok(&["start", "net"]);
    // Outbound: DNS through user-mode networking, then HTTP to the mirror.
    let release = cove.ok(&[
        "exec",
        "net",
        "--",
        "sh",
        "-c",
        "wget -q -O- http://deb.debian.org/debian/dists/bookworm/Release | head -1",
    ]);
    assert!(release.starts_with("Origin: Debian"), "{release}");
    // Inbound: a guest server on 8080, reached from the host's 127.0.0.1.
    cove.ok(&[
        "exec",
        "net",
        "--",
        "sh",
        "-c",
        "mkdir -p /srv && echo hello-from-guest > /srv/index.html && busybox httpd -p 8080 -h /srv",
    ]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.contains("hello-from-guest"), "{response}");
    // A second VM asking for the same host port is refused before it boots.
    cove.ok(&["create", "net2", "--image", "minimal", "-p", &forward]);
    let err = cove.fails(&["start", "net2"]);
    assert!(err.contains("not free"), "{err}");
    assert_eq!(cove.state("net2"), "created");
    // Once `stop` returns the port is free again (the supervisor waits for the VM's passt,
    // which held it, to be gone), so the other VM starts on it at once.
    cove.ok(&["stop", "net"]);
    cove.ok(&["start", "net2"]);
}
