//! Launching the VMM, connecting to it, stopping it, and judging its exit.

use super::{Phase, Shared, StopKind, SuperviseError};
use crate::boot_image::BootImage;
use crate::console_log::tail_lines;
use cove_api::Failure;
use cove_backend::{Backend, ConnectMode, Connected, DataDisk, Memory, UserNet, VmSpec};
use cove_state::{Paths, VmPaths, VmRecord, VmState};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a restored guest's agent may take to apply the post-restore fixups.
pub const FIXUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `quit` may take before the VMM is killed.
const QUIT_GRACE: Duration = Duration::from_secs(3);

pub struct Launch {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub accel: cove_backend::Accel,
    /// What only a VMM this supervisor launched has (an adopted one has none of it).
    pub launched: Launched,
}

/// A launched VMM's spec, its gate, and what runs beside it.
pub struct Launched {
    /// What the VMM was launched with, for [`connect`].
    pub spec: VmSpec,
    /// The VMM runs only once this opens: the caller records its pid first,
    /// so a supervisor dying in between never leaves a VMM nobody knows of.
    pub gate: cove_backend::process::Gate,
    /// The VM's passt, if it has one, to be waited for once the VMM has exited.
    pub passt: Option<crate::passt::Detached>,
    /// The host rules on the VMM's identity, being applied; waited for before the guest runs.
    pub guard: Option<crate::guard::Pending>,
}

/// How the VMM starts: a cold boot with its RAM in a shared file (so it can be snapshotted), or
/// waiting for the device state of a snapshot whose memory file it maps privately.
pub enum Start<'a> {
    Boot,
    Restore { snapshot: &'a std::path::Path },
}

pub async fn launch(
    backend: &dyn Backend,
    paths: &Paths,
    record: &VmRecord,
    image: &BootImage,
    start: Start<'_>,
) -> Result<Launch, SuperviseError> {
    let vm = paths.vm(record.name.as_str());
    let transports = vm.transports();
    for socket in transports.sockets() {
        let _ = std::fs::remove_file(socket);
    }
    let host = backend.probe_host(&paths.cache, false);
    host.require_bootable(backend.kind().as_str())?;
    let caps = backend.capabilities();
    if matches!(start, Start::Restore { .. }) && !caps.snapshots {
        return Err(cove_backend::BackendError::Unsupported {
            backend: backend.kind().as_str(),
            what: "restore snapshots".into(),
            hint: "start the VM cold (without --from)".into(),
        }
        .into());
    }
    // The VM's networks up (a host reboot took them away) and its TAPs on them; held while a
    // guest resumed from another VM's snapshot still has that VM's MACs and addresses (the
    // post-restore fixup moves them, then lifts the hold).
    let hold = matches!(start, Start::Restore { .. })
        && !super::save::nic_moves(paths, record)?.is_empty();
    let taps: Vec<cove_backend::Tap> =
        cove_net::prepare_vm(paths, record.name.as_str(), &record.networks, hold)?
            .into_iter()
            .map(|a| cove_backend::Tap {
                ifname: a.tap,
                mac: a.mac,
            })
            .collect();
    // Shared file RAM is what a snapshot copies; without snapshots it buys nothing.
    let shared_ram = matches!(start, Start::Boot) && caps.snapshots;
    if shared_ram {
        crate::ram::prepare(paths, &vm, record.memory_mib)?;
    }
    let (shares, daemons) = super::shares::start(&vm, record)?;
    // The user-mode NIC: passt, unless the VM is on cove networks (then it goes out through
    // them, and the VMM's own user-mode stack carries only the forwards, restricted) or the
    // backend cannot plug a NIC into a socket.
    let run_as = crate::backends::vmm_identity(caps);
    // The guest's sockets on the host will belong to `run_as`: rules on that owner go in while
    // the VMM starts, and are waited for before it runs.
    let guard = match run_as {
        Some(_) => crate::guard::start().await,
        None => None,
    };
    let passt = if taps.is_empty() && caps.user_net_stream {
        Some(crate::passt::spawn(
            &vm,
            &record.ports,
            record.host_loopback,
            run_as,
        )?)
    } else {
        None
    };
    let spec = VmSpec {
        name: record.name.to_string(),
        cpus: record.cpus,
        memory_mib: record.memory_mib,
        kernel: image.kernel.clone(),
        // Asked, not assumed: a backend without PVH boots the bzImage.
        vmlinux: image.vmlinux.clone().filter(|_| caps.pvh_boot),
        initrd: image.initrd.clone(),
        cmdline_extra: cmdline_extra(image, record, &taps),
        root_disk: vm.root_disk(),
        data_disks: record
            .data_disks
            .iter()
            .map(|d| DataDisk {
                path: crate::data_disk::path_for(paths, record, d),
                serial: crate::data_disk::serial(d),
            })
            .collect(),
        ports: record.ports.clone(),
        machine: record.machine,
        accel: host.accel.accel,
        transports,
        memory: match start {
            Start::Boot if shared_ram => Memory::SharedFile(vm.memory_file()),
            Start::Boot => Memory::Anonymous,
            Start::Restore { snapshot } => {
                Memory::PrivateFile(snapshot.join(crate::snapshot::MEMORY))
            }
        },
        incoming: matches!(start, Start::Restore { .. }),
        shares,
        user_net: match passt {
            Some(_) => UserNet::StreamFd(crate::passt::VMM_FD),
            None => UserNet::Builtin,
        },
        taps,
        run_as,
    };
    let launch = backend.launch(&spec, &host)?;
    std::fs::write(vm.vmm_cmdline(), &launch.description)?;
    let (mut cmd, gate) = cove_backend::process::gate(&launch.command)?;
    if let Some(passt) = &passt {
        passt.hand_to(&mut cmd);
    }
    let vmm_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vm.vmm_log())?;
    // Its own process group, so the terminal's signals and a group kill of
    // the supervisor never reach it. Deliberately no parent-death signal:
    // a VM outlives a supervisor that dies, and the next cove command
    // starts a new supervisor that adopts it (see `lifecycle::reconcile`).
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(vmm_log.try_clone()?)
        .stderr(vmm_log);
    let program = cmd.get_program().to_owned();
    let (child, passt) = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => {
            daemons.detach();
            (c, passt.and_then(crate::passt::Passt::detach))
        }
        Err(source) => {
            daemons.kill();
            drop(passt);
            return Err(cove_backend::BackendError::Spawn {
                binary: program.into(),
                source,
            }
            .into());
        }
    };
    let pid = child.id().unwrap_or_default();
    tracing::info!(pid, accel = %host.accel.accel, reason = %host.accel.reason, "VMM started");
    Ok(Launch {
        child,
        pid,
        accel: host.accel.accel,
        launched: Launched {
            spec,
            gate,
            passt,
            guard,
        },
    })
}

