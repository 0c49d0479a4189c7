//! passt: the user-mode network of a VM that is on no cove network (issue 10, finding 4).
//!
//! QEMU's slirp maps its gateway, 10.0.2.2, to the host's 127.0.0.1, so any guest reaches every
//! service on the host's loopback (a PostgreSQL trusting local connections, other VMs'
//! forwarded ports). passt (Debian's `passt`, QEMU 7.2's `-netdev stream`) translates the
//! guest's frames to ordinary sockets of its own and, with `--no-map-gw`, maps nothing to the
//! host: 10.0.2.2 is just an address out in the world, which no route of the host's loopback
//! serves. It still owns the port forwards (bound on the host address the user asked for, as
//! slirp's were) and answers ARP, so the guest's static configuration (`cove_guest::user_net`)
//! stays what it was.
//!
//! Lifetime: the supervisor makes a connected socket pair and hands one end to passt
//! (`--fd`) and the other to QEMU (`-netdev stream,addr.type=fd`), keeping no copy once QEMU
//! runs. passt exits when its peer's end closes, so it lives exactly as long as the QEMU that
//! holds that end: a killed QEMU takes it along, a killed supervisor leaves it serving the QEMU
//! the next supervisor adopts, and a supervisor dying before QEMU runs closes the last copy
//! (its own, or the gated QEMU shim's) and passt goes too. There is nothing left to repair and
//! no socket file. (A listening socket, `--socket` with `--one-off`, was the first plan: bookworm's
//! passt 0.0~git20230309 with `--one-off` exits about 0.3 s after it starts listening, before
//! any client has connected.)

use cove_backend::PortForward;
use cove_state::VmPaths;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The Debian package (bookworm and later) with `passt`.
pub const PACKAGE: &str = "passt";
const BINARY: &str = "passt";
/// How long passt may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most passt keeps in a VM's passt.log (it drops the oldest lines beyond).
const LOG_SIZE: u64 = 1 << 20;
/// passt's own MAC on the guest's link: locally administered, fixed, so it does not depend on
/// the host having an interface (passt otherwise copies the host's outbound interface's).
const PASST_MAC: &str = "9a:55:9a:55:9a:55";
/// Where passt finds its end of the socket pair.
const PASST_FD: i32 = 3;
/// Where QEMU finds its end: after the launch gate's descriptor (3, `cove_backend::process`).
pub const VMM_FD: i32 = 4;
/// Both ends are moved this high first, so that placing one never overwrites the other or the
/// gate's descriptor.
const HIGH_FD: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// No `passt` on `$PATH`.
    #[error(
        "this VM's user-mode network needs passt, which keeps guests off the host's loopback, \
         and it is not installed: install Debian's `{PACKAGE}` package (`apt install {PACKAGE}`, \
         or `scripts/install-deps`)"
    )]
    NotInstalled,
    #[error(
        "user-mode networking forwards IPv4 host addresses only, not {addr:?}; use 127.0.0.1 or 0.0.0.0"
    )]
    HostAddress { addr: String },
    #[error("cannot start {}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("passt exited ({}) while starting: {said}; its log is {}", exit_text(.status), log.display())]
    Exited {
        /// `None` if its waiter could not learn it.
        status: Option<ExitStatus>,
        said: String,
        log: PathBuf,
    },
    #[error("passt was not ready within {timeout:?}; its log is {}", log.display())]
    Timeout { timeout: Duration, log: PathBuf },
    #[error("passt's log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a socket pair for passt")]
    SocketPair(#[source] std::io::Error),
}

fn exit_text(status: &Option<ExitStatus>) -> String {
    status.map_or_else(|| "status unknown".into(), |s| s.to_string())
}

