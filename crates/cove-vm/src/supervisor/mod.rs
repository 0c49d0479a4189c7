//! The per-VM supervisor process (`cove __supervise NAME`): owns the VMM
//! child, its console log, the agent link and the control socket, and
//! writes every state change to the store. It is detached from the CLI that
//! started it, so no request and no CLI process bounds a VM's life (the bug
//! of seed 004).

mod console;
mod control;
mod judge;
mod save;
mod shares;
mod vmm;
mod vmm_process;

use vmm_process::VmmProcess;

pub use console::READY_MARKER;

use crate::boot_image::{self, BootImage};
use crate::liveness;
use cove_api::Failure;
use cove_backend::Connected;
use cove_state::store::now;
use cove_state::{Paths, Store, VmState};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

#[derive(Debug, Clone)]
pub struct SuperviseOptions {
    pub name: String,
    pub boot_timeout: Duration,
    /// A lock on the VM's lock file inherited from `cove start`.
    pub lock_fd: Option<i32>,
    /// Take over the running VMM of a supervisor that died, instead of
    /// starting one.
    pub adopt: bool,
    /// Restore from this snapshot (`OWNER@TAG`, checked and with its disks in place, see
    /// `lifecycle::start`) instead of booting.
    pub restore: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("another supervisor already runs VM `{0}`")]
    AlreadySupervised(String),
    #[error(transparent)]
    Store(#[from] cove_state::StoreError),
    #[error(transparent)]
    Image(#[from] boot_image::ImageError),
    #[error(transparent)]
    Backend(#[from] cove_backend::BackendError),
    #[error("the {backend} backend cannot take over a running VMM; `cove kill {vm}` ends it")]
    CannotAdopt {
        backend: cove_backend::BackendKind,
        vm: String,
    },
    #[error("there is no running VMM of `{0}` to adopt")]
    NothingToAdopt(String),
    /// The VMM started but its control, console or state could not be reached; it was killed.
    /// Its own last log lines usually say why (a locked disk, a bad option).
    #[error("{what} failed{}{}", exit.as_ref().map(|s| format!(" (the VMM {})", vmm::describe_exit(s))).unwrap_or_default(), said(vmm_said))]
    VmmRefused {
        what: VmmStep,
        exit: Option<std::process::ExitStatus>,
        vmm_said: Vec<String>,
        #[source]
        source: Box<cove_backend::BackendError>,
    },
    #[error("the {0} backend gives its console on stdio, which this supervisor does not wire yet")]
    ConsoleOnStdio(cove_backend::BackendKind),
    #[error(transparent)]
    Share(#[from] shares::ShareError),
    #[error(transparent)]
    Network(#[from] cove_net::NetError),
    #[error(transparent)]
    Passt(#[from] crate::passt::PasstError),
    #[error(transparent)]
    Ram(#[from] crate::ram::RamError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The step of bringing up a VMM that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmStep {
    /// Connecting to the started VMM's control channel and console.
    Connect,
    /// Loading a snapshot's device state (`OWNER@TAG`) into the paused VMM.
    Restore(String),
}

impl std::fmt::Display for VmmStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmmStep::Connect => f.write_str("connecting to the VMM"),
            VmmStep::Restore(origin) => write!(f, "restoring snapshot {origin}"),
        }
    }
}

/// The VMM's own last words, quoted after an error.
fn said(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; the VMM said: {}", lines.join(" / "))
    }
}

/// Why the supervisor ended a boot itself (the guest never became ready). Recorded and
/// answered as the fallback cause when `cove why`'s rules find none in the console.
#[derive(Debug, thiserror::Error)]
pub enum BootFailure {
    #[error(
        "the guest's agent never answered within {}s{}",
        timeout.as_secs(),
        if *init_ready {
            "; the init did reach its ready point, so the agent itself failed (see its lines \
             in the console log)"
        } else {
            "; the init never reached its ready point"
        }
    )]
    AgentSilent {
        timeout: Duration,
        init_ready: bool,
        #[source]
        source: cove_agent_link::LinkError,
    },
    #[error(
        "the guest did not become ready within {}s (no `{READY_MARKER}` from its init)",
        .0.as_secs()
    )]
    NoReadyMarker(Duration),
    #[error("the guest kernel panicked while booting")]
    Panicked,
    /// A restored guest's clock, RNG or identity could not be fixed (see `save::fixup`).
    #[error("the restored guest could not be fixed up")]
    Fixup(#[source] save::FixupError),
}

