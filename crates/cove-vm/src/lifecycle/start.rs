//! Starting a VM: refuse what cannot boot, take its supervisor lock, spawn the detached
//! supervisor with the lock, and wait until it says the guest is ready or why not.

use super::SUPERVISE_VERB;
use super::reconcile::reconcile;
use crate::boot_image;
use crate::error::{ControlOp, LifecycleError};
use crate::liveness;
use cove_api::{ClientError, Request, Response};
use cove_state::{Paths, PortForward, Store, VmRecord, VmState};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct StartOptions {
    /// How long the guest may take to answer before `start` fails.
    pub boot_timeout: Duration,
    /// Restore from this snapshot (`TAG` of the VM itself, or `OWNER@TAG`) instead of booting.
    pub from: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Started {
    pub record: VmRecord,
    pub boot_ms: u64,
    /// Restored from this snapshot (`OWNER@TAG`) rather than booted.
    pub restored: Option<String>,
}

/// Starts a VM's supervisor, detached from this process, and waits until
/// the guest is ready or the boot failed.
pub fn start(paths: &Paths, name: &str, opts: &StartOptions) -> Result<Started, LifecycleError> {
    if let Some(joined) = join_start_in_progress(paths, name, opts)? {
        return Ok(joined);
    }
    let (lock, restored) = claim_start(paths, name, opts.from.as_deref())?;
    let mut store = Store::open(paths)?;
    let opts = StartOptions {
        from: restored.clone(),
        ..opts.clone()
    };
    let child = spawn_supervisor(paths, name, &opts, &lock, false)?;
    drop(lock);
    store.update_vm(name, |r| {
        if r.supervisor_pid.is_none() {
            r.supervisor_pid = Some(child);
        }
    })?;
    let boot_ms = wait_ready(paths, name, opts.boot_timeout)?;
    Ok(Started {
        record: reconcile(&mut store, paths, name)?,
        boot_ms,
        restored,
    })
}

/// A boot already under way (the CLI that began it was killed, or another CLI began it) is
/// waited for, not refused: as `systemctl start` joins a unit that is activating. A start that
/// names a snapshot still refuses, since it asks for something else than the boot in progress.
fn join_start_in_progress(
    paths: &Paths,
    name: &str,
    opts: &StartOptions,
) -> Result<Option<Started>, LifecycleError> {
    let mut store = Store::open(paths)?;
    let record = reconcile(&mut store, paths, name)?;
    if record.state != VmState::Starting || opts.from.is_some() {
        return Ok(None);
    }
    let boot_ms = wait_ready(paths, name, opts.boot_timeout)?;
    Ok(Some(Started {
        record: reconcile(&mut store, paths, name)?,
        boot_ms,
        restored: record.restored_from,
    }))
}

/// What every start does before a supervisor runs: refuse what cannot
/// boot, take the supervisor lock, put a snapshot's disks in place when the
/// start restores one, mark the VM `starting`. The returned lock is the
/// supervisor's to hold: `cove start` hands it to a detached child, `cove run
/// --foreground` to the supervisor it runs itself. The second value names the
/// snapshot (`owner@tag`) the supervisor must restore, if any.
pub fn claim_start(
    paths: &Paths,
    name: &str,
    from: Option<&str>,
) -> Result<(std::fs::File, Option<String>), LifecycleError> {
    let mut store = Store::open(paths)?;
    let record = reconcile(&mut store, paths, name)?;
    if record.state.is_active() {
        return Err(LifecycleError::AlreadyRunning(
            name.to_owned(),
            record.state,
        ));
    }
    // Refuse before anything starts: an image whose files are gone, a host
    // port something else holds.
    boot_image::load(&store, &record.image_id)?;
    for port in &record.ports {
        check_port_free(port)?;
    }
    // A snapshot that no longer fits is refused here, before its disks replace the VM's.
    // A clone never started yet resumes from its snapshot unless told otherwise.
    let from = from.map(str::to_owned).or_else(|| {
        (record.state == VmState::Created)
            .then(|| record.cloned_from.clone())
            .flatten()
    });
    let origin = match &from {
        Some(from) => {
            let (owner, tag) = from.split_once('@').unwrap_or((name, from.as_str()));
            crate::snapshot::validate_tag(tag)?;
            crate::snapshot::check(paths, owner, tag, &record)?;
            Some((owner.to_owned(), tag.to_owned()))
        }
        None => None,
    };
    let vm = paths.vm(name);
    // The lock is taken here and handed to the supervisor, so that from this
    // moment on the VM counts as having a live supervisor; two concurrent
    // starts cannot both get past this line.
    let lock = lock_after_winding_down(&vm.supervisor_lock())?
        .ok_or_else(|| LifecycleError::AlreadyRunning(name.to_owned(), VmState::Starting))?;
    if let Some((owner, tag)) = &origin {
        crate::snapshot::prepare_disks(paths, owner, tag, &record)?;
    }
    let restored = origin.map(|(owner, tag)| format!("{owner}@{tag}"));
    store.update_vm(name, |r| {
        r.restored_from = restored.clone();
        r.state = VmState::Starting;
        r.last_error = None;
        r.last_exit = None;
        r.agent_answered = false;
        r.vmm_pid = None;
        r.supervisor_pid = None;
    })?;
    Ok((lock, restored))
}

/// The supervisor lock of a VM the store already sees as not running. Its VMM may have just
/// died (kill -9, OOM) while its supervisor still records the exit and releases the lock: wait
/// for that, briefly, instead of calling the VM "already starting". `None` when a supervisor
/// still holds the lock after the wait (a concurrent start).
fn lock_after_winding_down(path: &Path) -> Result<Option<std::fs::File>, LifecycleError> {
    const WINDING_DOWN: Duration = Duration::from_secs(10);
    let deadline = Instant::now() + WINDING_DOWN;
    loop {
        if let Some(lock) = liveness::try_lock(path)? {
            return Ok(Some(lock));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This program, to run as the supervisor. If it was replaced on disk while
/// running (an upgrade, a rebuild), the kernel reports the old path with
/// " (deleted)": the new binary at that path is the one to run.
fn cove_executable() -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    })
}

/// The fd the supervisor finds its inherited lock on.
pub const LOCK_FD: i32 = 3;

pub(super) fn spawn_supervisor(
    paths: &Paths,
    name: &str,
    opts: &StartOptions,
    lock: &std::fs::File,
    adopt: bool,
) -> Result<u32, LifecycleError> {
    let vm = paths.vm(name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(cove_state::files::FILE_MODE)
        .open(vm.supervisor_log())?;
    let exe = cove_executable()?;
    let lock_fd = lock.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg(SUPERVISE_VERB)
        .arg(name)
        .arg("--boot-timeout")
        .arg(opts.boot_timeout.as_secs().to_string())
        .arg("--lock-fd")
        .arg(LOCK_FD.to_string())
        .args(adopt.then_some("--adopt"))
        .args(opts.from.iter().flat_map(|f| ["--restore", f.as_str()]))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls (setsid, dup2) run between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Its own session: the terminal's Ctrl-C and hang-up, and the
            // death of this CLI, never reach the supervisor.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // dup2 clears close-on-exec on the new descriptor, so the lock
            // (an open file description) lives on in the supervisor.
            if libc::dup2(lock_fd, LOCK_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(child.id())
}

/// Waits until the VM's supervisor says the guest is ready (its boot time
/// in ms), or says why it never will be.
pub fn wait_ready(
    paths: &Paths,
    name: &str,
    boot_timeout: Duration,
) -> Result<u64, LifecycleError> {
    let vm = paths.vm(name);
    let client = super::stop::client(paths, name);
    // The supervisor binds its socket within milliseconds; boot itself is
    // bounded by the supervisor, which knows the timeout too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = |source| LifecycleError::Control {
        vm: name.to_owned(),
        op: ControlOp::WaitReady,
        source,
    };
    loop {
        match client.call(&Request::WaitReady, boot_timeout + WAIT_SLACK) {
            Ok(Response::Ready { boot_ms }) => return Ok(boot_ms),
            Ok(other) => {
                return Err(failed(ClientError::Unexpected {
                    vm: name.to_owned(),
                    request: Request::WaitReady.kind(),
                    answer: other.kind(),
                }));
            }
            Err(ClientError::Failed(f)) => return Err(LifecycleError::BootFailed(f)),
            Err(e) if e.is_unreachable() => {
                if !liveness::is_locked(&vm.supervisor_lock())? {
                    return Err(supervisor_died(paths, name));
                }
                if Instant::now() > deadline + boot_timeout {
                    return Err(failed(e));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(failed(e)),
        }
    }
}

/// What the supervisor's answer to `WaitReady` may take beyond the boot timeout it enforces
/// itself (the grace a panicking kernel gets to print its reason, recording the outcome).
const WAIT_SLACK: Duration = Duration::from_secs(30);

/// Builds the error for a supervisor that exited before answering, from
/// what it recorded and what the console shows.
fn supervisor_died(paths: &Paths, name: &str) -> LifecycleError {
    let recorded = Store::open(paths)
        .ok()
        .and_then(|s| s.find_vm(name).ok().flatten())
        .and_then(|r| r.last_error);
    LifecycleError::BootFailed(cove_api::Failure {
        message: recorded
            .unwrap_or_else(|| "the supervisor exited before the VM became ready".to_owned()),
        hint: Some(format!(
            "run `cove why {name}`; the supervisor's own log is {}",
            paths.vm(name).supervisor_log().display()
        )),
        console_tail: crate::console_log::tail_lines(&paths.vm(name).console_log(), 15),
    })
}

fn check_port_free(port: &PortForward) -> Result<(), LifecycleError> {
    std::net::TcpListener::bind((port.host_addr.as_str(), port.host_port))
        .map(drop)
        .map_err(|e| LifecycleError::PortTaken {
            addr: format!("{}:{}", port.host_addr, port.host_port),
            detail: e.to_string(),
        })
}