/// passt's arguments for a VM whose forwards are `ports`; its end of the socket pair is
/// [`PASST_FD`]. `host_loopback` lets the guest reach the host's 127.0.0.1 as the gateway
/// (passt's default, which cove turns off unless the VM asks for it).
pub fn args(ports: &[PortForward], host_loopback: bool) -> Result<Vec<OsString>, PasstError> {
    use cove_guest::user_net;
    let mut a: Vec<OsString> = [
        // The supervisor's child, not a daemon in a PID namespace of its own.
        "--foreground",
        "--quiet",
        // IPv4 only, statically configured: the guest's view is `cove_guest::user_net`, the
        // same as under slirp, whatever the host's interfaces. `-i lo` and our own MAC keep
        // passt from needing a host interface with a default route (a host without one, or a
        // test's network namespace, still gets its port forwards).
        "--ipv4-only",
        "--interface",
        "lo",
        "--mac-addr",
        PASST_MAC,
        "--address",
        user_net::GUEST,
        "--netmask",
        &user_net::PREFIX_LEN.to_string(),
        "--gateway",
        user_net::GATEWAY,
        // DNS to 10.0.2.3 (UDP 53 only) goes to the host's resolver, as under slirp.
        "--dns-forward",
        user_net::DNS,
        // The guest configures itself statically: no DHCP server for it to talk to.
        "--no-dhcp",
        // cove's forwards are TCP; passt would otherwise also forward the same UDP ports.
        "--udp-ports",
        "none",
        // Connected to QEMU; passt exits when QEMU's end closes.
        "--fd",
        &PASST_FD.to_string(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    // The point: the gateway is not the host. Without this passt maps connections to 10.0.2.2
    // to the host's loopback, as slirp does; only a VM that asked for it gets that.
    if !host_loopback {
        a.push("--no-map-gw".into());
    }
    // passt refuses an empty spec: no forwards is `none`.
    let mut tcp = Vec::new();
    for p in ports {
        let addr = if p.host_addr.is_empty() {
            "0.0.0.0"
        } else {
            p.host_addr.as_str()
        };
        if addr.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(PasstError::HostAddress {
                addr: p.host_addr.clone(),
            });
        }
        tcp.push(format!("{addr}/{}:{}", p.host_port, p.guest_port));
    }
    // One `-t` per forward: passt takes one address per spec.
    if tcp.is_empty() {
        a.extend(["--tcp-ports".into(), "none".into()]);
    }
    for spec in tcp {
        a.extend(["--tcp-ports".into(), spec.into()]);
    }
    Ok(a)
}

/// A passt this supervisor started, and QEMU's end of its socket pair until QEMU has it.
/// Dropped before QEMU runs, passt is killed (nothing will ever use it).
pub struct Passt {
    child: Option<Child>,
    vmm_end: OwnedFd,
    log: PathBuf,
}

impl Drop for Passt {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Passt {
    /// Makes `cmd` (the VMM's, already gated: its pre-exec hook runs after the gate's) inherit
    /// QEMU's end as [`VMM_FD`].
    pub fn hand_to(&self, cmd: &mut Command) {
        let fd = self.vmm_end.as_raw_fd();
        // SAFETY: inherit_as only calls dup2/fcntl, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || cove_backend::process::inherit_as(fd, VMM_FD));
        }
    }

    /// passt's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The VMM was spawned with its end: this process's copy closes (so passt's life is the
    /// VMM's alone) and a thread reaps passt when it exits. `None` if it was already handed
    /// over or no thread could start.
    pub fn detach(mut self) -> Option<Detached> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let (gone, exited) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("passt-wait".into())
            .spawn(move || {
                let _ = gone.send(child.wait().ok());
            })
            .ok()?;
        Some(Detached {
            pid,
            exited,
            log: self.log.clone(),
        })
    }
}

/// A passt handed to its own reaping thread: the VMM holds its peer end.
pub struct Detached {
    pid: u32,
    exited: tokio::sync::oneshot::Receiver<Option<ExitStatus>>,
    log: PathBuf,
}

