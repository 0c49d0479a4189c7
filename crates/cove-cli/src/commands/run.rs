//! `cove run --foreground NAME|SPEC`: the VM's supervisor runs in this
//! process, so a scheduler (systemd, Nomad, Kubernetes) owns the VM's life:
//! the console goes to stdout (or `--console FILE`), SIGTERM/SIGINT stop the
//! guest gracefully (killed after `--stop-timeout`), and the exit status says
//! how the VM ended ([`Ended`]). Under systemd `Type=notify` it sends
//! `READY=1` when the guest's agent answers.
//!
//! The supervisor is the same one `cove start` detaches; only who holds its
//! lock and who waits for it differ. Other cove commands see the VM as
//! usual (`cove list`, `cove exec`, `cove stop` all work on it).

use super::start::BootArgs;
use crate::context::Ctx;
use anyhow::{Context, Result, bail};
use cove_state::{Store, VmState};
use cove_vm::lifecycle;
use cove_vm::supervisor::{self, SuperviseOptions};
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct Args {
    /// A VM name, or a spec file (`*.toml`) declaring one VM: its image is
    /// built and the VM created if missing (`cove up` converges changes).
    #[arg(add = crate::complete::vm())]
    pub target: String,
    /// Run the VM's supervisor in this process until the VM ends (the only
    /// mode of `run`; `cove start` runs one detached).
    #[arg(long, required = true)]
    pub foreground: bool,
    /// Write the serial console to this file (mode 0600, appended) instead of stdout.
    #[arg(long)]
    pub console: Option<PathBuf>,
    /// Seconds the guest gets to shut down after SIGTERM/SIGINT before it is killed.
    #[arg(long, default_value_t = 30)]
    pub stop_timeout: u64,
    /// The static `cove-agent` to put into an image built from a spec.
    #[arg(long, env = "COVE_AGENT")]
    pub agent: Option<PathBuf>,
    #[command(flatten)]
    pub boot: BootArgs,
}

/// How the VM ended, as the exit status of `cove run --foreground`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ended {
    /// The guest shut down: it powered itself off after it was ready, or it
    /// was stopped (SIGTERM, `cove stop`) and shut down within the timeout.
    Clean = 0,
    /// cove could not start the VM (no such VM, already running, a bad spec).
    NotStarted = 1,
    /// The guest never became ready (boot timeout, or it stopped while booting).
    BootFailed = 3,
    /// The guest crashed after it was ready (kernel panic, QEMU died).
    Crashed = 4,
    /// A stop was asked for but the guest did not shut down in time: killed.
    Killed = 5,
}

const EXIT_STATUS_HELP: &str = "Exit status:\n  \
    0  the guest shut down (powered off by itself, or stopped in time)\n  \
    1  the VM could not be started (cause on stderr)\n  \
    2  bad arguments\n  \
    3  the guest never became ready (boot timeout, stopped while booting)\n  \
    4  the guest crashed after it was ready (kernel panic, QEMU died)\n  \
    5  stopped by SIGTERM/SIGINT but not shut down in time: killed";

// Errors before the VM runs leave through `main` as anyhow's status 1.
const _: () = assert!(Ended::NotStarted as u8 == 1);

/// What the signal thread did, for the exit status.
#[derive(Debug, Default)]
struct StopRequest {
    asked: bool,
    /// The stop had to kill: the guest did not shut down in time.
    forced: bool,
    /// The stop's answer arrived (so `forced` is final).
    finished: bool,
}

