//! AgentLink against the real cove-agent binary over a unix socket (no VM).

mod common;

use std::time::Duration;

use common::*;
use cove_agent_link::*;
use cove_proto::{Channel, ErrorKind};

const T: Duration = Duration::from_secs(10);

struct Env {
    dir: tempfile::TempDir,
    _broker: Broker,
    agent: Agent,
    link: AgentLink,
}

async fn setup_with(cfg: LinkConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let agent = Agent::start(&broker.agent_sock);
    let link = AgentLink::connect_with(&broker.host_sock, T, cfg)
        .await
        .expect("connect to the agent");
    Env {
        dir,
        _broker: broker,
        agent,
        link,
    }
}

async fn setup() -> Env {
    setup_with(LinkConfig::default()).await
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

struct Captured {
    status: ExitStatus,
    out: Vec<u8>,
    err: Vec<u8>,
}

async fn run(
    opener: &impl StreamOpener,
    req: ExecRequest,
    stdin: Input,
) -> Result<Captured, LinkError> {
    let (o, e) = (SharedBuf::default(), SharedBuf::default());
    let io = ExecIo {
        stdin,
        stdout: Box::new(o.clone()),
        stderr: Box::new(e.clone()),
        control: None,
    };
    let status = exec(opener, req, io).await?;
    Ok(Captured {
        status,
        out: o.take(),
        err: e.take(),
    })
}

#[tokio::test]
async fn handshake_reports_agent_version_and_pings() {
    let env = setup().await;
    let info = env.link.info().expect("ready");
    assert_eq!(info.version, "0.1.0");
    assert!(info.capabilities.iter().any(|c| c == "exec"));
    let rtt = env.link.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
}

#[tokio::test]
async fn twenty_concurrent_execs_get_their_own_output() {
    let env = setup().await;
    let link = &env.link;
    let runs = (0..20).map(|i| async move {
        let c = run(
            link,
            sh(&format!("echo out-{i}; echo err-{i} >&2; exit {i}")),
            Input::None,
        )
        .await
        .unwrap();
        (i, c)
    });
    for (i, c) in futures_join_all(runs).await {
        assert_eq!(String::from_utf8_lossy(&c.out), format!("out-{i}\n"));
        assert_eq!(String::from_utf8_lossy(&c.err), format!("err-{i}\n"));
        assert_eq!(c.status, ExitStatus::Code(i));
    }
}

/// join_all without the futures crate: spawn nothing, just poll all on this task.
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut fs: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in fs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn interleaved_10mb_stdout_and_stderr_land_on_the_right_stream() {
    let env = setup().await;
    let a = env.dir.path().join("a");
    let b = env.dir.path().join("b");
    std::fs::write(&a, pseudo_random(10 << 20, 1)).unwrap();
    std::fs::write(&b, pseudo_random(10 << 20, 2)).unwrap();
    let script = format!("cat {} & cat {} >&2; wait", a.display(), b.display());
    let c = run(&env.link, sh(&script), Input::None).await.unwrap();
    assert_eq!(c.status, ExitStatus::Code(0));
    assert_eq!(c.out.len(), 10 << 20);
    assert_eq!(sha256(&c.out), sha256_file(&a));
    assert_eq!(sha256(&c.err), sha256_file(&b));
}

#[tokio::test]
async fn stdin_reaches_the_process_and_eof_ends_it() {
    let env = setup().await;
    let input = pseudo_random(3 << 20, 7);
    let req = ExecRequest {
        argv: vec!["cat".into()],
        ..Default::default()
    };
    let c = run(
        &env.link,
        req,
        Input::Reader(Box::new(std::io::Cursor::new(input.clone()))),
    )
    .await
    .unwrap();
    assert_eq!(c.status, ExitStatus::Code(0));
    assert_eq!(sha256(&c.out), sha256(&input));
}

#[tokio::test]
async fn env_cwd_and_signals_exit_status() {
    let env = setup().await;
    let mut req = sh("echo $FOO; pwd; kill -TERM $$");
    req.env = vec![("FOO".into(), "bar baz".into())];
    req.cwd = Some(env.dir.path().to_string_lossy().into_owned());
    let c = run(&env.link, req, Input::None).await.unwrap();
    let text = String::from_utf8_lossy(&c.out);
    assert_eq!(text, format!("bar baz\n{}\n", env.dir.path().display()));
    assert_eq!(c.status, ExitStatus::Signal(15));
}

#[tokio::test]
async fn missing_command_and_cwd_are_typed_remote_errors() {
    let env = setup().await;
    let req = ExecRequest {
        argv: vec!["/nonexistent/cmd".into()],
        ..Default::default()
    };
    match run(&env.link, req, Input::None).await {
        Err(LinkError::Remote(e)) => assert_eq!(e.kind, ErrorKind::NotFound, "{e}"),
        other => panic!(
            "expected a remote NotFound, got {:?}",
            other.map(|c| c.status)
        ),
    }
    let mut req = sh("true");
    req.cwd = Some("/nonexistent-dir".into());
    assert!(matches!(
        run(&env.link, req, Input::None).await,
        Err(LinkError::Remote(_))
    ));
    let mut req = sh("true");
    req.user = Some("no-such-user-here".into());
    let err = run(&env.link, req, Input::None)
        .await
        .err()
        .expect("unknown user fails");
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
}

#[tokio::test]
async fn user_switching_by_name_and_uid() {
    let env = setup().await;
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("not root: user switching needs root, checking only the current user");
    }
    let mut req = sh("id -u; id -g");
    req.user = Some("65534:65534".into());
    let c = run(&env.link, req, Input::None).await.unwrap();
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        assert_eq!(String::from_utf8_lossy(&c.out), "65534\n65534\n");
    }
}