/// The image's kernel arguments plus, for each mounted data disk,
/// `cove.disk=<serial>:<path>`, which the image's init reads to mount it.
fn cmdline_extra(image: &BootImage, record: &VmRecord, taps: &[cove_backend::Tap]) -> String {
    let mut args = image.cmdline_extra.clone();
    // Validated at create; a record written before that check with a path
    // that would add kernel arguments is left unmounted rather than passed.
    let mounts = record
        .disk_mounts
        .iter()
        .filter(|(_, mount)| crate::data_disk::validate_mount(mount).is_ok());
    for (disk, mount) in mounts {
        args.push(cove_guest::disk_arg(&crate::data_disk::serial(disk), mount));
    }
    args.extend(super::shares::cmdline_args(record));
    // MACs are cove's own `52:56:..` (cove_state::net), never text from a user.
    args.extend(taps.iter().map(|t| cove_guest::net_arg(&t.mac)));
    args.join(" ")
}

/// Connects the VMM's control channel and the console; the agent link
/// connects on its own. `launched` is the spec of a VMM this supervisor just
/// started, `None` for one it adopts.
pub async fn connect(
    backend: &dyn Backend,
    vm: &VmPaths,
    pid: u32,
    launched: Option<&VmSpec>,
) -> Result<Connected, cove_backend::BackendError> {
    let alive = move || crate::liveness::process_running(pid);
    let transports = vm.transports();
    let mode = match launched {
        Some(spec) => ConnectMode::Launched(spec),
        None => ConnectMode::Adopted,
    };
    backend.connect(&transports, mode, &alive).await
}