type SharedStop = Arc<(Mutex<StopRequest>, Condvar)>;

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    if !args.foreground {
        bail!("`cove run` needs --foreground; to run a VM detached use `cove start`");
    }
    let name = resolve(ctx, &args)?;
    let paths = ctx.paths.clone();
    let boot_timeout = Duration::from_secs(args.boot.boot_timeout);
    let stop_timeout = Duration::from_secs(args.stop_timeout);
    let console: Box<dyn Write + Send> = match &args.console {
        Some(path) => Box::new(open_private_append(path)?),
        None => Box::new(std::io::stdout()),
    };

    // Catch SIGTERM/SIGINT before the VM exists, so no signal can end this
    // process (and orphan its QEMU) with the default action.
    let stop: SharedStop = Arc::default();
    let signals_ready = {
        let (tx, rx) = mpsc::channel();
        let (paths, name, stop) = (paths.clone(), name.clone(), Arc::clone(&stop));
        std::thread::spawn(move || stop_on_signals(&paths, &name, stop_timeout, &stop, tx));
        rx
    };
    signals_ready
        .recv()
        .context("setting up SIGTERM/SIGINT handling")??;

    // A clone never started yet resumes from its snapshot, as with `cove start`.
    let (lock, restore) = lifecycle::claim_start(&paths, &name, None)?;
    let done = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    {
        let (paths, name, ready) = (paths.clone(), name.clone(), Arc::clone(&ready));
        std::thread::spawn(move || announce_ready(&paths, &name, boot_timeout, &ready));
    }
    let console_thread = {
        let (paths, name, done) = (paths.clone(), name.clone(), Arc::clone(&done));
        std::thread::spawn(move || follow_console(&paths, &name, &done, console))
    };

    let result = supervisor::run(
        paths.clone(),
        SuperviseOptions {
            name: name.clone(),
            boot_timeout,
            lock_fd: Some(lock.into_raw_fd()),
            adopt: false,
            restore,
        },
    );
    done.store(true, Ordering::SeqCst);
    let _ = console_thread.join();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    result.with_context(|| format!("supervising VM `{name}`"))?;

    let record = Store::open(&paths)?.get_vm(&name)?;
    // A stop in flight gets its answer moments after the VMM exited.
    let (lock, answered) = &*stop;
    let stop = answered
        .wait_timeout_while(
            lock.lock().unwrap_or_else(|e| e.into_inner()),
            Duration::from_secs(10),
            |s| s.asked && !s.finished,
        )
        .unwrap_or_else(|e| e.into_inner())
        .0;
    let ended = judge(
        &stop,
        ready.load(Ordering::SeqCst),
        record.state,
        record.last_error.is_some(),
    );
    eprintln!(
        "cove: {name} ended ({}){}: exit status {}",
        record
            .last_exit
            .as_deref()
            .unwrap_or("no VMM exit recorded"),
        record
            .last_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        ended as u8
    );
    Ok(ExitCode::from(ended as u8))
}

/// The exit status from what happened: who asked for the stop, whether the
/// guest was ever ready, and the state the supervisor recorded.
fn judge(stop: &StopRequest, was_ready: bool, state: VmState, failed: bool) -> Ended {
    match () {
        _ if stop.asked && stop.forced => Ended::Killed,
        _ if stop.asked => Ended::Clean,
        _ if !was_ready => Ended::BootFailed,
        _ if state == VmState::Stopped && !failed => Ended::Clean,
        _ => Ended::Crashed,
    }
}

/// The VM to run: a name, or the one VM of a spec file (created if missing).
fn resolve(ctx: &Ctx, args: &Args) -> Result<String> {
    let is_spec = args.target.ends_with(".toml") || args.target.contains('/');
    if !is_spec {
        return Ok(args.target.clone());
    }
    let path = PathBuf::from(&args.target);
    let spec = crate::up_spec::UpSpec::load(&path)?;
    let [vm] = spec.vms.as_slice() else {
        bail!(
            "{} declares {} VMs; `cove run --foreground` runs one (one spec per unit)",
            path.display(),
            spec.vms.len()
        );
    };
    let name = vm.name.to_string();
    if Store::open(&ctx.paths)?.find_vm(&name)?.is_none() {
        let image = super::up::ensure_image(ctx, &spec.image, args.agent.clone())?;
        lifecycle::create(&ctx.paths, &super::up::create_options(&image, vm))?;
    }
    cove_check::save(&ctx.paths.vm(&name).checks_file(), &vm.checks)?;
    Ok(name)
}

fn open_private_append(path: &PathBuf) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening the console file {}", path.display()))
}

/// Waits for SIGTERM/SIGINT (after saying on `registered` that it does),
/// then stops the VM gracefully within `timeout`; a second signal kills it.
fn stop_on_signals(
    paths: &cove_state::Paths,
    name: &str,
    timeout: Duration,
    stop: &SharedStop,
    registered: mpsc::Sender<std::io::Result<()>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let setup = (|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let streams = runtime.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        Ok::<_, std::io::Error>((runtime, streams))
    })();
    let (runtime, (mut term, mut int)) = match setup {
        Ok(s) => {
            let _ = registered.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = registered.send(Err(e));
            return;
        }
    };
    let mut next = || {
        runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    };
    let first = next();
    stop.0.lock().unwrap_or_else(|e| e.into_inner()).asked = true;
    eprintln!(
        "cove: {first}: stopping {name} (killed if not shut down within {}s)",
        timeout.as_secs()
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    {
        let (paths, name, stop) = (paths.clone(), name.to_owned(), Arc::clone(stop));
        std::thread::spawn(move || {
            let forced = match stop_when_reachable(&paths, &name, timeout) {
                Ok((lifecycle::StopOutcome::AlreadyStopped, _)) => false,
                Ok((_, detail)) => !detail.starts_with(GRACEFUL_DETAIL_PREFIX),
                Err(e) => {
                    eprintln!("cove: stopping {name} failed ({e}); killing it");
                    let _ = lifecycle::kill(&paths, &name);
                    true
                }
            };
            let mut s = stop.0.lock().unwrap_or_else(|e| e.into_inner());
            s.forced = forced;
            s.finished = true;
            stop.1.notify_all();
        });
    }
    // A second signal while the guest shuts down: kill it now.
    let again = next();
    eprintln!("cove: {again} again: killing {name}");
    let _ = lifecycle::kill(paths, name);
}

