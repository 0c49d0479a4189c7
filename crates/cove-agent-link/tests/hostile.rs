//! The hostile-agent harness (issue 10): a scripted peer on the agent socket that breaks every
//! rule of the protocol, while a real cove-agent on another link (another VM) keeps working.
//! For each attack the host's queues stay within the stated bound (`LinkStats`), the caller
//! gets a typed error, and nothing panics.

mod common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use cove_agent_link::*;
use cove_proto::{
    Channel, Decoder, FileMeta, Frame, FrameKind, Hello, MAX_FRAME, Role, from_payload, to_payload,
};

const T: Duration = Duration::from_secs(10);
/// What one link may queue for a peer that never reads: the reply cap, one sync preamble and
/// one frame of slack (no stream is sending data in these tests).
const QUEUE_BOUND: usize = (4 << 20) + 2 * MAX_FRAME;

/// A scripted peer: accepts the host's connection and runs `script` on a thread.
struct Peer {
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn start(dir: &Path, name: &str, script: impl FnOnce(Conn) + Send + 'static) -> Peer {
        let path = dir.join(name);
        let l = UnixListener::bind(&path).unwrap();
        let thread = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            script(Conn {
                c,
                dec: Decoder::new(),
            })
        });
        Peer {
            path,
            thread: Some(thread),
        }
    }

    async fn join(mut self) {
        let t = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || t.join().unwrap())
            .await
            .unwrap();
    }
}

struct Conn {
    c: UnixStream,
    dec: Decoder,
}

fn hello(nonce: u64, reply: bool) -> Vec<u8> {
    let h = Hello {
        protocol: cove_proto::PROTOCOL_VERSION,
        role: Role::Agent,
        version: "hostile".into(),
        capabilities: vec![],
        nonce,
        reply,
    };
    Frame::new(FrameKind::Hello, 0, 0, to_payload(&h))
        .encode()
        .unwrap()
}

fn frame(kind: FrameKind, ch: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    Frame::new(kind, ch, stream, payload.to_vec())
        .encode()
        .unwrap()
}

fn msg(stream: u32, m: &StreamMsg) -> Vec<u8> {
    frame(FrameKind::Msg, 0, stream, &to_payload(m))
}