#[tokio::test]
async fn tty_exec_has_a_terminal_resizes_and_ctrl_c_interrupts() {
    let env = setup().await;
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(4);
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(4);
    let out = SharedBuf::default();
    let mut req = sh("tty; stty size; read x; stty size; exec sleep 100");
    req.tty = Some(TtySize {
        rows: 30,
        cols: 100,
    });
    let io = ExecIo {
        stdin: Input::Chunks(in_rx),
        stdout: Box::new(out.clone()),
        stderr: Box::new(SharedBuf::default()),
        control: Some(ctl_rx),
    };
    let link = &env.link;
    let run = exec(link, req, io);
    let drive = async {
        assert!(
            wait_until(T, || String::from_utf8_lossy(&out.0.lock().unwrap())
                .contains("30 100"))
            .await
        );
        ctl_tx
            .send(StreamMsg::Resize(TtySize {
                rows: 40,
                cols: 120,
            }))
            .await
            .unwrap();
        in_tx.send(b"\n".to_vec()).await.unwrap();
        assert!(
            wait_until(T, || String::from_utf8_lossy(&out.0.lock().unwrap())
                .contains("40 120"))
            .await
        );
        // Ctrl-C as a byte: the guest PTY's line discipline turns it into SIGINT.
        in_tx.send(vec![3]).await.unwrap();
    };
    let (status, ()) = tokio::join!(run, drive);
    let text = String::from_utf8_lossy(&out.take()).into_owned();
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(status.unwrap(), ExitStatus::Signal(2), "{text}");
}

#[tokio::test]
async fn ps_lists_processes_from_proc() {
    let env = setup().await;
    let procs = ps(&env.link).await.unwrap();
    let me = procs
        .iter()
        .find(|p| p.pid == env.agent.pid() as u32)
        .expect("agent in ps");
    assert!(me.command.contains("cove-agent"), "{}", me.command);
    assert!(me.rss_bytes > 0);
    assert!(procs.iter().any(|p| p.pid == 1));
}

#[tokio::test]
async fn slow_reader_backpressures_the_guest_process() {
    let env = setup().await;
    let mut s = env
        .link
        .open_stream(OpenRequest::Exec(sh("head -c 200000000 /dev/zero")))
        .await
        .unwrap();
    let pid = s.pid().unwrap() as i32;
    // Without reading, `head` must block once the window is full instead of finishing. An
    // unthrottled `head` writes 200 MB of zeros in well under 500 ms, so give it that long.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "producer finished: no backpressure");
    let StreamEvent::Data(Channel::Stdout, first) = s.recv().await.unwrap() else {
        panic!()
    };
    assert!(!first.is_empty());
    drop(s); // abandoning the stream kills the process group
    assert!(
        wait_until(T, || !alive(pid)).await,
        "process not killed on reset"
    );
}

#[tokio::test]
async fn copy_100mib_in_and_out_keeps_bytes_and_modes() {
    use std::os::unix::fs::PermissionsExt;
    let env = setup().await;
    let d = env.dir.path();
    let src = d.join("big.bin");
    std::fs::write(&src, pseudo_random(100 << 20, 42)).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir(d.join("guest")).unwrap();
    let remote = d.join("guest/big.bin").to_string_lossy().into_owned();

    let t = std::time::Instant::now();
    let n = copy_in(&env.link, &src, &remote, None).await.unwrap();
    let up = t.elapsed();
    assert_eq!(n, 100 << 20);
    assert_eq!(
        sha256_file(src.as_path()),
        sha256_file(std::path::Path::new(&remote))
    );
    assert_eq!(
        std::fs::metadata(&remote).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let back = d.join("back.bin");
    let seen = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| seen.store(n, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::Instant::now();
    copy_out(&env.link, &remote, &back, Some(&progress))
        .await
        .unwrap();
    let down = t.elapsed();
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 100 << 20);
    assert_eq!(sha256_file(&back), sha256_file(&src));
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o640
    );
    eprintln!(
        "copy 100 MiB over unix socket: in {:.0} MiB/s, out {:.0} MiB/s",
        100.0 / up.as_secs_f64(),
        100.0 / down.as_secs_f64()
    );
}