/// How the supervisor's stop answer begins when the guest shut down by
/// itself in time (`vmm::stop`); anything else means QEMU was made to quit.
const GRACEFUL_DETAIL_PREFIX: &str = "shut down by the guest";

/// A signal can come before the supervisor's control socket exists (the
/// first milliseconds): retry until it answers, bounded.
fn stop_when_reachable(
    paths: &cove_state::Paths,
    name: &str,
    timeout: Duration,
) -> Result<(lifecycle::StopOutcome, String), cove_vm::LifecycleError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lifecycle::stop(paths, name, timeout) {
            Ok(done) => return Ok(done),
            Err(e) if e.supervisor_unreachable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Tells the scheduler (systemd `Type=notify`) and the log when the guest is ready.
fn announce_ready(
    paths: &cove_state::Paths,
    name: &str,
    boot_timeout: Duration,
    ready: &AtomicBool,
) {
    if let Ok(ms) = lifecycle::wait_ready(paths, name, boot_timeout) {
        ready.store(true, Ordering::SeqCst);
        let status = format!("{name} is running (ready in {:.1}s)", ms as f64 / 1000.0);
        eprintln!("cove: {status}");
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        );
    }
}

/// Copies this boot's console log to `out` as it grows, until `done` and
/// everything written is copied. The supervisor starts a new log for the
/// boot before it records the VMM's pid, so waiting for the pid means the
/// file opened is this boot's.
fn follow_console(
    paths: &cove_state::Paths,
    name: &str,
    done: &AtomicBool,
    mut out: Box<dyn Write + Send>,
) {
    let log = paths.vm(name).console_log();
    let mut file = loop {
        let vmm_started = Store::open(paths)
            .ok()
            .and_then(|s| s.find_vm(name).ok().flatten())
            .is_some_and(|r| r.vmm_pid.is_some() && r.supervisor_pid == Some(std::process::id()));
        if let Some(f) = vmm_started
            .then(|| std::fs::File::open(&log).ok())
            .flatten()
        {
            break f;
        }
        if done.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read `done` before reading the file: once it is set the supervisor
        // has written its last byte, so this pass copies the rest.
        let finished = done.load(Ordering::SeqCst);
        match file.read(&mut buf) {
            Ok(0) if finished => break,
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    // A closed stdout must not stop the VM; the log has everything.
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(asked: bool, forced: bool) -> StopRequest {
        StopRequest {
            asked,
            forced,
            finished: true,
        }
    }

    #[test]
    fn exit_status_says_how_the_vm_ended() {
        let none = stop(false, false);
        assert_eq!(judge(&none, true, VmState::Stopped, false), Ended::Clean);
        assert_eq!(
            judge(&none, false, VmState::Stopped, true),
            Ended::BootFailed
        );
        assert_eq!(
            judge(&none, false, VmState::Crashed, true),
            Ended::BootFailed
        );
        assert_eq!(judge(&none, true, VmState::Crashed, true), Ended::Crashed);
        assert_eq!(
            judge(&stop(true, false), true, VmState::Stopped, false),
            Ended::Clean
        );
        assert_eq!(
            judge(&stop(true, true), true, VmState::Stopped, false),
            Ended::Killed
        );
    }

    #[test]
    fn the_help_table_lists_every_status() {
        for ended in [
            Ended::Clean,
            Ended::NotStarted,
            Ended::BootFailed,
            Ended::Crashed,
            Ended::Killed,
        ] {
            assert!(
                EXIT_STATUS_HELP.contains(&format!("\n  {}  ", ended as u8)),
                "{ended:?}"
            );
        }
    }
}