/// Where the boot stands, shared with every control connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Booting,
    Ready {
        boot_ms: u64,
    },
    Stopping,
    Exited {
        state: VmState,
        failure: Option<Failure>,
        detail: String,
    },
}

/// How a stop was asked for, which decides how the VMM's exit is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    Graceful,
    Kill,
}

pub struct Shared {
    pub paths: Paths,
    pub name: String,
    pub image: BootImage,
    /// `None` for an adopted VMM whose record lost it.
    pub accel: Option<cove_backend::Accel>,
    pub machine: cove_backend::Machine,
    pub phase: watch::Sender<Phase>,
    pub console: Arc<console::ConsoleHub>,
    /// The VMM behind cove's boundary; nothing here knows which one.
    pub backend: Box<dyn cove_backend::Backend>,
    pub control: Box<dyn cove_backend::VmmControl>,
    /// The link to the guest's cove-agent, when the image has one.
    pub agent: Option<cove_agent_link::AgentLink>,
    pub vmm_pid: u32,
    pub stop: Mutex<Option<(StopKind, Instant)>>,
    /// Set when the supervisor itself ended the boot (e.g. it timed out).
    pub boot_failure: Mutex<Option<BootFailure>>,
    /// This run was restored from a snapshot (its RAM is a private mapping of the snapshot's
    /// memory file, so it cannot be snapshotted in turn).
    pub restored: bool,
}