impl Detached {
    /// Waits until passt serves: its forwards bound and its sandbox in place (its last step
    /// before it serves). A forward it cannot bind makes it exit, reported in its own words.
    pub async fn ready(&mut self) -> Result<(), PasstError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.exited.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                // Exited, or its waiter went (then its status is unknown).
                gone => {
                    return Err(PasstError::Exited {
                        status: gone.ok().flatten(),
                        said: last_words(&read_log(&self.log)),
                        log: self.log.clone(),
                    });
                }
            }
            if sandboxed(self.pid) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PasstError::Timeout {
                    timeout: READY_TIMEOUT,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Returns once passt has exited, and so closed the host ports it forwarded: a VM is
    /// reported stopped only then, so that an immediate `start` finds its ports free (passt
    /// exits when it sees its QEMU's end close, a moment after QEMU). One that outlives its
    /// QEMU by `grace` is killed.
    pub async fn gone(mut self, grace: Duration) {
        if tokio::time::timeout(grace, &mut self.exited).await.is_ok() {
            return;
        }
        // Not reaped yet (the thread has not returned), so the pid is still this child's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = tokio::time::timeout(grace, self.exited).await;
    }
}

/// A connected stream socket pair, both ends close-on-exec and moved to [`HIGH_FD`] or above.
fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    let high =
        |fd: OwnedFd| rustix::io::fcntl_dupfd_cloexec(&fd, HIGH_FD).map_err(std::io::Error::from);
    Ok((high(a.into())?, high(b.into())?))
}

/// Starts passt for `vm` with `ports` forwarded. It is not ready yet: the VMM is started
/// meanwhile (passt's start, ~40 ms here, overlaps QEMU's), and [`Detached::ready`] waits for it
/// before the VM runs.
pub fn spawn(
    vm: &VmPaths,
    ports: &[PortForward],
    host_loopback: bool,
    run_as: Option<cove_backend::RunAs>,
) -> Result<Passt, PasstError> {
    let binary = cove_util::path::which(BINARY).ok_or(PasstError::NotInstalled)?;
    let mut args = args(ports, host_loopback)?;
    // Under root passt drops to `nobody` by itself; the VMM's identity instead makes its
    // sockets (the guest's traffic) subject to the rules on that owner (`crate::guard`).
    if let Some(id) = run_as {
        args.extend(["--runas".into(), format!("{}:{}", id.uid, id.gid).into()]);
    }
    let (passt_end, vmm_end) = socket_pair().map_err(PasstError::SocketPair)?;
    let log_path = vm.passt_log();
    let log_err = |source| PasstError::Log {
        path: log_path.clone(),
        source,
    };
    // This start's log only (the supervisor's umask makes it 0600), kept by passt itself at
    // most LOG_SIZE long: what a guest makes it complain about cannot fill the host's disk.
    // Its stderr repeats the same lines (and that it is root), so it goes nowhere.
    std::fs::File::create(&log_path).map_err(log_err)?;
    let mut cmd = Command::new(&binary);
    cmd.args(args)
        .arg("--log-file")
        .arg(&log_path)
        .args(["--log-size", &LOG_SIZE.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Terminal signals and a group kill of the supervisor never reach it.
        .process_group(0);
    let fd = passt_end.as_raw_fd();
    // SAFETY: inherit_as only calls dup2/fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || cove_backend::process::inherit_as(fd, PASST_FD));
    }
    let child = cmd.spawn().map_err(|source| PasstError::Spawn {
        binary: binary.clone(),
        source,
    })?;
    drop(passt_end);
    Ok(Passt {
        child: Some(child),
        vmm_end,
        log: log_path,
    })
}

/// passt's seccomp filter is in place: the last thing it does before serving.
fn sandboxed(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"]))
    })
}

/// The first 64 KiB of passt's log (what it says while starting is at the top).
fn read_log(path: &Path) -> String {
    let mut text = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64 * 1024).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// What passt said last, from its log file: its lines without the header naming its version
