//! Control messages. They travel as JSON in Hello/Open/Msg frames: small, self-describing and easy
//! to read in a hex dump; bulk bytes travel raw in Data frames.

use serde::{Deserialize, Serialize};

/// Version of this protocol. A peer with a different major version is refused at handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Who sent a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Agent,
}

/// Session (re)start. See [`crate::Session`] for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub role: Role,
    /// Software version of the sender (the agent's crate version, or the host's).
    pub version: String,
    /// Optional features the sender supports, e.g. "exec", "tty", "file", "ps", "shutdown".
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Random per-session value; a reply echoes the request's nonce.
    pub nonce: u64,
    /// False for a request (receiver resets and replies), true for a reply.
    #[serde(default)]
    pub reply: bool,
}

/// Terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Run a command in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Added to (and overriding) the agent's base environment (PATH, HOME, USER, TERM).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or numeric uid, optionally `:group`/`:gid`; resolved from /etc/passwd and
    /// /etc/group in the guest.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a PTY of this size (stdout and stderr merged on the Stdout channel).
    #[serde(default)]
    pub tty: Option<TtySize>,
}

/// Write a file or directory in the guest. Content follows as Data frames on [`crate::Channel::Data`]
/// then an Eof: raw bytes for a file, a tar archive (entries relative to `path`) for a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub path: String,
    pub kind: FileKind,
    /// Permission bits for a file or the top directory.
    pub mode: u32,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// What the host asks for when it opens a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OpenRequest {
    Exec(ExecRequest),
    /// Read a file (raw bytes) or a directory (tar archive) after a [`StreamMsg::FileMeta`].
    FileGet {
        path: String,
    },
    FilePut(PutRequest),
    /// Answered by [`StreamMsg::Stat`].
    Stat {
        path: String,
    },
    /// Answered by one [`StreamMsg::Proc`] per process.
    Ps,
    /// sync + poweroff (or reboot); answered by [`StreamMsg::Done`] just before.
    Shutdown {
        #[serde(default)]
        reboot: bool,
    },
    /// Sent by the host right after a restore from a snapshot: what the snapshot froze and this
    /// machine must not share with its siblings. Answered by [`StreamMsg::Done`].
    Fixup(FixupRequest),
    /// Sent after [`OpenRequest::Fixup`] to a guest restored from another VM's snapshot on cove
    /// networks: each NIC still has that VM's MAC and address and takes its own. Answered by
    /// [`StreamMsg::Done`] once every NIC has moved. A request of its own, not a field of
    /// `Fixup`: an agent too old to know it refuses it, where it would ignore a new field and
    /// leave the guest speaking with the other VM's identity.
    MoveNics {
        nics: Vec<NicMove>,
    },
    /// Run a command (or attach to a process) under the agent's own tracer. Answered like an
    /// exec (output on Stdout/Stderr, then `Exit`), with [`StreamMsg::Trace`] events meanwhile
    /// and one [`StreamMsg::TraceSummary`] before `Exit`.
    Trace(TraceRequest),
    /// Resolve an ELF file's shared-library dependencies the way the guest's loader would;
    /// answered by one [`StreamMsg::Ldd`].
    Ldd {
        path: String,
    },
}

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TraceRequest {
    /// The command to start under the tracer (no TTY; stdin is empty). Exactly one of `exec`
    /// and `pid` is set.
    #[serde(default)]
    pub exec: Option<ExecRequest>,
    /// A running process to attach to (with all its threads, and every child it starts).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Report every file access, not only the failed ones.
    #[serde(default)]
    pub all: bool,
}

/// One system call the tracer reports: a failed one, or (with `all`) any path access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub pid: u32,
    /// The system call's name (`openat`, `execve`, `connect`, …).
    pub syscall: String,
    /// The path it named (resolved against a directory descriptor when relative), or the
    /// address for `connect`/`bind`. At most [`MAX_TRACE_PATH`] bytes.
    #[serde(default)]
    pub path: Option<String>,
    /// The return value; negative errno on failure.
    pub result: i64,
    /// The errno's symbolic name on failure (`ENOENT`).
    #[serde(default)]
    pub errno: Option<String>,
}

/// Longest path the tracer reads from a tracee (Linux's PATH_MAX).
pub const MAX_TRACE_PATH: usize = 4096;
/// Most libraries a [`TraceSummary`] lists, and most paths per library.
pub const MAX_SUMMARY_LIBS: usize = 256;
pub const MAX_SUMMARY_PATHS: usize = 32;

/// A shared library the traced processes looked for and never opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingLibrary {
    /// The file name (`libnss_systemd.so.2`).
    pub name: String,
    /// Every path tried, in order.
    pub searched: Vec<String>,
}

/// The end of a trace: what was missing, and how much was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TraceSummary {
    pub missing_libraries: Vec<MissingLibrary>,
    /// System calls stopped at (entry and exit count as one).
    pub syscalls: u64,
    /// Failed calls among the watched ones.
    pub failures: u64,
    /// Processes and threads traced.
    pub processes: u32,
}

/// How one DT_NEEDED entry was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LddEntry {
    /// As written in DT_NEEDED.
    pub name: String,
    /// Where the loader would find it; `None` when it would not.
    pub path: Option<String>,
    /// Which file needed it first (the binary, or a library found before).
    pub needed_by: String,
    /// Directories searched, in order, when not found.
    #[serde(default)]
    pub searched: Vec<String>,
}

/// The answer to [`OpenRequest::Ldd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LddReport {
    pub path: String,
    /// The program interpreter (PT_INTERP), if any; `None` for a static binary.
    pub interpreter: Option<String>,
    /// Whether the interpreter exists in the guest.
    pub interpreter_found: bool,
    /// Machine and class, e.g. `x86_64`.
    pub machine: String,
    /// Every library of the dependency tree, breadth first, each once.
    pub libraries: Vec<LddEntry>,
}