impl Conn {
    fn read(&mut self) -> Option<Frame> {
        loop {
            match cove_proto::read_frame(&mut self.c, &mut self.dec) {
                Ok(f) => return Some(f),
                Err(cove_proto::ReadFrameError::Decode(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Answers the host's Hello request.
    fn handshake(&mut self) {
        loop {
            let f = self.read().expect("the host sends a Hello");
            if f.kind == FrameKind::Hello {
                let h: Hello = from_payload("hello", &f.payload).unwrap();
                if !h.reply {
                    self.send(&hello(h.nonce, true));
                    return;
                }
            }
        }
    }

    /// Reads until the host opens a stream; answers Started and returns the stream id.
    fn accept_open(&mut self) -> (u32, OpenRequest) {
        loop {
            let f = self.read().expect("the host opens a stream");
            if f.kind == FrameKind::Open {
                let req: OpenRequest = from_payload("open", &f.payload).unwrap();
                self.send(&msg(f.stream, &StreamMsg::Started { pid: Some(1) }));
                return (f.stream, req);
            }
        }
    }

    fn send(&mut self, b: &[u8]) -> bool {
        self.c.write_all(b).is_ok()
    }

    /// Keeps reading (so the host is never blocked on us) until the host hangs up.
    fn drain(mut self) {
        let _ = std::io::copy(&mut self.c, &mut std::io::sink());
    }
}

/// A real agent on its own link: "another VM" that must keep working during each attack.
struct Bystander {
    _dir: tempfile::TempDir,
    _broker: Broker,
    _agent: Agent,
    link: AgentLink,
}

impl Bystander {
    async fn start() -> Bystander {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path());
        let agent = Agent::start(&broker.agent_sock);
        let link = AgentLink::connect(&broker.host_sock, T).await.unwrap();
        Bystander {
            _dir: dir,
            _broker: broker,
            _agent: agent,
            link,
        }
    }

    async fn still_works(&self) {
        let req = ExecRequest {
            argv: vec!["echo".into(), "alive".into()],
            ..Default::default()
        };
        let out = SharedBuf::default();
        let io = ExecIo {
            stdin: Input::None,
            stdout: Box::new(out.clone()),
            stderr: Box::new(tokio::io::sink()),
            control: None,
        };
        let st = tokio::time::timeout(T, exec(&self.link, req, io))
            .await
            .expect("the other VM answers in time")
            .unwrap();
        assert_eq!(st.shell_code(), 0);
        assert_eq!(out.take(), b"alive\n");
    }
}

/// Regression (finding 1): each decode error queued a 64 KiB preamble plus a Hello outside the
/// reply cap, and a peer that resyncs with its own Hello request can provoke one per ~115
/// bytes: 5000 rounds queued ~320 MiB for a peer that never reads.
#[tokio::test]
async fn resync_flood_without_reading_keeps_the_queue_bounded() {
    let other = Bystander::start().await;
    let dir = tempfile::tempdir().unwrap();
    const ROUNDS: u64 = 5000;
    let peer = Peer::start(dir.path(), "flood.sock", |mut c| {
        c.handshake();
        // From here on, never read: resync at will with our own Hello, then garbage.
        let mut batch = Vec::new();
        for i in 0..ROUNDS {
            batch.extend(hello(1000 + i, false));
            batch.extend([0x55u8; 16]);
        }
        c.send(&batch);
        std::thread::sleep(Duration::from_secs(30));
    });
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let processed = wait_until(Duration::from_secs(30), || {
        link.stats().skipped_bytes >= ROUNDS * 16
    })
    .await;
    assert!(processed, "the flood was not processed: {:?}", link.stats());
    let stats = link.stats();
    assert!(
        stats.queued_peak <= QUEUE_BOUND,
        "queued {} bytes for a peer that never reads (bound {QUEUE_BOUND}): {stats:?}",
        stats.queued_peak
    );
    assert!(stats.suppressed_warnings > 0, "warnings are rate-limited");
    other.still_works().await;
    drop(link);
    drop(peer);
}

/// Regression (finding 1): Window frames added credit without a ceiling (enough of them
/// overflow the semaphore, which panics the reader). Over-credit is now a protocol error on
/// that stream, and the link stays up.
#[tokio::test]
async fn over_credit_resets_the_stream_and_the_link_survives() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "credit.sock", |mut c| {
        c.handshake();
        let (id, _) = c.accept_open();
        for _ in 0..4 {
            c.send(&frame(FrameKind::Window, 0, id, &u32::MAX.to_le_bytes()));
        }
        // Answer pings so the link stays up; keep reading until the host leaves.
        while let Some(f) = c.read() {
            if f.kind == FrameKind::Ping {
                c.send(&frame(FrameKind::Pong, 0, 0, &f.payload));
            }
        }
    });
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let mut s = link.open_stream(OpenRequest::Ps).await.unwrap();
    let err = tokio::time::timeout(T, s.recv())
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Protocol(m) if m.contains("more credit")),
        "{err}"
    );
    assert!(link.ping().await.is_ok(), "the link survives");
    drop(s);
    drop(link);
    peer.join().await;
}

