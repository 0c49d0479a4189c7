//! The runner against real parts on this machine: real TCP listeners, real commands and
//! processes (through `LocalGuest`, which runs them here), real `psql`.

use cove_check::{Check, LocalGuest, Report, Status, VmFacts, from_toml, run};
use cove_state::{PortForward, VmState};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A VM that is "running" as far as the runner can tell: its VMM pid is this test process.
fn vm(ports: &[(u16, u16)]) -> VmFacts {
    VmFacts {
        name: "t".into(),
        state: VmState::Running,
        vmm_pid: Some(std::process::id()),
        peers: vec![],
        ports: ports
            .iter()
            .map(|&(host_port, guest_port)| PortForward {
                host_addr: "127.0.0.1".into(),
                host_port,
                guest_port,
            })
            .collect(),
    }
}

fn checks(toml: &str) -> Vec<Check> {
    from_toml(toml).unwrap()
}

async fn run_local(vm: &VmFacts, toml: &str) -> Report {
    run(vm, &LocalGuest, &checks(toml)).await
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn evidence(r: &Report, n: usize) -> String {
    r.checks[n - 1]
        .failure
        .as_ref()
        .map(|f| f.evidence_lines().join("\n"))
        .unwrap_or_default()
}

#[tokio::test]
async fn tcp_passes_on_a_listener_and_names_the_cause_when_refused() {
    // A server that accepts and stays silent, as PostgreSQL does until the client speaks.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    // A server that accepts and closes at once: what QEMU's user-mode forward does when
    // nothing listens on the guest port.
    let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing_port = closing.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = closing.accept().await {
            drop(s);
        }
    });
    let refused = free_port();
    let vm = vm(&[(open, 5432), (refused, 80), (closing_port, 8080)]);
    let r = run_local(
        &vm,
        "[[check]]\ntcp = 5432\n[[check]]\ntcp = 80\n[[check]]\ntcp = 8080\n[[check]]\ntcp = 22\n",
    )
    .await;
    print!("{}", r.to_text());
    let status: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
    use Status::*;
    assert_eq!(status, [Pass, Pass, Pass, Fail, Fail, Fail]);
    assert!(
        r.checks[2]
            .detail
            .as_deref()
            .unwrap()
            .contains(&format!("127.0.0.1:{open}"))
    );
    assert!(evidence(&r, 4).contains("refused"), "{}", evidence(&r, 4));
    assert!(
        evidence(&r, 5).contains("nothing listens on guest port 8080"),
        "{}",
        evidence(&r, 5)
    );
    let no_fwd = evidence(&r, 6);
    assert!(
        no_fwd.contains("-p HOST:22") && no_fwd.contains("-p 10022:22"),
        "{no_fwd}"
    );
    assert!(no_fwd.contains(&format!("{open}→5432")), "{no_fwd}");
    assert_eq!(r.summary(), "=== 3 OF 6 CHECKS FAILED ===");
    server.abort();
}

