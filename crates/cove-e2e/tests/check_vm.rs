//! `cove test` against a real guest under QEMU: the checks file `cove up` writes (through
//! [`cove_check::save`]), the report, the exit codes, JUnit and JSON.

use cove_check::{from_toml, save};
use cove_e2e::Cove;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "boots a VM"]
fn cove_test_reports_a_real_guest_and_exits_by_the_result() {
    let cove = Cove::new();
    cove.minimal_image();
    let (web, idle) = (free_port(), free_port());
    cove.ok(&[
        "create",
        "t",
        "--image",
        "minimal",
        "-p",
        &format!("{web}:8080"),
        "-p",
        &format!("{idle}:8081"),
    ]);
    cove.ok(&["start", "t"]);
    // busybox httpd daemonizes: a service running in the guest.
    cove.ok(&["exec", "t", "--", "httpd", "-p", "8080", "-h", "/etc"]);

    // No checks declared: the two built-in ones, and how to declare more.
    let out = cove.run(&["test", "t"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("=== ALL 2 CHECKS PASSED ==="),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("[[vm.check]]"),
        "{}",
        text(&out.stderr)
    );

    let checks_file = cove.vm_dir("t").join("checks.json");
    let all_good = r#"
[[check]]
process = "httpd"

[[check]]
name = "web answering"
tcp = 8080
wait = "20s"

[[check]]
command = "wget -q -O - http://127.0.0.1:8080/passwd"
stdout_contains = "root:"
"#;
    save(&checks_file, &from_toml(all_good).unwrap()).unwrap();
    let out = cove.run(&["test", "t"]);
    let stdout = text(&out.stdout);
    print!("{stdout}");
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("3. process `httpd` running: ✓ PASS"),
        "{stdout}"
    );
    assert!(stdout.contains("4. web answering: ✓ PASS"), "{stdout}");
    assert!(stdout.contains("=== ALL 5 CHECKS PASSED ==="), "{stdout}");

    let failing = format!(
        "{all_good}{}",
        r#"
[[check]]
tcp = 8081

[[check]]
tcp = 5432

[[check]]
sql = "select 1"
expect = "1"
"#
    );
    save(&checks_file, &from_toml(&failing).unwrap()).unwrap();
    let junit = cove.root().join("junit.xml");
    let out = cove.run(&["test", "t", "--junit", junit.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    print!("{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("=== 3 OF 8 CHECKS FAILED ==="), "{stdout}");
    // QEMU accepted on the host and closed: nothing listens in the guest.
    assert!(
        stdout.contains("nothing listens on guest port 8081"),
        "{stdout}"
    );
    assert!(stdout.contains("-p HOST:5432"), "{stdout}");
    assert!(
        stdout.contains("the guest has no user `postgres`"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"8\" failures=\"3\""), "{xml}");

    let report = cove.run(&["--json", "test", "t"]);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["checks"][5]["status"], "fail");
    assert_eq!(json["checks"][5]["kind"], "tcp");

    cove.ok(&["stop", "t"]);
    let out = cove.run(&["test", "t"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("cove's store says `t` is stopped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("=== 1 OF 8 CHECKS FAILED, 7 SKIPPED ==="),
        "{stdout}"
    );

    let out = cove.run(&["test", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    cove.ok(&["delete", "--force", "t"]);
}