/// Runs the supervisor until its VMM has exited and the outcome is recorded.
pub fn run(paths: Paths, opts: SuperviseOptions) -> Result<(), SuperviseError> {
    // Everything this process and its QEMU create (logs, sockets, the
    // command line record) is its owner's alone: files 0600, directories
    // 0700, whatever the user's umask.
    // SAFETY: umask only sets this process's file mode mask.
    unsafe { libc::umask(0o077) };
    let vm = paths.vm(&opts.name);
    // Hold the lock for the life of this process: it is how everyone else
    // knows a supervisor is alive.
    let _lock: Box<dyn std::any::Any> = match opts.lock_fd {
        Some(fd) => {
            // SAFETY: `cove start` placed an open, locked file on this fd for
            // us (see lifecycle::spawn_supervisor) and nothing else owns it.
            let file = unsafe { File::from_raw_fd(fd) };
            // The lock must die with this process, not live on in QEMU:
            // a VMM holding it would make a dead supervisor look alive.
            rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::CLOEXEC)
                .map_err(std::io::Error::from)?;
            Box::new(file)
        }
        None => Box::new(
            liveness::try_lock(&vm.supervisor_lock())?
                .ok_or_else(|| SuperviseError::AlreadySupervised(opts.name.clone()))?,
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(supervise(&paths, &opts));
    if let Err(err) = &result {
        // Whatever failed, the record must not keep claiming a live VM.
        eprintln!("supervisor: {err}");
        record_exit(
            &paths,
            &opts.name,
            VmState::Crashed,
            None,
            Some(error_chain(err)),
        );
    }
    let _ = std::fs::remove_dir_all(&vm.run);
    crate::ram::release(&vm);
    result
}

async fn supervise(paths: &Paths, opts: &SuperviseOptions) -> Result<(), SuperviseError> {
    let vm = paths.vm(&opts.name);
    let mut store = Store::open(paths)?;
    let record = store.get_vm(&opts.name)?;
    let image = boot_image::load(&store, &record.image_id)?;
    let backend = crate::backends::for_kind(record.backend)?;
    let listener = control::bind(&vm)?;
    let started = Instant::now();
    let restore_dir = opts.restore.as_deref().map(|origin| {
        let (owner, tag) = origin.split_once('@').unwrap_or((origin, ""));
        paths.vm(owner).snapshot(tag)
    });
    let (mut process, pid, accel, launched) = if opts.adopt {
        if !backend.capabilities().adopt {
            return Err(SuperviseError::CannotAdopt {
                backend: record.backend,
                vm: opts.name.clone(),
            });
        }
        let pid = record
            .vmm_pid
            .filter(|p| backend.is_ours(*p, &vm.transports()))
            .ok_or_else(|| SuperviseError::NothingToAdopt(opts.name.clone()))?;
        let accel = record.accel;
        (VmmProcess::Adopted { pid }, pid, accel, None)
    } else {
        let start = match &restore_dir {
            Some(dir) => vmm::Start::Restore { snapshot: dir },
            None => vmm::Start::Boot,
        };
        let launch = vmm::launch(&*backend, paths, &record, &image, start).await?;
        (
            VmmProcess::Child(launch.child),
            launch.pid,
            Some(launch.accel),
            Some(launch.launched),
        )
    };
    // An adopted VM continues its boot's log; a new boot starts a new one.
    let log = if opts.adopt {
        std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(vm.console_log())?
    } else {
        rotate_console_log(&vm.console_log(), &vm.previous_console_log())?
    };
    store.update_vm(&opts.name, |r| {
        r.supervisor_pid = Some(std::process::id());
        r.vmm_pid = Some(pid);
        r.accel = accel;
        if !opts.adopt {
            r.started_at = Some(now());
        }
    })?;
    let (spec, passt) = match launched {
        None => (None, None),
        Some(vmm::Launched {
            spec,
            gate,
            mut passt,
            guard,
        }) => {
            // The pid is on record: only now may the VMM run (see `process::gate`).
            gate.open()?;
            // passt started just before the VMM and got ready while the VMM started
            // (`vmm::launch`); the guest runs only after `cont`, below, so nothing is sent
            // before passt serves, nor before the rules on its identity are in place.
            if let Some(p) = &mut passt
                && let Err(e) = p.ready().await
            {
                process.start_kill();
                let _ = process.wait().await;
                return Err(e.into());
            }
            if let Some(guard) = guard {
                guard.applied().await;
            }
            (Some(spec), passt)
        }
    };
    let connected = match vmm::connect(&*backend, &vm, pid, spec.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            process.start_kill();
            let status = process.wait().await.ok().flatten();
            // The VMM says why it refused to run (a locked disk, a bad
            // option) in its own log: that line is the cause, so quote it.
            return Err(SuperviseError::VmmRefused {
                what: VmmStep::Connect,
                exit: status,
                vmm_said: crate::console_log::tail_lines(&vm.vmm_log(), 3),
                source: Box::new(e),
            });
        }
    };
    milestone(started, "VMM control connected");
    let Connected {
        control: vmm_control,
        console: console_stream,
    } = connected;
    let Some(console_stream) = console_stream else {
        process.start_kill();
        let _ = process.wait().await;
        return Err(SuperviseError::ConsoleOnStdio(record.backend));
    };
    if let Some(dir) = &restore_dir {
        // Device state into the paused VMM before anything talks to the guest.
        if let Err(e) = vmm_control
            .restore_state(&dir.join(crate::snapshot::STATE))
            .await
        {
            process.start_kill();
            let _ = process.wait().await;
            return Err(SuperviseError::VmmRefused {
                what: VmmStep::Restore(opts.restore.clone().unwrap_or_default()),
                exit: None,
                vmm_said: crate::console_log::tail_lines(&vm.vmm_log(), 3),
                source: Box::new(e),
            });
        }
        milestone(started, "device state restored");
    }
    let hub = console::start(console_stream, log)?;
    // The handshake itself completes when the guest's agent starts.
    let agent = if image.agent {
        let socket = backend.connect_agent(&vm.transports()).await?;
        Some(cove_agent_link::AgentLink::from_stream(
            socket,
            cove_agent_link::LinkConfig::default(),
        ))
    } else {
        None
    };
    // A launched VMM's guest starts here. An adopted one is resumed too: a supervisor killed
    // between pausing its VMM and resuming it (a snapshot's first and last steps) left the
    // vCPUs stopped, and its guest would never answer again; `cont` of a running VM changes
    // nothing. One that cannot be resumed (a restore cut short) is judged by the wait for its
    // agent, as before.
    match vmm_control.resume().await {
        Ok(()) => {}
        Err(e) if opts.adopt => tracing::warn!("could not resume the adopted VMM: {e}"),
        Err(e) => return Err(e.into()),
    }

    let (phase, _) = watch::channel(Phase::Booting);
    let shared = Arc::new(Shared {
        paths: paths.clone(),
        name: opts.name.clone(),
        accel,
        machine: record.machine,
        image,
        phase,
        console: hub,
        backend,
        control: vmm_control,
        agent,
        vmm_pid: pid,
        stop: Mutex::new(None),
        boot_failure: Mutex::new(None),
        // An adopted clone whose TAPs are still held lost its supervisor during the
        // post-restore fixup: it is done again (the agent finds a NIC by either MAC).
        restored: restore_dir.is_some()
            || (opts.adopt && cove_net::is_held(paths, &opts.name).unwrap_or(false)),
    });
    let server = tokio::spawn(control::serve(listener, Arc::clone(&shared)));
    let readiness = tokio::spawn(wait_ready(Arc::clone(&shared), started, opts.boot_timeout));

    let status = process.wait().await?;
    // Before the exit is recorded (and a waiting `stop` answered): the RAM is free once the
    // VM counts as stopped.
    crate::ram::release(&vm);
    readiness.abort();
    if let Some(passt) = passt {
        passt.gone(PASST_GRACE).await;
    }
    let outcome = vmm::outcome(&shared, status.as_ref()).await;
    record_exit(
        paths,
        &opts.name,
        outcome.state,
        Some(status.as_ref().map_or_else(
            || "exited (status unknown: it was adopted from an earlier supervisor)".to_owned(),
            vmm::describe_exit,
        )),
        outcome.failure.as_ref().map(|f| f.message.clone()),
    );
    shared.phase.send_replace(Phase::Exited {
        state: outcome.state,
        failure: outcome.failure,
        detail: outcome.detail,
    });
    // Let waiting control connections deliver their answers before exiting.
    control::drain(server, Duration::from_secs(2)).await;
    Ok(())
}