/// Regression (finding 1): end-of-stream frames cost no credit and each became an event in the
/// stream's unbounded queue; a peer could queue millions. Only the first per channel counts.
#[tokio::test]
async fn repeated_eof_frames_do_not_queue_up() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "eof.sock", |mut c| {
        c.handshake();
        let (id, _) = c.accept_open();
        let one = frame(FrameKind::Eof, Channel::Stdout as u8, id, &[]);
        let mut batch = Vec::with_capacity(one.len() * 10_000);
        for _ in 0..10_000 {
            batch.extend_from_slice(&one);
        }
        for _ in 0..20 {
            c.send(&batch);
        }
        c.send(&msg(id, &StreamMsg::Exit(ExitStatus::Code(3))));
        c.send(&frame(FrameKind::Close, 0, id, &[]));
        c.drain();
    });
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let mut s = link
        .open_stream(OpenRequest::Exec(ExecRequest {
            argv: vec!["x".into()],
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(s.recv().await.unwrap(), StreamEvent::Eof(Channel::Stdout));
    assert_eq!(
        s.recv().await.unwrap(),
        StreamEvent::Msg(StreamMsg::Exit(ExitStatus::Code(3))),
        "200,000 repeated Eof frames must not reach the consumer"
    );
    drop(s);
    drop(link);
    peer.join().await;
}

/// Oversize and malformed frames: a header announcing more than the limit, a Msg that is not
/// JSON, an unknown kind. The stream gets a typed error; the link resynchronises and works.
#[tokio::test]
async fn malformed_and_oversize_frames_give_typed_errors_and_the_link_recovers() {
    let other = Bystander::start().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "bad.sock", |mut c| {
        c.handshake();
        let (id, _) = c.accept_open();
        c.send(&frame(FrameKind::Msg, 0, id, b"{not json"));
        let (_, _) = c.accept_open();
        // A header that announces 16 MiB, with valid header checksum.
        let mut h = Vec::new();
        h.extend_from_slice(&cove_proto::MAGIC);
        h.extend_from_slice(&[FrameKind::Data as u8, 0, 0, 0]);
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&(16u32 << 20).to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32(&h[..20]);
        h.extend_from_slice(&crc.to_le_bytes());
        c.send(&h);
        c.send(&pseudo_random(200_000, 7));
        // Then be a well-behaved agent again: answer Hellos and pings.
        while let Some(f) = c.read() {
            match f.kind {
                FrameKind::Hello => {
                    let h: Hello = from_payload("hello", &f.payload).unwrap();
                    if !h.reply {
                        c.send(&hello(h.nonce, true));
                    }
                }
                FrameKind::Ping => {
                    c.send(&frame(FrameKind::Pong, 0, 0, &f.payload));
                }
                _ => {}
            }
        }
    });
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let mut s = link.open_stream(OpenRequest::Ps).await.unwrap();
    let err = s.recv().await.unwrap_err();
    assert!(matches!(err, LinkError::Protocol(_)), "{err}");
    let mut s2 = link.open_stream(OpenRequest::Ps).await.unwrap();
    let err = tokio::time::timeout(T, s2.recv())
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(matches!(err, LinkError::SessionReset { .. }), "{err}");
    link.wait_ready(T).await.expect("the link resynchronises");
    assert!(link.ping().await.is_ok());
    other.still_works().await;
    drop(link);
    peer.join().await;
}

fn crc32(b: &[u8]) -> u32 {
    // The CRC-32 (IEEE) the frame header uses, bit by bit: no extra dev-dependency.
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One tar entry with the name written raw (the tar crate's builder refuses `..`, a guest
/// does not have to).
fn tar_entry(
    out: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: &str,
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A peer that answers one FileGet with `meta` and `content`, then finishes the stream.
fn serve_get(meta: FileMeta, content: Vec<u8>) -> impl FnOnce(Conn) + Send + 'static {
    move |mut c| {
        c.handshake();
        let (id, _) = c.accept_open();
        c.send(&msg(id, &StreamMsg::FileMeta(meta)));
        for chunk in content.chunks(cove_proto::MAX_PAYLOAD) {
            c.send(&frame(FrameKind::Data, 0, id, chunk));
        }
        c.send(&frame(FrameKind::Eof, 0, id, &[]));
        c.send(&msg(id, &StreamMsg::Done));
        c.send(&frame(FrameKind::Close, 0, id, &[]));
        c.drain();
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Regression (finding 2): `cove cp VM:/file .` applied the guest's full mode, so a guest could
/// plant a setuid (or world-writable) file on the host. Single files and trees.
#[tokio::test]
async fn copy_out_strips_setuid_setgid_sticky_and_foreign_write() {
    let dir = tempfile::tempdir().unwrap();
    let meta = FileMeta {
        kind: cove_proto::FileKind::File,
        size: 4,
        mode: 0o106777,
        mtime: 0,
    };
    let peer = Peer::start(dir.path(), "file.sock", serve_get(meta, b"evil".to_vec()));
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let dst = dir.path().join("suid");
    copy_out(&link, "/bin/suid", &dst, None).await.unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), b"evil");
    assert_eq!(mode_of(&dst), 0o755);
    drop(link);
    peer.join().await;

    let mut tar = Vec::new();
    tar_entry(&mut tar, "./", tar::EntryType::Directory, 0o1777, b"", "");
    tar_entry(
        &mut tar,
        "./sub/",
        tar::EntryType::Directory,
        0o2777,
        b"",
        "",
    );
    tar_entry(
        &mut tar,
        "./sub/root-shell",
        tar::EntryType::Regular,
        0o4755,
        b"sh",
        "",
    );
    tar_entry(
        &mut tar,
        "./open",
        tar::EntryType::Regular,
        0o666,
        b"rw",
        "",
    );
    tar_entry(&mut tar, "./null", tar::EntryType::Char, 0o666, b"", "");
    tar.extend_from_slice(&[0u8; 1024]);
    let meta = FileMeta {
        kind: cove_proto::FileKind::Dir,
        size: 0,
        mode: 0o3777,
        mtime: 0,
    };
    let peer = Peer::start(dir.path(), "tree.sock", serve_get(meta, tar));
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let dst = dir.path().join("tree");
    copy_out(&link, "/srv/tree", &dst, None).await.unwrap();
    assert_eq!(mode_of(&dst), 0o755);
    assert_eq!(mode_of(&dst.join("sub")), 0o755);
    assert_eq!(mode_of(&dst.join("sub/root-shell")), 0o755);
    assert_eq!(mode_of(&dst.join("open")), 0o644);
    assert!(!dst.join("null").exists(), "device nodes are never created");
    drop(link);
    peer.join().await;
}

/// Finding 2: entry names that escape the destination are refused with a clear error and
/// nothing is written outside it: `..`, absolute names, and a symlink pointing out followed
/// by an entry written through it.
#[tokio::test]
async fn copy_out_refuses_entries_that_escape_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            {
                let mut t = Vec::new();
                tar_entry(
                    &mut t,
                    "./../outside/pwned",
                    tar::EntryType::Regular,
                    0o644,
                    b"x",
                    "",
                );
                t
            },
            "..",
        ),
        (
            "absolute",
            {
                let mut t = Vec::new();
                let abs = format!("{}/pwned", outside.display());
                tar_entry(&mut t, &abs, tar::EntryType::Regular, 0o644, b"x", "");
                t
            },
            "absolute",
        ),
        (
            "symlink",
            {
                let mut t = Vec::new();
                let target = outside.display().to_string();
                tar_entry(
                    &mut t,
                    "./out",
                    tar::EntryType::Symlink,
                    0o777,
                    b"",
                    &target,
                );
                tar_entry(
                    &mut t,
                    "./out/pwned",
                    tar::EntryType::Regular,
                    0o644,
                    b"x",
                    "",
                );
                t
            },
            "symlink",
        ),
        (
            "hardlink",
            {
                let mut t = Vec::new();
                tar_entry(
                    &mut t,
                    "./h",
                    tar::EntryType::Link,
                    0o644,
                    b"",
                    "../outside/secret",
                );
                t
            },
            "..",
        ),
    ];
    for (name, mut tar, says) in cases {
        tar.extend_from_slice(&[0u8; 1024]);
        let meta = FileMeta {
            kind: cove_proto::FileKind::Dir,
            size: 0,
            mode: 0o755,
            mtime: 0,
        };
        let peer = Peer::start(dir.path(), &format!("{name}.sock"), serve_get(meta, tar));
        let link = AgentLink::connect(&peer.path, T).await.unwrap();
        let dst = dir.path().join(format!("dst-{name}"));
        let err = copy_out(&link, "/srv/tree", &dst, None)
            .await
            .expect_err(name);
        let text = err.to_string();
        assert!(
            text.contains("refusing") && text.contains(says),
            "{name}: {text}"
        );
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{name}: something was written outside the destination"
        );
        drop(link);
        peer.join().await;
    }
}

