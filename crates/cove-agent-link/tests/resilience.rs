//! Restarts, hangs, hostile peers and the supervisor relay, against the real cove-agent binary.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cove_agent_link::*;
use cove_proto::{Decoder, Frame, FrameKind, Hello, Role, to_payload};

const T: Duration = Duration::from_secs(10);

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

async fn echo(opener: &impl StreamOpener, word: &str) -> Result<String, LinkError> {
    let out = SharedBuf::default();
    let io = ExecIo {
        stdin: Input::None,
        stdout: Box::new(out.clone()),
        stderr: Box::new(SharedBuf::default()),
        control: None,
    };
    let st = exec(opener, sh(&format!("echo {word}")), io).await?;
    assert_eq!(st, ExitStatus::Code(0));
    Ok(String::from_utf8_lossy(&out.take()).trim().to_string())
}

#[tokio::test]
async fn agent_killed_and_restarted_the_link_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let agent = Agent::start(&broker.agent_sock);
    let link = AgentLink::connect(&broker.host_sock, T).await.unwrap();
    assert_eq!(echo(&link, "before").await.unwrap(), "before");
    let mut s = link
        .open_stream(OpenRequest::Exec(sh("exec sleep 100")))
        .await
        .unwrap();
    let sleeper = s.pid().unwrap() as i32;

    let mut states = link.state_changes();
    states.borrow_and_update();
    agent.signal(libc::SIGKILL);
    drop(agent);
    let agent = Agent::start(&broker.agent_sock);
    // The supervisor can see the new agent session (to log "agent restarted").
    tokio::time::timeout(T, states.changed())
        .await
        .expect("a state change")
        .unwrap();
    assert!(matches!(
        *states.borrow(),
        LinkState::Ready(_) | LinkState::Connecting
    ));
    // The in-flight stream fails with a clear error, bounded in time.
    let err = tokio::time::timeout(T, s.recv())
        .await
        .expect("stream error in time")
        .unwrap_err();
    assert!(matches!(err, LinkError::SessionReset { .. }), "{err}");
    link.wait_ready(T).await.unwrap();
    assert_eq!(echo(&link, "after").await.unwrap(), "after");
    drop(agent);
    // SAFETY: kill has no memory-safety preconditions (cleanup of the orphaned sleeper).
    unsafe { libc::kill(-sleeper, libc::SIGKILL) };
}

#[tokio::test]
async fn link_dropped_and_reconnected_the_agent_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let _agent = Agent::start(&broker.agent_sock);
    let link = AgentLink::connect(&broker.host_sock, T).await.unwrap();
    let s = link
        .open_stream(OpenRequest::Exec(sh("exec sleep 100")))
        .await
        .unwrap();
    let sleeper = s.pid().unwrap() as i32;
    // A supervisor that dies: the connection goes away without any goodbye.
    std::mem::forget(s);
    drop(link);
    let link = AgentLink::connect(&broker.host_sock, T).await.unwrap();
    assert_eq!(echo(&link, "again").await.unwrap(), "again");
    // The new session reset the old one's streams: the orphaned process was killed.
    assert!(
        wait_until(T, || !alive(sleeper)).await,
        "old session's process still running"
    );
    // QEMU serves one client at a time: the next supervisor connects after this one is gone.
    drop(link);
    // And again, several times in a row.
    for i in 0..3 {
        drop(link_again(&broker).await);
        let l = link_again(&broker).await;
        assert_eq!(
            echo(&l, &format!("round{i}")).await.unwrap(),
            format!("round{i}")
        );
    }
}

async fn link_again(b: &Broker) -> AgentLink {
    AgentLink::connect(&b.host_sock, T).await.unwrap()
}

