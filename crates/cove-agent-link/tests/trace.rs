//! `cove trace` and `cove ldd` against the real cove-agent binary over a unix socket (no VM):
//! the agent's own ptrace tracer on this host's processes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cove_agent_link::*;
use cove_proto::ErrorKind;

const T: Duration = Duration::from_secs(10);

struct Env {
    _dir: tempfile::TempDir,
    _broker: Broker,
    _agent: Agent,
    link: Arc<AgentLink>,
}

async fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let agent = Agent::start(&broker.agent_sock);
    let link = AgentLink::connect_with(&broker.host_sock, T, LinkConfig::default())
        .await
        .expect("connect to the agent");
    Env {
        _dir: dir,
        _broker: broker,
        _agent: agent,
        link: Arc::new(link),
    }
}

struct Traced {
    outcome: TraceOutcome,
    events: Vec<TraceEvent>,
    out: Vec<u8>,
}

async fn run(link: &AgentLink, req: TraceRequest) -> Result<Traced, LinkError> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev2 = events.clone();
    let out = SharedBuf::default();
    let io = TraceIo {
        stdout: Box::new(out.clone()),
        stderr: Box::new(SharedBuf::default()),
        on_event: Box::new(move |e| ev2.lock().unwrap().push(e)),
        control: None,
    };
    let outcome = trace(link, req, io).await?;
    let events = std::mem::take(&mut *events.lock().unwrap());
    Ok(Traced {
        outcome,
        events,
        out: out.take(),
    })
}

fn sh(script: &str, all: bool) -> TraceRequest {
    TraceRequest {
        exec: Some(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }),
        pid: None,
        all,
    }
}

#[tokio::test]
async fn failed_opens_in_forked_children_are_reported_with_errno_and_the_exit_status() {
    let env = setup().await;
    let t = run(
        &env.link,
        sh(
            "echo hello; cat /nonexistent/cove-trace-a 2>/dev/null; \
             (sh -c 'exec cat /nonexistent/cove-trace-b' 2>/dev/null); exit 3",
            false,
        ),
    )
    .await
    .unwrap();
    assert_eq!(t.outcome.exit, ExitStatus::Code(3));
    assert_eq!(String::from_utf8_lossy(&t.out), "hello\n");
    for want in ["/nonexistent/cove-trace-a", "/nonexistent/cove-trace-b"] {
        let ev = t
            .events
            .iter()
            .find(|e| e.path.as_deref() == Some(want))
            .unwrap_or_else(|| panic!("no event for {want}: {:#?}", t.events));
        assert_eq!(ev.errno.as_deref(), Some("ENOENT"));
        assert_eq!(ev.result, -2);
        assert!(ev.syscall.starts_with("open"), "{ev:?}");
    }
    // Three processes at least: the shell, a subshell, and the inner sh (then cat).
    assert!(t.outcome.summary.processes >= 3, "{:?}", t.outcome.summary);
    assert!(t.outcome.summary.failures >= 2);
    // Nothing but failures without --all.
    assert!(t.events.iter().all(|e| e.errno.is_some()));
}

#[tokio::test]
async fn all_reports_successful_accesses_too_and_relative_paths_are_made_absolute() {
    let env = setup().await;
    let t = run(&env.link, sh("cd /etc && cat ./hostname >/dev/null", true))
        .await
        .unwrap();
    assert_eq!(t.outcome.exit, ExitStatus::Code(0));
    let ok = t
        .events
        .iter()
        .find(|e| e.path.as_deref() == Some("/etc/./hostname") && e.result >= 0)
        .unwrap_or_else(|| panic!("{:#?}", t.events));
    assert!(ok.errno.is_none());
}

#[tokio::test]
async fn a_failed_exec_and_a_refused_connection_are_named() {
    let env = setup().await;
    // A port nobody listens on: bind one, learn its number, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // bash, for its /dev/tcp: a connect without any network tool.
    let mut req = sh(
        &format!(
            "/no/such/program 2>/dev/null; \
             exec 3<>/dev/tcp/127.0.0.1/{port} 2>/dev/null || true"
        ),
        false,
    );
    req.exec.as_mut().unwrap().argv[0] = "bash".into();
    let t = run(&env.link, req).await.unwrap();
    let exec = t
        .events
        .iter()
        .find(|e| e.syscall == "execve" && e.path.as_deref() == Some("/no/such/program"));
    assert!(exec.is_some(), "{:#?}", t.events);
    let c = t
        .events
        .iter()
        .find(|e| e.syscall == "connect")
        .unwrap_or_else(|| panic!("{:#?}", t.events));
    assert_eq!(c.errno.as_deref(), Some("ECONNREFUSED"));
    assert_eq!(c.path.as_deref(), Some(&*format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn attach_to_a_running_process_follows_it_until_it_exits() {
    let env = setup().await;
    // The process to attach to waits on a fifo, then fails to open a file and exits 7.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("go");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let script = format!(
        "read x < {f}; cat /nonexistent/cove-attach 2>/dev/null; exit 7",
        f = fifo.display()
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let pid = child.id();
    let traced = tokio::spawn({
        let link = env.link.clone();
        async move {
            run(
                &link,
                TraceRequest {
                    exec: None,
                    pid: Some(pid),
                    all: false,
                },
            )
            .await
        }
    });
    // Wait until the tracer is attached (TracerPid in /proc), then release the process.
    let deadline = std::time::Instant::now() + T;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if status
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never attached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(&fifo, "go\n").unwrap();
    let t = traced.await.unwrap().unwrap();
    let _ = child.wait();
    assert!(
        t.events
            .iter()
            .any(|e| e.path.as_deref() == Some("/nonexistent/cove-attach")),
        "{:#?}",
        t.events
    );
    assert_eq!(t.outcome.exit, ExitStatus::Code(7));
}

#[tokio::test]
async fn a_trace_without_command_or_pid_is_refused() {
    let env = setup().await;
    let err = run(&env.link, TraceRequest::default()).await.err().unwrap();
    match err {
        LinkError::Remote(e) => assert_eq!(e.kind, ErrorKind::InvalidRequest),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn ldd_resolves_a_host_binary_and_rejects_non_elf() {
    let env = setup().await;
    let ls = ["/usr/bin/ls", "/bin/ls"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    let r = ldd(&*env.link, ls).await.unwrap();
    assert!(
        r.libraries
            .iter()
            .any(|l| l.name == "libc.so.6" && l.path.is_some())
    );
    let err = ldd(&*env.link, "/etc/passwd").await.unwrap_err();
    assert!(matches!(err, LinkError::Remote(e) if e.kind == ErrorKind::InvalidRequest));
}