#[tokio::test]
async fn waiting_polls_until_a_late_service_listens() {
    let port = free_port();
    let vm = vm(&[(port, 5432)]);
    let started = Instant::now();
    // A service that takes 700 ms to start (the delay is the service's, not the test's wait).
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let r = run_local(&vm, "[[check]]\ntcp = 5432\nwait = \"10s\"\n").await;
    print!("{}", r.to_text());
    let c = &r.checks[2];
    assert_eq!(c.status, Status::Pass, "{c:?}");
    assert!(c.attempts > 1, "{c:?}");
    assert!(c.duration >= Duration::from_millis(700), "{c:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn a_wait_ends_at_its_deadline_and_a_permanent_failure_ends_it_at_once() {
    let vm = vm(&[(free_port(), 5432)]);
    let started = Instant::now();
    let r = run_local(&vm, "[[check]]\ntcp = 5432\nwait = \"1500ms\"\n").await;
    let took = started.elapsed();
    let c = &r.checks[2];
    assert_eq!(c.status, Status::Fail);
    assert!(c.attempts >= 2, "{c:?}");
    // A wait never ends before its deadline; how long after it depends on
    // the machine's load, so only the lower bound is asserted.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(
        evidence(&r, 3).contains("still failing after"),
        "{}",
        evidence(&r, 3)
    );

    let started = Instant::now();
    let r = run_local(&vm, "[[check]]\ntcp = 9999\nwait = \"30s\"\n").await;
    // A permanent failure ends the wait at once: one attempt, not 30 s of them.
    assert_eq!(r.checks[2].attempts, 1);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn commands_pass_fail_and_carry_their_evidence() {
    let r = run_local(
        &vm(&[]),
        r#"
[[check]]
command = "true"

[[check]]
command = "echo to-stdout; echo to-stderr >&2; exit 3"

[[check]]
command = ["uname", "-s"]
stdout_contains = "Linux"

[[check]]
command = ["uname", "-s"]
stdout_matches = "^Plan9$"

[[check]]
command = "no-such-tool-cove-test --version"

[[check]]
command = ["/nonexistent/cove-tool"]

[[check]]
command = "sleep 5"
timeout = "300ms"
"#,
    )
    .await;
    print!("{}", r.to_text());
    let status: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
    use Status::*;
    assert_eq!(
        status,
        [Pass, Pass, Pass, Fail, Pass, Fail, Fail, Fail, Fail]
    );
    let f = r.checks[3].failure.as_ref().unwrap();
    assert_eq!(f.exit_code, Some(3));
    assert_eq!(f.stdout.as_deref(), Some("to-stdout"));
    assert_eq!(f.stderr.as_deref(), Some("to-stderr"));
    let f = r.checks[5].failure.as_ref().unwrap();
    assert_eq!(f.expected.as_deref(), Some("stdout matching /^Plan9$/"));
    assert_eq!(f.got.as_deref(), Some("Linux"));
    assert!(
        evidence(&r, 7).contains("`no-such-tool-cove-test` is not installed"),
        "{}",
        evidence(&r, 7)
    );
    assert!(
        evidence(&r, 8).contains("`/nonexistent/cove-tool` is not installed"),
        "{}",
        evidence(&r, 8)
    );
    assert!(
        r.checks[8].duration < Duration::from_secs(2),
        "{:?}",
        r.checks[8]
    );
    assert!(
        evidence(&r, 9).contains("`sleep` did not finish within 300 ms"),
        "{}",
        evidence(&r, 9)
    );
}

#[tokio::test]
async fn seed_000_initdb_enosys_is_traced_to_sysvipc() {
    // The exact lines PostgreSQL printed in seed 000, from a real failing command.
    let r = run_local(
        &vm(&[]),
        r#"
[[check]]
command = "echo 'FATAL:  could not create shared memory segment: Function not implemented' >&2; echo 'DETAIL:  Failed system call was shmget(key=2, size=56, 03600).' >&2; exit 1"
"#,
    )
    .await;
    let e = evidence(&r, 3);
    assert!(
        e.contains("likely cause: the guest kernel lacks CONFIG_SYSVIPC"),
        "{e}"
    );
    assert!(e.contains("cove kernel explain shmget"), "{e}");
}

#[tokio::test]
async fn processes_are_found_by_program_name() {
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let r = run_local(
        &vm(&[]),
        "[[check]]\nprocess = \"sleep\"\n[[check]]\nprocess = \"no-such-daemon\"\n",
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    print!("{}", r.to_text());
    assert_eq!(r.checks[2].status, Status::Pass);
    assert!(r.checks[2].detail.as_deref().unwrap().starts_with("pid "));
    let f = r.checks[3].failure.as_ref().unwrap();
    assert!(f.got.as_deref().unwrap().contains("sleep"), "{f:?}");
    assert!(f.cause.as_deref().unwrap().contains("cove ps t"), "{f:?}");
}

#[tokio::test]
async fn a_vm_that_is_not_running_skips_everything_after_the_first_check() {
    let mut stopped = vm(&[]);
    stopped.state = VmState::Stopped;
    stopped.vmm_pid = None;
    let r = run_local(&stopped, "[[check]]\ncommand = \"true\"\n").await;
    print!("{}", r.to_text());
    let status: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
    assert_eq!(status, [Status::Fail, Status::Skip, Status::Skip]);
    assert!(evidence(&r, 1).contains("cove start t"));
    assert_eq!(r.summary(), "=== 1 OF 3 CHECKS FAILED, 2 SKIPPED ===");

    // The store says running but the VMM is gone (seed 004's `show` that still said running).
    let mut gone = vm(&[]);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    gone.vmm_pid = Some(child.id());
    child.wait().unwrap();
    let r = run_local(&gone, "").await;
    assert!(
        evidence(&r, 1).contains("is gone although the store says"),
        "{}",
        evidence(&r, 1)
    );

    // A VMM stopped with SIGSTOP: alive, but the guest is frozen (and the host kernel would
    // still complete TCP handshakes on its forwards).
    let mut frozen = vm(&[]);
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = child.id();
    // SAFETY: kill has no memory effects; the pid is our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    frozen.vmm_pid = Some(pid);
    let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    while !stat().contains(") T") {
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = run_local(&frozen, "[[check]]\ntcp = 5432\n").await;
    child.kill().unwrap();
    child.wait().unwrap();
    print!("{}", r.to_text());
    assert!(
        evidence(&r, 1).contains("is stopped (state T)"),
        "{}",
        evidence(&r, 1)
    );
    assert!(evidence(&r, 1).contains(&format!("kill -CONT {pid}")));
    assert_eq!(r.checks[2].status, Status::Skip);
}

#[tokio::test]
async fn host_psql_against_a_closed_port_explains_the_forward() {
    let vm = vm(&[(free_port(), 5432)]);
    let r = run_local(
        &vm,
        "[[check]]\nsql = \"select 1\"\nexpect = \"1\"\nvia = \"host\"\n",
    )
    .await;
    print!("{}", r.to_text());
    let f = r.checks[2].failure.as_ref().expect("psql must fail");
    assert_eq!(
        f.exit_code,
        Some(2),
        "{f:?} (is postgresql-client installed? scripts/install-deps)"
    );
    assert!(
        f.stderr.as_deref().unwrap().contains("Connection refused"),
        "{f:?}"
    );
    assert!(
        f.cause.as_deref().unwrap().contains("cove restart t"),
        "{f:?}"
    );
}

#[tokio::test]
async fn tcp_names_a_peer_vm_and_a_vm_off_every_network_fails_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut facts = vm(&[]);
    // The test's own listener stands in for `db`'s address on a cove network.
    facts.peers = vec![("db".into(), "127.0.0.1".parse().unwrap())];
    let refused = free_port();
    let r = run_local(
        &facts,
        &format!(
            "[[check]]\ntcp = \"db:{port}\"\n[[check]]\ntcp = \"db:{refused}\"\n\
             [[check]]\ntcp = \"cache:6379\"\nwait = \"30s\"\n"
        ),
    )
    .await;
    print!("{}", r.to_text());
    let status: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
    use Status::*;
    // The VM-running and agent checks first, then the three.
    assert_eq!(status, [Pass, Pass, Pass, Fail, Fail]);
    let why = format!("{:?}", r.checks[4].failure);
    assert!(why.contains("not a VM on a cove network"), "{why}");
    // Permanent: the 30 s wait is not spent on a name that cannot resolve.
    assert!(r.checks[4].duration < std::time::Duration::from_secs(5));
    assert!(from_toml("[[check]]\ntcp = \"db\"\n").is_err());
    assert!(from_toml("[[check]]\ntcp = \"../x:5\"\n").is_err());
}