/// Graceful stop: ask the guest, wait up to `timeout`, then `quit`, then kill.
/// Returns how it went, for the person who asked.
pub async fn stop(shared: &Shared, timeout: Duration) -> String {
    let began = Instant::now();
    {
        let mut stop = shared.stop.lock().await;
        if stop.is_none() {
            *stop = Some((StopKind::Graceful, began));
        }
    }
    shared.phase.send_if_modified(|p| {
        if matches!(p, Phase::Booting | Phase::Ready { .. }) {
            *p = Phase::Stopping;
            true
        } else {
            false
        }
    });
    if let Ok(mut store) = cove_state::Store::open(&shared.paths) {
        let _ = store.update_vm(&shared.name, |r| {
            if r.state.is_active() {
                r.state = VmState::Stopping;
            }
        });
    }
    // The agent powers the guest off whatever its init; ACPI only works if
    // something in the guest (acpid, systemd) handles the power button.
    let asked_agent = match &shared.agent {
        Some(link) if link.ready() => {
            tokio::time::timeout(QUIT_GRACE, cove_agent_link::shutdown(link, false))
                .await
                .is_ok_and(|r| r.is_ok())
        }
        _ => false,
    };
    // Asked, not assumed: without a power button, the agent or quit.
    if !asked_agent && shared.backend.capabilities().graceful_shutdown {
        let _ = shared.control.power_off().await;
    }
    if wait_exited(shared, timeout).await {
        return format!(
            "shut down by the guest in {:.1}s",
            began.elapsed().as_secs_f64()
        );
    }
    let _ = tokio::time::timeout(QUIT_GRACE, shared.control.quit()).await;
    if wait_exited(shared, QUIT_GRACE).await {
        return format!(
            "the guest did not shut down within {}s; the VMM was told to quit",
            timeout.as_secs()
        );
    }
    kill(shared);
    wait_exited(shared, QUIT_GRACE).await;
    format!(
        "the guest did not shut down within {}s and the VMM did not quit; it was killed",
        timeout.as_secs()
    )
}

async fn wait_exited(shared: &Shared, timeout: Duration) -> bool {
    let mut phase = shared.phase.subscribe();
    tokio::time::timeout(
        timeout,
        phase.wait_for(|p| matches!(p, Phase::Exited { .. })),
    )
    .await
    .is_ok()
}

/// SIGKILL to the VMM's process group; its exit is then seen by `wait`.
pub fn kill(shared: &Shared) {
    let _ = shared.backend.kill(shared.vmm_pid);
}

pub struct Outcome {
    pub state: VmState,
    pub failure: Option<Failure>,
    pub detail: String,
}

/// Judges how the VMM ended: a stop somebody asked for or a guest that
/// powered itself off is `stopped`; anything else is `crashed`, with the
/// console lines that show why.
pub async fn outcome(shared: &Shared, status: Option<&ExitStatus>) -> Outcome {
    let log = shared.paths.vm(&shared.name).console_log();
    let tail = tail_lines(&log, 15);
    let failure = |message: String| Failure {
        message,
        hint: Some(format!(
            "run `cove why {}` or `cove logs {}`",
            shared.name, shared.name
        )),
        console_tail: tail.clone(),
    };
    if let Some(why) = &*shared.boot_failure.lock().await {
        // The boot failed and the supervisor killed the VMM itself: its SIGKILL is not evidence,
        // so the rules judge the console alone, and the boot's own failure is the fallback.
        let cause = super::judge::diagnose(shared, None)
            .primary()
            .map(|f| f.summary.clone());
        return Outcome {
            state: VmState::Crashed,
            failure: Some(failure(cause.unwrap_or_else(|| super::error_chain(why)))),
            detail: String::new(),
        };
    }
    // The cause `cove why` names, by the same rules.
    let diagnosis = super::judge::diagnose(shared, status);
    let cause = diagnosis.primary().map(|f| f.summary.clone());
    let panic = diagnosis.panicked;
    // The kernel's last word when the guest powered itself off; the only
    // evidence there is for an adopted VMM, whose exit status is unknown.
    let powered_off = tail.iter().any(|l| l.contains("reboot: Power down"));
    let clean_exit = status.map_or(powered_off, |s| s.success());
    match *shared.stop.lock().await {
        Some((StopKind::Graceful, _)) => Outcome {
            state: VmState::Stopped,
            failure: None,
            detail: "stopped".into(),
        },
        Some((StopKind::Kill, _)) => Outcome {
            state: VmState::Stopped,
            failure: None,
            detail: "killed".into(),
        },
        None if clean_exit && !panic => Outcome {
            state: VmState::Stopped,
            failure: Some(failure("the guest powered off".into()))
                .filter(|_| matches!(*shared.phase.borrow(), Phase::Booting)),
            detail: "the guest powered off".into(),
        },
        None => Outcome {
            state: VmState::Crashed,
            failure: Some(failure(match (cause, status) {
                (Some(cause), _) => cause,
                (None, Some(status)) => format!("the VMM {} unexpectedly", describe_exit(status)),
                (None, None) => "the VMM exited unexpectedly".to_owned(),
            })),
            detail: String::new(),
        },
    }
}

/// `exit status 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| "unknown".into());
            format!("was killed by signal {sig} ({name})")
        }
        _ => "ended".into(),
    }
}