#[tokio::test]
async fn hung_agent_gives_typed_errors_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let agent = Agent::start(&broker.agent_sock);
    let cfg = LinkConfig {
        op_timeout: Duration::from_secs(1),
        keepalive: Duration::from_millis(300),
        dead_after: Duration::from_secs(2),
    };
    let link = AgentLink::connect_with(&broker.host_sock, T, cfg)
        .await
        .unwrap();
    let s = link
        .open_stream(OpenRequest::Exec(sh("exec sleep 100")))
        .await
        .unwrap();
    let (_tx, mut rx) = s.split();

    agent.signal(libc::SIGSTOP);
    let err = link.ping().await.unwrap_err();
    assert!(
        matches!(err, LinkError::Timeout { what: "ping", .. }),
        "{err}"
    );
    let err = link
        .open_stream(OpenRequest::Ps)
        .await
        .err()
        .expect("open on a hung agent fails");
    // Which typed error comes first is a race between the open's 1 s deadline and the link's
    // 2 s `dead_after`, which the ping above already spent most of: either names the hang.
    assert!(
        matches!(
            err,
            LinkError::Timeout { .. } | LinkError::AgentUnresponsive { .. }
        ),
        "{err}"
    );
    // The running stream learns that the agent is unresponsive instead of waiting forever.
    let err = tokio::time::timeout(T, rx.recv())
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(matches!(err, LinkError::AgentUnresponsive { .. }), "{err}");
    assert!(!link.ready());

    agent.signal(libc::SIGCONT);
    link.wait_ready(T).await.unwrap();
    assert_eq!(echo(&link, "awake").await.unwrap(), "awake");
}

/// `copy_100mib_in_and_out_keeps_bytes_and_modes` failed under load with `AgentUnresponsive`:
/// the host's own runtime had not run for longer than `dead_after` (there, hashing 100 MiB on
/// the test's thread; in a supervisor, a loaded machine), and the keepalive then counted that
/// stall as the agent's silence. The agent is only unresponsive if it leaves a ping unanswered
/// while this side is awake to hear it.
#[tokio::test]
async fn a_host_that_could_not_run_does_not_blame_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let _agent = Agent::start(&broker.agent_sock);
    let cfg = LinkConfig {
        op_timeout: Duration::from_secs(5),
        keepalive: Duration::from_millis(300),
        dead_after: Duration::from_secs(2),
    };
    let link = AgentLink::connect_with(&broker.host_sock, T, cfg)
        .await
        .unwrap();
    for _ in 0..2 {
        link.ping().await.unwrap();
        // The runtime's only thread blocked for longer than `dead_after`: nothing of the link
        // runs meanwhile, as when the host is not scheduled.
        std::thread::sleep(Duration::from_secs(3));
        link.ping().await.unwrap();
        assert!(link.ready());
        assert_eq!(echo(&link, "still").await.unwrap(), "still");
    }
}

#[tokio::test]
async fn a_peer_sending_garbage_gets_a_typed_error_and_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let sender = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let chunk = pseudo_random(64 * 1024, 99);
        let mut sent = 0usize;
        while sent < 64 << 20 {
            if c.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        // Keep the connection open (drain what the host sends) until the host gives up.
        let _ = std::io::copy(&mut c, &mut std::io::sink());
        sent
    });
    let before = rss_kib();
    let err = AgentLink::connect(&path, Duration::from_secs(3))
        .await
        .err()
        .expect("garbage is not an agent");
    assert!(
        matches!(err, LinkError::Garbage { skipped, .. } if skipped > 0),
        "{err}"
    );
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "memory grew by {grown} KiB while reading garbage"
    );
    drop(err);
    assert!(
        tokio::task::spawn_blocking(move || sender.join().unwrap())
            .await
            .unwrap()
            > 0
    );
}

/// A fake agent that completes the handshake and then sends a corrupted frame. The link must
/// fail the open stream with a typed error and resynchronise with a fresh Hello request.
#[tokio::test]
async fn garbage_mid_session_triggers_an_explicit_resync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fake = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        let mut hellos = 0;
        loop {
            let f = match cove_proto::read_frame(&mut c, &mut dec) {
                Ok(f) => f,
                Err(cove_proto::ReadFrameError::Decode(_)) => continue,
                Err(_) => return hellos,
            };
            if f.kind == FrameKind::Hello {
                let h: Hello = cove_proto::from_payload("hello", &f.payload).unwrap();
                if h.reply {
                    continue;
                }
                hellos += 1;
                if hellos == 2 {
                    return hellos; // the host resynchronised
                }
                let reply = Hello {
                    protocol: h.protocol,
                    role: Role::Agent,
                    version: "fake".into(),
                    capabilities: vec![],
                    nonce: h.nonce,
                    reply: true,
                };
                cove_proto::write_frame(
                    &mut c,
                    &Frame::new(FrameKind::Hello, 0, 0, to_payload(&reply)),
                )
                .unwrap();
            } else if f.kind == FrameKind::Open {
                let started = to_payload(&StreamMsg::Started { pid: Some(1) });
                cove_proto::write_frame(&mut c, &Frame::new(FrameKind::Msg, 0, f.stream, started))
                    .unwrap();
                // A frame whose payload checksum is wrong, then random bytes.
                let mut bad = Frame::new(FrameKind::Data, 1, f.stream, b"corrupt".to_vec())
                    .encode()
                    .unwrap();
                let last = bad.len() - 1;
                bad[last] ^= 0xFF;
                c.write_all(&bad).unwrap();
                c.write_all(&pseudo_random(100_000, 3)).unwrap();
            }
        }
    });
    let link = AgentLink::connect(&path, T).await.unwrap();
    assert_eq!(link.info().unwrap().version, "fake");
    let mut s = link
        .open_stream(OpenRequest::Exec(sh("true")))
        .await
        .unwrap();
    let err = tokio::time::timeout(T, s.recv())
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(matches!(err, LinkError::SessionReset { .. }), "{err}");
    let hellos = tokio::task::spawn_blocking(move || fake.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        hellos, 2,
        "the host must send a fresh Hello request after a decode error"
    );
}