/// and without each line's uptime stamp (`0.3140: ERROR:   Failed to bind ...`).
fn last_words(said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| !l.starts_with("passt "))
        .map(|l| match l.split_once(": ") {
            Some((stamp, rest)) if stamp.parse::<f64>().is_ok() => rest,
            _ => l,
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(addr: &str, host: u16, guest: u16) -> PortForward {
        PortForward {
            host_addr: addr.into(),
            host_port: host,
            guest_port: guest,
        }
    }

    #[test]
    fn last_words_are_passts_lines_without_header_or_stamps() {
        let log = "passt unknown version: /usr/bin/passt.avx2 (10754)\n\
                   0.3140: ERROR:   Failed to bind any port for '-t 127.0.0.1/58519:80', exiting\n";
        assert_eq!(
            last_words(log),
            "ERROR:   Failed to bind any port for '-t 127.0.0.1/58519:80', exiting"
        );
    }

    #[test]
    fn forwards_keep_their_host_address_and_nothing_maps_to_the_host() {
        let a = args(
            &[forward("127.0.0.1", 8080, 80), forward("", 2222, 22)],
            false,
        )
        .unwrap();
        let text: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let text = text.join(" ");
        assert!(text.contains("--no-map-gw"), "{text}");
        assert!(
            text.contains("--tcp-ports 127.0.0.1/8080:80 --tcp-ports 0.0.0.0/2222:22"),
            "{text}"
        );
        assert!(text.contains("--udp-ports none"), "{text}");
        assert!(
            text.contains("--address 10.0.2.15 --netmask 24 --gateway 10.0.2.2"),
            "{text}"
        );
        assert!(text.contains("--fd 3"), "{text}");

        let none = args(&[], false).unwrap();
        assert!(
            none.windows(2)
                .any(|w| w[0] == "--tcp-ports" && w[1] == "none")
        );
        let err = args(&[forward("::1", 1, 2)], false).unwrap_err();
        // Asked for: the gateway is the host's loopback.
        let open = args(&[], true).unwrap();
        assert!(!open.iter().any(|a| a == "--no-map-gw"));
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }

    fn vm_paths(root: &Path) -> VmPaths {
        let vm = VmPaths {
            dir: root.join("vm"),
            run: root.join("run"),
            ram: root.join("run"),
        };
        std::fs::create_dir_all(&vm.dir).unwrap();
        std::fs::create_dir_all(&vm.run).unwrap();
        vm
    }

    /// passt binds the forwards before it is ready, lives while its peer's end is open, and
    /// exits when the last copy of that end closes (what QEMU's exit does).
    #[test]
    fn passt_forwards_and_lives_exactly_as_long_as_its_peer() {
        if cove_util::path::which(BINARY).is_none() {
            eprintln!("skipped: no passt here");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let vm = vm_paths(root.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let passt = spawn(&vm, &[forward("127.0.0.1", port, 80)], false, None).unwrap();
        let pid = passt.pid().unwrap();
        // A child holding the VMM's end (as QEMU does), then this process's copy closed.
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        passt.hand_to(&mut cmd);
        let mut peer = cmd.spawn().unwrap();
        let mut exiting = passt.detach().unwrap();
        rt.block_on(exiting.ready()).unwrap();
        // The forward is passt's: the port is taken.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            cove_util::process::alive(pid),
            "passt ended while its peer runs"
        );
        peer.kill().unwrap();
        peer.wait().unwrap();
        let began = Instant::now();
        rt.block_on(exiting.gone(Duration::from_secs(10)));
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "passt outlived its peer and had to be killed"
        );
        // Once it is gone its forward is free: a `start` right after a `stop` can bind it.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn a_forward_passt_cannot_bind_fails_the_start_in_passts_words() {
        if cove_util::path::which(BINARY).is_none() {
            eprintln!("skipped: no passt here");
            return;
        }
        // SAFETY: umask only sets this process's file mode mask (as the supervisor does).
        unsafe { libc::umask(0o077) };
        let root = tempfile::tempdir().unwrap();
        let vm = vm_paths(root.path());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut passt = spawn(&vm, &[forward("127.0.0.1", port, 80)], false, None)
            .unwrap()
            .detach()
            .unwrap();
        let Err(err) = rt.block_on(passt.ready()) else {
            panic!("passt started on a taken port");
        };
        let text = err.to_string();
        assert!(
            text.contains(&format!("127.0.0.1/{port}")) && text.contains("passt.log"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(vm.passt_log())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