/// Marks the VM ready when the guest's agent answers (or, in an image
/// without an agent, when its init prints the ready marker), or kills a
/// boot that takes longer than `timeout`.
async fn wait_ready(shared: Arc<Shared>, started: Instant, timeout: Duration) {
    // A guest whose kernel panicked will never answer: fail the boot at once rather than after
    // the whole timeout. The outcome then names the cause by `cove why`'s rules.
    let mut panic = shared.console.panic_seen.subscribe();
    let panicked = async { panic.wait_for(|p| *p).await.is_ok() };
    let ready = tokio::select! {
        r = wait_guest(&shared, timeout) => r,
        true = panicked => Err(BootFailure::Panicked),
    };
    if ready.is_err() && *shared.console.panic_seen.borrow() {
        // The panic's first words arrive before its reason ("Attempted to kill init!
        // exitcode=…", "Out of memory") and the lines after it, which `why` reads: let the
        // guest finish saying it before the VMM is killed. A panicked kernel only prints.
        tokio::time::sleep(PANIC_EVIDENCE_GRACE).await;
    }
    finish_boot(shared, started, ready).await;
}

/// How long a kernel that panicked during boot may go on printing before its VMM is killed.
const PANIC_EVIDENCE_GRACE: Duration = Duration::from_secs(2);
/// How long a VM's passt may outlive its QEMU before it is killed (it exits at once when it
/// sees QEMU's end close; this only bounds a wedged one).
const PASST_GRACE: Duration = Duration::from_secs(2);

