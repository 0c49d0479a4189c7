//! Host folders in the guest (`--mount`): one virtiofsd per folder, started before QEMU, which
//! connects to its vhost-user socket. Measured here (QEMU 7.2, microvm, TCG, Debian's cloud
//! kernel): virtio-9p is not an option with that kernel (CONFIG_NET_9P is not set), virtiofs is
//! (`virtiofs.ko` + `fuse.ko`, modern virtio-mmio, memfd guest memory).
//!
//! The guest cannot reach past the folder: virtiofsd chroots into it (`sandbox=chroot`), so `..`
//! and absolute symlinks resolve inside it. Read-only is enforced on the host, not trusted to
//! the guest's mount options: virtiofsd runs in a mount namespace of its own where the folder is
//! a read-only bind mount (QEMU 7.2's virtiofsd has no read-only option). Without root, the
//! namespace is a user namespace mapping the caller to root. virtiofsd exits when QEMU closes
//! its connection, so it lives exactly as long as the VM.

use cove_backend::SharedDir;
use cove_state::{VmPaths, VmRecord};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long virtiofsd may take to listen on its socket.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where virtiofsd is looked for: Debian's `virtiofsd` package, then QEMU's own (7.2).
const CANDIDATES: &[&str] = &[
    "/usr/libexec/virtiofsd",
    "/usr/lib/qemu/virtiofsd",
    "/usr/lib/virtiofsd",
];

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(
        "this VM shares host folders (--mount) but no virtiofsd was found; install QEMU's \
         (`apt install qemu-system-common`) or the `virtiofsd` package"
    )]
    NoVirtiofsd,
    #[error("cannot start virtiofsd through unshare")]
    Spawn(#[source] std::io::Error),
    #[error("virtiofsd for {} exited ({status}) before listening: {}", folder.display(), log_tail.join(" / "))]
    Exited {
        folder: PathBuf,
        status: std::process::ExitStatus,
        log_tail: Vec<String>,
    },
    #[error("virtiofsd for {} did not listen within {LISTEN_TIMEOUT:?}; see {}", folder.display(), log.display())]
    NotListening { folder: PathBuf, log: PathBuf },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The guest's name for shared folder `index`.
pub fn tag(index: usize) -> String {
    format!("cove{index}")
}

/// The kernel arguments cove-init reads to mount each folder: `cove.share=TAG:PATH:ro|rw`.
pub fn cmdline_args(record: &VmRecord) -> Vec<String> {
    record
        .host_mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "cove.share={}:{}:{}",
                tag(i),
                m.guest,
                if m.writable { "rw" } else { "ro" }
            )
        })
        .collect()
}

fn virtiofsd() -> Result<PathBuf, ShareError> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("virtiofsd"));
    on_path
        .chain(CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or(ShareError::NoVirtiofsd)
}

/// The running virtiofsd processes of one launch; killed when dropped (QEMU did not start, so
/// nobody would ever connect to them) unless [`Daemons::detach`]ed.
pub struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemons {
    pub fn kill(self) {
        drop(self)
    }

    /// QEMU is connecting: each exits when QEMU closes its connection; a thread collects it.
    pub fn detach(mut self) {
        for mut c in std::mem::take(&mut self.0) {
            let _ = std::thread::Builder::new()
                .name("virtiofsd-wait".into())
                .spawn(move || c.wait());
        }
    }
}

/// Starts one virtiofsd per shared folder and waits until each listens. On error, the ones
/// already started are killed.
pub fn start(vm: &VmPaths, record: &VmRecord) -> Result<(Vec<SharedDir>, Daemons), ShareError> {
    if record.host_mounts.is_empty() {
        return Ok((Vec::new(), Daemons(Vec::new())));
    }
    let bin = virtiofsd()?;
    let mut started: Vec<Child> = Vec::new();
    let mut shares = Vec::new();
    let result = (|| {
        for (i, m) in record.host_mounts.iter().enumerate() {
            let socket = vm.share_socket(i);
            let _ = std::fs::remove_file(&socket);
            let log_path = vm.share_log(i);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?;
            // $1 folder, $2 virtiofsd, $3 socket; ro: a read-only bind of the folder onto itself.
            let script = format!(
                "set -e; mount --bind \"$1\" \"$1\"; {} exec \"$2\" --socket-path=\"$3\" \
                 -o source=\"$1\" -o sandbox=chroot -o cache=none",
                if m.writable {
                    ""
                } else {
                    "mount -o remount,bind,ro \"$1\";"
                }
            );
            let mut cmd = Command::new("unshare");
            if !cove_util::process::is_root() {
                cmd.args(["--user", "--map-root-user"]);
            }
            cmd.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(&m.host)
            .arg(&bin)
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
            let mut child = cmd.spawn().map_err(ShareError::Spawn)?;
            let deadline = Instant::now() + LISTEN_TIMEOUT;
            while !socket.exists() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ShareError::Exited {
                        folder: m.host.clone(),
                        status,
                        log_tail: crate::console_log::tail_lines(&log_path, 5),
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    return Err(ShareError::NotListening {
                        folder: m.host.clone(),
                        log: log_path.clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            started.push(child);
            shares.push(SharedDir {
                socket,
                tag: tag(i),
            });
        }
        Ok::<_, ShareError>(())
    })();
    match result {
        Ok(()) => Ok((shares, Daemons(started))),
        Err(e) => {
            Daemons(started).kill();
            Err(e)
        }
    }
}
