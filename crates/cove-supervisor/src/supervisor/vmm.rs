//! Launching the VMM, connecting to it, stopping it, and judging its exit.

use super::{Phase, Shared, StopKind, SuperviseError};
use crate::boot_image::BootImage;
use crate::console_log::tail_lines;
use cove_api::Failure;
use cove_backend::{Backend, DataDisk, Memory, VmSpec};
use cove_state::{Paths, VmPaths, VmRecord, VmState};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variable with extra QEMU arguments, read by the supervisor.
pub const EXTRA_ARGS_ENV: &str = "COVE_QEMU_EXTRA_ARGS";

/// How long the VMM may take to open its sockets.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restored guest's agent may take to apply the post-restore fixups.
pub const FIXUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `quit` may take before the VMM is killed.
const QUIT_GRACE: Duration = Duration::from_secs(3);

pub struct Launch {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub accel: cove_backend::Accel,
}

/// How the VMM starts: a cold boot with its RAM in a shared file (so it can be snapshotted), or
/// waiting for the device state of a snapshot whose memory file it maps privately.
pub enum Start<'a> {
    Boot,
    Restore { snapshot: &'a std::path::Path },
}

pub async fn launch(
    paths: &Paths,
    record: &VmRecord,
    image: &BootImage,
    start: Start<'_>,
) -> Result<Launch, SuperviseError> {
    let vm = paths.vm(record.name.as_str());
    for socket in [vm.qmp_socket(), vm.console_socket(), vm.agent_socket()] {
        let _ = std::fs::remove_file(socket);
    }
    let choice = cove_backend::host::accel::probe(&paths.cache);
    let qemu = cove_qemu::Qemu::find_for(
        record.machine,
        cove_backend::host::tsc::host_tsc_khz_cached(&paths.cache),
    )?;
    let (shares, daemons) = super::shares::start(&vm, record)?;
    let spec = VmSpec {
        name: record.name.to_string(),
        cpus: record.cpus,
        memory_mib: record.memory_mib,
        kernel: image.kernel.clone(),
        // Asked, not assumed: a backend without PVH boots the bzImage.
        vmlinux: image
            .vmlinux
            .clone()
            .filter(|_| qemu.capabilities().pvh_boot),
        initrd: image.initrd.clone(),
        cmdline_extra: cmdline_extra(image, record),
        root_disk: vm.root_disk(),
        data_disks: record
            .data_disks
            .iter()
            .map(|d| DataDisk {
                path: crate::data_disk::path(paths, d),
                serial: crate::data_disk::serial(d),
            })
            .collect(),
        ports: record.ports.clone(),
        machine: record.machine,
        accel: choice.accel,
        qmp_socket: vm.qmp_socket(),
        console_socket: vm.console_socket(),
        agent_socket: vm.agent_socket(),
        memory: match start {
            Start::Boot => Memory::SharedFile(vm.memory_file()),
            Start::Restore { snapshot } => {
                Memory::PrivateFile(snapshot.join(crate::snapshot::MEMORY))
            }
        },
        incoming: matches!(start, Start::Restore { .. }),
        shares,
    };
    let mut cmd = qemu.command(&spec)?;
    // An escape hatch for experiments and benchmarks (e.g. a second
    // virtio-serial port for qemu-guest-agent): extra QEMU arguments,
    // whitespace-separated. Recorded in qemu.cmdline like everything else.
    if let Ok(extra) = std::env::var(EXTRA_ARGS_ENV) {
        cmd.args(extra.split_whitespace());
    }
    std::fs::write(vm.qemu_cmdline(), render_cmdline(&cmd))?;
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
    let child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => {
            daemons.detach();
            c
        }
        Err(e) => {
            daemons.kill();
            return Err(SuperviseError::Boot(format!(
                "cannot start {}: {e}",
                qemu.binary.display()
            )));
        }
    };
    let pid = child.id().unwrap_or_default();
    tracing::info!(pid, accel = %choice.accel, reason = %choice.reason, "VMM started");
    Ok(Launch {
        child,
        pid,
        accel: choice.accel,
    })
}

/// The image's kernel arguments plus, for each mounted data disk,
/// `cove.disk=<serial>:<path>`, which the image's init reads to mount it.
fn cmdline_extra(image: &BootImage, record: &VmRecord) -> String {
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
    args.join(" ")
}

/// The command line as a shell would take it back: each argument quoted
/// where needed, so `sh qemu.cmdline` reruns the VMM exactly.
fn render_cmdline(cmd: &std::process::Command) -> String {
    let args = std::iter::once(cmd.get_program()).chain(cmd.get_args());
    let mut line = args
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    line.push('\n');
    line
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:,=+-@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Connects QMP and the console; the agent link connects on its own.
pub async fn connect(
    vm: &VmPaths,
    pid: u32,
) -> Result<(cove_qemu::QmpClient, tokio::net::UnixStream), String> {
    let alive = || crate::liveness::process_running(pid);
    let qmp_stream =
        cove_backend::sockets::connect_when_ready(&vm.qmp_socket(), SOCKET_TIMEOUT, alive)
            .await
            .map_err(|e| format!("QEMU's QMP socket: {e}"))?;
    let qmp = cove_qemu::QmpClient::from_stream(qmp_stream, &vm.qmp_socket())
        .await
        .map_err(|e| e.to_string())?;
    let console =
        cove_backend::sockets::connect_when_ready(&vm.console_socket(), SOCKET_TIMEOUT, alive)
            .await
            .map_err(|e| format!("QEMU's console socket: {e}"))?;
    Ok((qmp, console))
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
    if !asked_agent {
        let _ = shared.qmp.system_powerdown().await;
    }
    if wait_exited(shared, timeout).await {
        return format!(
            "shut down by the guest in {:.1}s",
            began.elapsed().as_secs_f64()
        );
    }
    let _ = tokio::time::timeout(QUIT_GRACE, shared.qmp.quit()).await;
    if wait_exited(shared, QUIT_GRACE).await {
        return format!(
            "the guest did not shut down within {}s; QEMU was told to quit",
            timeout.as_secs()
        );
    }
    kill(shared);
    wait_exited(shared, QUIT_GRACE).await;
    format!(
        "the guest did not shut down within {}s and QEMU did not quit; it was killed",
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
    let _ = cove_backend::process::kill_group(shared.vmm_pid, libc::SIGKILL);
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
    if let Some(message) = shared.boot_failure.lock().await.clone() {
        // The boot failed and the supervisor killed the VMM itself: its SIGKILL is not evidence,
        // so the rules judge the console alone, and the boot's own failure is the fallback.
        let cause = super::judge::diagnose(shared, None)
            .primary()
            .map(|f| f.summary.clone());
        return Outcome {
            state: VmState::Crashed,
            failure: Some(failure(cause.unwrap_or(message))),
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
                (None, Some(status)) => format!("QEMU {} unexpectedly", describe_exit(status)),
                (None, None) => "QEMU exited unexpectedly".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_are_quoted_only_where_a_shell_needs_it() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(
            shell_quote("file=/a/b.qcow2,if=none"),
            "file=/a/b.qcow2,if=none"
        );
        assert_eq!(
            shell_quote("console=ttyS0 panic=-1"),
            "'console=ttyS0 panic=-1'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
