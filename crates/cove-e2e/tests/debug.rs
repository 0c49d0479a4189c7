//! Debugging a guest that has no tools (seed 003): `cove trace` names the file or library a
//! program wanted and did not get, `cove ldd` resolves a binary's libraries as the guest's
//! loader would, in a Debian guest with neither strace nor ldd.

use cove_e2e::Cove;

/// A Debian guest with seed 003's failure: NSS is told to use a module whose library is not
/// installed (`libnss_systemd.so.2`), so `getent passwd root` fails with no message at all;
/// and zlib moved away, so `dpkg-deb` cannot start. No strace, and `ldd` removed.
const SPEC: &str = r#"
name = "e2e-nss-broken"
base = "debian:bookworm"
commands = [
    "sed -i 's/^passwd:.*/passwd:         systemd/' /etc/nsswitch.conf",
    "rm -f /usr/bin/ldd",
    "mkdir -p /root/moved && mv /usr/lib/x86_64-linux-gnu/libz.so.1* /root/moved/",
]
"#;

fn broken_debian_vm(cove: &Cove, name: &str) {
    let spec = cove.root().join("nss.toml");
    std::fs::write(&spec, SPEC).unwrap();
    cove.ok(&["image", "build", spec.to_str().unwrap()]);
    cove.ok(&["create", name, "--image", "e2e-nss-broken"]);
    cove.ok(&["start", name]);
}

#[test]
#[ignore = "boots a VM; builds a Debian image"]
fn trace_names_the_missing_nss_library_and_ldd_the_missing_zlib_in_a_guest_without_tools() {
    let cove = Cove::new();
    broken_debian_vm(&cove, "nss");
    // The guest really has no tools: what the seed's author had.
    let out = cove.run(&["exec", "nss", "--", "sh", "-c", "command -v strace ldd"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    // The failure as a user sees it: exit 2, not a word on why.
    let plain = cove.run(&["exec", "nss", "--", "getent", "passwd", "root"]);
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    assert!(plain.stderr.is_empty() && plain.stdout.is_empty());

    let traced = cove.run(&["trace", "nss", "--", "getent", "passwd", "root"]);
    let report = String::from_utf8_lossy(&traced.stderr);
    assert_eq!(traced.status.code(), Some(2), "{report}");
    assert!(report.contains("trace: exited with status 2"), "{report}");
    // The summary names the library and every path the loader tried.
    let summary = report
        .split("libraries searched for and not found:")
        .nth(1)
        .unwrap_or_else(|| panic!("no missing-library summary:\n{report}"));
    assert!(summary.contains("libnss_systemd.so.2"), "{report}");
    for dir in ["/lib/x86_64-linux-gnu/", "/usr/lib/x86_64-linux-gnu/"] {
        assert!(
            summary.contains(&format!("{dir}libnss_systemd.so.2")),
            "{dir}: {report}"
        );
    }
    // Each failed open is reported with its errno as it happens.
    assert!(
        report.contains("openat /lib/x86_64-linux-gnu/libnss_systemd.so.2: ENOENT"),
        "{report}"
    );

    // The same as JSON lines: each call, then the summary.
    let json = cove.run(&["--json", "trace", "nss", "--", "getent", "passwd", "root"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let last = lines.last().expect("a summary line");
    assert_eq!(last["type"], "summary");
    assert_eq!(last["exit"]["code"], 2);
    assert_eq!(
        last["summary"]["missing_libraries"][0]["name"],
        "libnss_systemd.so.2"
    );
    assert!(lines.iter().any(|l| {
        l["type"] == "call"
            && l["call"]["errno"] == "ENOENT"
            && l["call"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("libnss_systemd.so.2"))
    }));

    // ldd without ldd: dpkg-deb needs zlib, which is gone; libc is where the loader finds it.
    let out = cove.run(&["ldd", "nss:/usr/bin/dpkg-deb"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6")
            || text.contains("libc.so.6 => /usr/lib/x86_64-linux-gnu/libc.so.6"),
        "{text}"
    );
    assert!(
        text.contains("libz.so.1 => not found (needed by /usr/bin/dpkg-deb)"),
        "{text}"
    );
    assert!(text.contains("      /usr/lib/x86_64-linux-gnu\n"), "{text}");
    let ok = cove.json(&["ldd", "nss:/usr/bin/getent"]);
    assert_eq!(ok["interpreter_found"], true);
    assert!(
        ok["libraries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["path"].is_string()),
        "{ok}"
    );
    let err = cove.fails(&["ldd", "nss:/etc/passwd"]);
    assert!(err.contains("not an ELF"), "{err}");
}

#[test]
#[ignore = "boots a VM"]
fn trace_attaches_to_a_running_guest_process_in_the_minimal_image() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "att", "--image", "minimal"]);
    cove.ok(&["start", "att"]);
    // A process that waits on a fifo, then looks for a file that is not there and exits 5.
    cove.ok(&[
        "exec",
        "att",
        "--",
        "sh",
        "-c",
        "mkfifo /tmp/go && (sh -c 'read x < /tmp/go; cat /etc/cove-not-here; exit 5' \
         </dev/null >/dev/null 2>&1 & echo $! > /tmp/pid)",
    ]);
    let pid = cove.ok(&["exec", "att", "--", "cat", "/tmp/pid"]);
    let pid = pid.trim().to_string();
    let tracer = cove
        .command()
        .args(["trace", "att", "--pid", &pid])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cove.wait_for(
        "the tracer to attach",
        std::time::Duration::from_secs(30),
        || {
            let status = cove.ok(&["exec", "att", "--", "cat", &format!("/proc/{pid}/status")]);
            status
                .lines()
                .any(|l| l.starts_with("TracerPid:") && !l.ends_with("\t0") && !l.ends_with(" 0"))
        },
    );
    cove.ok(&["exec", "att", "--", "sh", "-c", "echo go > /tmp/go"]);
    let out = tracer.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{report}");
    assert!(report.contains("/etc/cove-not-here: ENOENT"), "{report}");
}