/// See [`OpenRequest::Fixup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixupRequest {
    /// The host's wall clock, nanoseconds since the epoch, read just before sending.
    pub unix_nanos: u64,
    /// Fresh host entropy, credited to the guest kernel's pool and forcing a CRNG reseed
    /// (at most [`FixupRequest::MAX_ENTROPY`] bytes).
    pub entropy: Vec<u8>,
    /// The clone's own hostname, when it is a clone.
    pub hostname: Option<String>,
    /// The clone's own machine-id (32 lowercase hex digits), when it is a clone.
    pub machine_id: Option<String>,
}

impl FixupRequest {
    pub const MAX_ENTROPY: usize = 512;
}

/// One NIC of [`OpenRequest::MoveNics`]: the NIC whose MAC is `from_mac` takes `mac` and
/// `address/prefix` (instead of its old address), with the default route through `router` when
/// the network has one, as its DHCP server would have said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicMove {
    pub from_mac: String,
    pub mac: String,
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    #[serde(default)]
    pub router: Option<std::net::Ipv4Addr>,
}

impl NicMove {
    /// More NICs than any VM has: a longer list is refused.
    pub const MAX: usize = 16;
}

/// Metadata of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

/// One process, read from /proc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub user: String,
    /// CPU use averaged over the process lifetime, percent of one CPU.
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub state: String,
    /// Full command line, or `[comm]` for kernel threads.
    pub command: String,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// Class of a remote failure, so callers can map it to an exit code or a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    InvalidRequest,
    Unsupported,
    Io,
    Internal,
    /// The agent could not be reached (not connected yet, hung, restarted): retry later.
    Unavailable,
}

/// A failure reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorMsg {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorMsg {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorMsg {
            kind,
            message: message.into(),
        }
    }

    /// Maps an OS error to a kind and a message that names what was attempted.
    pub fn from_io(what: &str, e: &std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        ErrorMsg::new(kind, format!("{what}: {e}"))
    }
}

/// Messages within a stream (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StreamMsg {
    /// Agent: the request was accepted (first message on every successful stream).
    Started {
        #[serde(default)]
        pid: Option<u32>,
    },
    /// Host: new terminal size for a TTY exec.
    Resize(TtySize),
    /// Host: deliver a signal to the exec'd process group.
    Signal { signal: i32 },
    /// Agent: the exec'd process ended; all its output was sent before this.
    Exit(ExitStatus),
    /// Agent: metadata of the path a FileGet is about to send.
    FileMeta(FileMeta),
    /// Agent: answer to Stat; `None` if the path does not exist.
    Stat { meta: Option<FileMeta> },
    /// Agent: one process of a Ps.
    Proc(ProcInfo),
    /// Agent: the operation completed.
    Done,
    /// Either side: the operation failed.
    Error(ErrorMsg),
    /// Agent: one traced system call (see [`OpenRequest::Trace`]).
    Trace(TraceEvent),
    /// Agent: the end of a trace, sent before `Exit`.
    TraceSummary(TraceSummary),
    /// Agent: the answer to [`OpenRequest::Ldd`].
    Ldd(LddReport),
}

/// A message that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what} message: {source}; the peer speaks an incompatible protocol version")]
pub struct MsgError {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// JSON-encodes a message (infallible for these types).
pub fn to_payload<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these plain data types cannot fail (no maps with non-string keys).
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Parses a JSON payload.
pub fn from_payload<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, MsgError> {
    serde_json::from_slice(bytes).map_err(|source| MsgError { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_request_roundtrip_and_shape() {
        let req = OpenRequest::Exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            tty: Some(TtySize { rows: 24, cols: 80 }),
            ..Default::default()
        });
        let bytes = to_payload(&req);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"op\":\"exec\""), "{text}");
        assert_eq!(from_payload::<OpenRequest>("open", &bytes).unwrap(), req);
        // Every request must serialize: a failure would go out as an empty payload.
        let req = OpenRequest::MoveNics {
            nics: vec![NicMove {
                from_mac: "52:56:01:75:01:03".into(),
                mac: "52:56:01:75:01:05".into(),
                address: std::net::Ipv4Addr::new(10, 117, 1, 5),
                prefix: 24,
                router: Some(std::net::Ipv4Addr::new(10, 117, 1, 1)),
            }],
        };
        let bytes = to_payload(&req);
        assert_eq!(from_payload::<OpenRequest>("open", &bytes).unwrap(), req);
    }

    #[test]
    fn stream_msgs_roundtrip() {
        for m in [
            StreamMsg::Exit(ExitStatus::Signal(9)),
            StreamMsg::Signal { signal: 2 },
            StreamMsg::Error(ErrorMsg::new(ErrorKind::NotFound, "no such file")),
            StreamMsg::Stat { meta: None },
            StreamMsg::Trace(TraceEvent {
                pid: 7,
                syscall: "openat".into(),
                path: Some("/lib/libnss_x.so.2".into()),
                result: -2,
                errno: Some("ENOENT".into()),
            }),
            StreamMsg::TraceSummary(TraceSummary::default()),
        ] {
            assert_eq!(
                from_payload::<StreamMsg>("msg", &to_payload(&m)).unwrap(),
                m
            );
        }
    }

    #[test]
    fn malformed_payload_is_a_typed_error() {
        let err = from_payload::<StreamMsg>("msg", b"\xff{").unwrap_err();
        assert!(err.to_string().contains("malformed msg"));
    }

    #[test]
    fn shell_code_convention() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    }
}