/// Starts a supervisor-like relay server: one relayed stream per accepted connection.
fn relay_server(link: Arc<AgentLink>, sock: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((c, _)) = l.accept().await else { return };
            let link = link.clone();
            tokio::spawn(async move {
                let _ = relay(c, &link, T).await;
            });
        }
    })
}

type BoxedOpen =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Stream, LinkError>> + Send>>;

/// What the CLI does per operation: connect to the supervisor, then open the stream on it.
fn relay_opener(sock: std::path::PathBuf) -> FnOpener<impl Fn(OpenRequest) -> BoxedOpen + Sync> {
    FnOpener(move |req| {
        let sock = sock.clone();
        Box::pin(async move {
            let c =
                tokio::net::UnixStream::connect(&sock)
                    .await
                    .map_err(|e| LinkError::Connect {
                        path: sock.clone(),
                        source: Arc::new(e),
                    })?;
            RemoteStream::open(c, req, T).await
        }) as BoxedOpen
    })
}

#[tokio::test]
async fn relay_carries_exec_copy_and_ps_with_flow_control() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let agent = Agent::start(&broker.agent_sock);
    let link = Arc::new(AgentLink::connect(&broker.host_sock, T).await.unwrap());
    let rsock = dir.path().join("control.sock");
    let _server = relay_server(link.clone(), rsock.clone());
    let cli = relay_opener(rsock);

    assert_eq!(echo(&cli, "relayed").await.unwrap(), "relayed");
    // Big output on both streams, through two hops of credit.
    let a = dir.path().join("a");
    std::fs::write(&a, pseudo_random(8 << 20, 11)).unwrap();
    let (o, e) = (SharedBuf::default(), SharedBuf::default());
    let io = ExecIo {
        stdin: Input::None,
        stdout: Box::new(o.clone()),
        stderr: Box::new(e.clone()),
        control: None,
    };
    let st = exec(
        &cli,
        sh(&format!("cat {0} & cat {0} >&2; wait; exit 3", a.display())),
        io,
    )
    .await
    .unwrap();
    assert_eq!(st, ExitStatus::Code(3));
    assert_eq!(sha256(&o.take()), sha256_file(&a));
    assert_eq!(sha256(&e.take()), sha256_file(&a));

    let remote = dir.path().join("copied").to_string_lossy().into_owned();
    copy_in(&cli, &a, &remote, None).await.unwrap();
    let back = dir.path().join("back");
    copy_out(&cli, &remote, &back, None).await.unwrap();
    assert_eq!(sha256_file(&back), sha256_file(&a));
    assert!(
        ps(&cli)
            .await
            .unwrap()
            .iter()
            .any(|p| p.pid == agent.pid() as u32)
    );

    // Errors cross the relay typed.
    let err = copy_out(&cli, "/nonexistent", &back, None)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Remote(_)), "{err}");

    // A CLI that goes away mid-exec gets its guest process killed.
    let s = cli
        .open(OpenRequest::Exec(sh("exec sleep 100")))
        .await
        .unwrap();
    let pid = s.pid().unwrap() as i32;
    drop(s);
    assert!(
        wait_until(T, || !alive(pid)).await,
        "relayed process survived its client"
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
async fn measure_exec_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let _agent = Agent::start(&broker.agent_sock);
    let link = Arc::new(AgentLink::connect(&broker.host_sock, T).await.unwrap());
    let rsock = dir.path().join("control.sock");
    let _server = relay_server(link.clone(), rsock.clone());
    let cli = relay_opener(rsock);
    let truth = ExecRequest {
        argv: vec!["true".into()],
        ..Default::default()
    };
    let mut report = Vec::new();
    for (name, relayed) in [("direct", false), ("relayed", true)] {
        let mut times = Vec::new();
        for _ in 0..200 {
            let io = ExecIo {
                stdin: Input::None,
                stdout: Box::new(tokio::io::sink()),
                stderr: Box::new(tokio::io::sink()),
                control: None,
            };
            let t = Instant::now();
            let st = if relayed {
                exec(&cli, truth.clone(), io).await
            } else {
                exec(&*link, truth.clone(), io).await
            };
            times.push(t.elapsed());
            assert_eq!(st.unwrap(), ExitStatus::Code(0));
        }
        times.sort();
        report.push(format!(
            "exec true {name}: p50 {:?} p99 {:?}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        ));
        assert!(percentile(&times, 0.99) < Duration::from_secs(1));
    }
    let mut pings = Vec::new();
    for _ in 0..200 {
        pings.push(link.ping().await.unwrap());
    }
    pings.sort();
    report.push(format!(
        "ping: p50 {:?} p99 {:?}",
        percentile(&pings, 0.5),
        percentile(&pings, 0.99)
    ));
    eprintln!("{}", report.join("\n"));
}

/// The agent as PID 1 (in a fresh pid namespace): orphans are reaped, and the reaper never steals
/// the exit status of the agent's own children.
#[tokio::test]
async fn agent_as_pid1_reaps_orphans_and_keeps_exit_codes() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: a pid namespace needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    // Wrapped in Agent so that a failing assertion still kills it (unshare --kill-child takes
    // the agent along).
    let child = std::process::Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "--kill-child"])
        .arg(agent_bin())
        .arg("--connect-unix")
        .arg(&broker.agent_sock)
        .arg("--no-poweroff")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    let _agent = Agent(child);
    let link = AgentLink::connect(&broker.host_sock, T).await.unwrap();
    let procs = ps(&link).await.unwrap();
    assert!(
        procs
            .iter()
            .any(|p| p.pid == 1 && p.command.contains("cove-agent")),
        "{procs:?}"
    );
    for i in 0..20 {
        let io = ExecIo {
            stdin: Input::None,
            stdout: Box::new(tokio::io::sink()),
            stderr: Box::new(tokio::io::sink()),
            control: None,
        };
        // Each command leaves an orphan behind that PID 1 must reap.
        let st = exec(&link, sh(&format!("sleep 0.05 & exit {i}")), io)
            .await
            .unwrap();
        assert_eq!(st, ExitStatus::Code(i));
    }
    let no_zombies = async {
        loop {
            let procs = ps(&link).await.unwrap();
            if !procs.iter().any(|p| p.state == "Z") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(T, no_zombies)
        .await
        .expect("orphans were not reaped");
}

/// A guest that floods pings and never reads the answers must not grow host memory.
#[tokio::test]
async fn ping_flood_without_reading_keeps_host_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let flooder = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        // Handshake properly, then stop reading for good.
        loop {
            let Ok(f) = cove_proto::read_frame(&mut c, &mut dec) else {
                continue;
            };
            if f.kind == FrameKind::Hello {
                let h: Hello = cove_proto::from_payload("hello", &f.payload).unwrap();
                let reply = Hello {
                    protocol: h.protocol,
                    role: Role::Agent,
                    version: "flood".into(),
                    capabilities: vec![],
                    nonce: h.nonce,
                    reply: true,
                };
                cove_proto::write_frame(
                    &mut c,
                    &Frame::new(FrameKind::Hello, 0, 0, to_payload(&reply)),
                )
                .unwrap();
                break;
            }
        }
        let mut batch = Vec::new();
        for i in 0u64..2048 {
            batch.extend(
                Frame::new(FrameKind::Ping, 0, 0, i.to_le_bytes().to_vec())
                    .encode()
                    .unwrap(),
            );
        }
        for _ in 0..1000 {
            // 2 million pings: 64 MiB of Pong answers if the host queued them all.
            if c.write_all(&batch).is_err() {
                break;
            }
        }
        c
    });
    let link = AgentLink::connect(&path, T).await.unwrap();
    let before = rss_kib();
    let conn = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 24 * 1024,
        "host memory grew by {grown} KiB under a ping flood"
    );
    drop(conn);
    drop(link);
}