/// Waits for the guest's agent (or its init's ready marker without an agent).
async fn wait_guest(shared: &Shared, timeout: Duration) -> Result<(), BootFailure> {
    match &shared.agent {
        Some(link) => link
            .wait_ready(timeout)
            .await
            .map(|_| ())
            .map_err(|source| BootFailure::AgentSilent {
                timeout,
                init_ready: *shared.console.marker_seen.borrow(),
                source,
            }),
        None => {
            let mut marker = shared.console.marker_seen.subscribe();
            let seen = tokio::time::timeout(timeout, async {
                marker.wait_for(|seen| *seen).await.is_ok()
            })
            .await;
            if seen == Ok(true) {
                Ok(())
            } else {
                Err(BootFailure::NoReadyMarker(timeout))
            }
        }
    }
}

/// Records the end of the boot: ready, or failed with the VMM killed.
async fn finish_boot(shared: Arc<Shared>, started: Instant, ready: Result<(), BootFailure>) {
    // A restored guest resumes with the snapshot's clock, RNG and identity: fix them before
    // anyone else reaches it.
    let ready = match ready {
        Ok(()) if shared.restored => {
            milestone(started, "restored guest's agent answered");
            save::fixup(&shared).await.map_err(BootFailure::Fixup)
        }
        other => other,
    };
    match ready {
        Ok(()) => {
            let boot_ms = milestone(started, "ready");
            if let Ok(mut store) = Store::open(&shared.paths) {
                let _ = store.update_vm(&shared.name, |r| {
                    if r.state == VmState::Starting {
                        r.state = VmState::Running;
                    }
                    r.agent_answered = shared.agent.is_some();
                });
            }
            shared.phase.send_if_modified(|p| {
                if *p == Phase::Booting {
                    *p = Phase::Ready { boot_ms };
                    true
                } else {
                    false
                }
            });
        }
        Err(why) => {
            // In the log too: the outcome may name a cause the console shows instead.
            tracing::warn!(why = %error_chain(&why), "the boot failed; killing the VMM");
            // Mark the stop as ours before killing, so the outcome says why
            // instead of "crashed by itself".
            *shared.stop.lock().await = Some((StopKind::Kill, Instant::now()));
            *shared.boot_failure.lock().await = Some(why);
            vmm::kill(&shared);
        }
    }
}

/// Logs a step of the start with the ms since the supervisor began (supervisor.log shows where
/// a slow start or restore spent its time); returns those ms.
fn milestone(started: Instant, what: &str) -> u64 {
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(ms, "{what}");
    ms
}

/// Starts a fresh console log for this boot, keeping the previous boot's.
fn rotate_console_log(current: &PathBuf, previous: &PathBuf) -> std::io::Result<File> {
    if current.exists() {
        std::fs::rename(current, previous)?;
    }
    // Read and write, not append: the capped log rewrites its middle in place.
    std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(current)
}

/// Writes how the VM ended. Best effort: this runs on every exit path,
/// including failures of the store itself.
fn record_exit(
    paths: &Paths,
    name: &str,
    state: VmState,
    last_exit: Option<String>,
    last_error: Option<String>,
) {
    let Ok(mut store) = Store::open(paths) else {
        return;
    };
    let _ = store.update_vm(name, |r| {
        r.state = state;
        r.supervisor_pid = None;
        r.vmm_pid = None;
        if last_exit.is_some() {
            r.last_exit = last_exit.clone();
        }
        r.last_error = last_error.clone();
    });
}

/// An error and its causes on one line: the form a failure takes where it is written down (the
/// record's `last_error`, the `Failure` message a `start` prints).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