#[tokio::test]
async fn copy_directories_both_ways() {
    use std::os::unix::fs::PermissionsExt;
    let env = setup().await;
    let d = env.dir.path();
    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tree.join("sub/deeper/data"), pseudo_random(300_000, 5)).unwrap();
    std::os::unix::fs::symlink("run.sh", tree.join("link")).unwrap();
    let gdir = d.join("guest");
    std::fs::create_dir(&gdir).unwrap();
    // Onto an existing directory: lands inside it under its own name.
    copy_in(&env.link, &tree, &gdir.to_string_lossy(), None)
        .await
        .unwrap();
    let copied = gdir.join("tree");
    assert_eq!(
        std::fs::metadata(copied.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        sha256_file(&copied.join("sub/deeper/data")),
        sha256_file(&tree.join("sub/deeper/data"))
    );
    assert_eq!(
        std::fs::read_link(copied.join("link")).unwrap(),
        std::path::Path::new("run.sh")
    );
    // And back out to a new path.
    let out = d.join("out");
    copy_out(&env.link, &copied.to_string_lossy(), &out, None)
        .await
        .unwrap();
    assert_eq!(
        sha256_file(&out.join("sub/deeper/data")),
        sha256_file(&tree.join("sub/deeper/data"))
    );
    assert_eq!(
        std::fs::metadata(out.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    // Errors are typed and name the path.
    let err = copy_out(&env.link, "/nonexistent/file", &out, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Remote(e) if e.kind == ErrorKind::NotFound),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_is_refused_by_an_agent_started_with_no_poweroff() {
    let env = setup().await;
    let err = shutdown(&env.link, false).await.unwrap_err();
    assert!(
        matches!(&err, LinkError::Remote(e) if e.kind == ErrorKind::Unsupported),
        "{err}"
    );
}

#[tokio::test]
async fn tty_stdin_eof_ends_a_reader() {
    let env = setup().await;
    let req = ExecRequest {
        argv: vec!["cat".into()],
        tty: Some(TtySize { rows: 24, cols: 80 }),
        ..Default::default()
    };
    let input = Input::Reader(Box::new(std::io::Cursor::new(b"hello tty\n".to_vec())));
    let c = tokio::time::timeout(T, run(&env.link, req, input))
        .await
        .expect("cat ended")
        .unwrap();
    assert_eq!(c.status, ExitStatus::Code(0));
    assert!(String::from_utf8_lossy(&c.out).contains("hello tty"));
}

#[tokio::test]
async fn sigint_to_the_cli_is_forwarded_to_the_guest_command() {
    let env = setup().await;
    let control = forward_signals();
    let io = ExecIo {
        stdin: Input::None,
        stdout: Box::new(SharedBuf::default()),
        stderr: Box::new(SharedBuf::default()),
        control: Some(control),
    };
    let link = &env.link;
    let run = exec(
        link,
        ExecRequest {
            argv: vec!["sleep".into(), "101".into()],
            ..Default::default()
        },
        io,
    );
    let interrupt = async {
        // Wait until the guest process runs, then "press Ctrl-C" on this (the CLI) process.
        assert!(wait_until(T, procs_named_sleep_101).await);
        // SAFETY: raising a signal this process handles (tokio installed the handler).
        unsafe { libc::raise(libc::SIGINT) };
    };
    let (status, ()) = tokio::join!(run, interrupt);
    assert_eq!(status.unwrap(), ExitStatus::Signal(libc::SIGINT));
}

#[tokio::test]
async fn commands_start_with_no_signal_ignored_whatever_the_agent_ignores() {
    // The test agent runs with SIGINT and SIGQUIT ignored (common::Agent::start).
    let env = setup().await;
    let req = ExecRequest {
        argv: vec!["grep".into(), "SigIgn".into(), "/proc/self/status".into()],
        ..Default::default()
    };
    let c = tokio::time::timeout(T, run(&env.link, req, Input::None))
        .await
        .expect("grep ended")
        .unwrap();
    let out = String::from_utf8_lossy(&c.out);
    let mask = out
        .strip_prefix("SigIgn:")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("unexpected status line {out:?}"));
    // Signals 1-31; the C library keeps the real-time signals it uses for itself.
    assert_eq!(mask & 0x7fff_ffff, 0, "ignored signals: {mask:#x}");
}

fn procs_named_sleep_101() -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00101\x00"))
}