/// Finding 9: `cove ps` and `cove cp` waited forever on a guest that accepted the request and
/// went silent (while still answering pings). Each step now has a deadline and a typed error
/// that names the stall.
#[tokio::test]
async fn stalled_guest_fails_ps_and_cp_with_a_clear_error() {
    set_stall_timeout(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "stall.sock", |mut c| {
        c.handshake();
        let (_, _) = c.accept_open(); // ps: Started, then nothing
        let (id, _) = c.accept_open(); // cp out: metadata and a little content, then nothing
        c.send(&msg(
            id,
            &StreamMsg::FileMeta(FileMeta {
                kind: cove_proto::FileKind::File,
                size: 1 << 20,
                mode: 0o644,
                mtime: 0,
            }),
        ));
        c.send(&frame(FrameKind::Data, 0, id, b"partial"));
        // Keep answering pings: the agent looks alive, only the operations stall.
        while let Some(f) = c.read() {
            if f.kind == FrameKind::Ping {
                c.send(&frame(FrameKind::Pong, 0, 0, &f.payload));
            }
        }
    });
    let link = AgentLink::connect(&peer.path, T).await.unwrap();
    let t = std::time::Instant::now();
    let err = ps(&link).await.unwrap_err();
    assert!(matches!(err, LinkError::Stalled { .. }), "{err}");
    assert!(err.to_string().contains("stalled"), "{err}");
    let err = copy_out(&link, "/big", &dir.path().join("big"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LinkError::Stalled { what, .. } if what == "file content"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(link.ping().await.is_ok());
    drop(link);
    peer.join().await;
}
