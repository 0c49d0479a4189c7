//! The CLI side of a VM's life: create, start (spawn its supervisor), stop,
//! kill, delete, reconfigure, and the reconcile that makes every read true.

use crate::boot_image;
use crate::data_disk;
use crate::error::LifecycleError;
use crate::liveness;
use cove_api::{Request, Response};
use cove_backend::Machine;
use cove_state::store::now;
use cove_state::{Paths, PortForward, Store, VmName, VmRecord, VmState, files};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand that turns the `cove` binary into a supervisor.
pub const SUPERVISE_VERB: &str = "__supervise";

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub name: VmName,
    pub image: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub machine: Machine,
    /// The VMM that will run it.
    pub backend: cove_backend::BackendKind,
    pub ports: Vec<PortForward>,
    pub disks: Vec<data_disk::DiskRequest>,
    /// Host folders shared into the guest.
    pub mounts: Vec<cove_state::HostMount>,
    /// Cove networks to put the VM on (`--network`), in NIC order.
    pub networks: Vec<String>,
}

/// Creates a VM: a copy-on-write overlay of its image and a record, both or
/// neither (the overlay is staged and moved into place inside the store's
/// write transaction).
pub fn create(paths: &Paths, opts: &CreateOptions) -> Result<VmRecord, LifecycleError> {
    let mut store = Store::open(paths)?;
    let vm = paths.vm(opts.name.as_str());
    vm.check_socket_paths()?;
    validate_resources(Some(opts.cpus), Some(opts.memory_mib))?;
    if store.find_vm(opts.name.as_str())?.is_some() {
        return Err(cove_state::StoreError::AlreadyExists(opts.name.clone()).into());
    }
    // A VM its backend cannot boot here is refused, with the reason, before
    // anything is made (Firecracker without a KVM that runs vCPUs).
    let backend = crate::backends::for_kind(opts.backend)?;
    backend
        .probe_host(&paths.cache, false)
        .require_bootable(opts.backend.as_str())?;
    let image = boot_image::resolve(&store, &opts.image)?;
    let machine = Machine::for_arch(image.arch, opts.machine)
        .map_err(|e| LifecycleError::BadResources(format!("image `{}`: {e}", image.name)))?;
    if !opts.networks.is_empty() {
        cove_net::require_privileges()?;
        for (i, n) in opts.networks.iter().enumerate() {
            if opts.networks[..i].contains(n) {
                return Err(LifecycleError::BadResources(format!(
                    "network `{n}` is given twice; a VM has one NIC per network"
                )));
            }
            store.get_network(n).map_err(cove_net::NetError::from)?;
        }
    }
    for disk in &opts.disks {
        if let Some(mount) = disk.mount.as_deref() {
            data_disk::validate_mount(mount).map_err(|e| {
                LifecycleError::BadResources(format!("data disk `{}`: {e}", disk.name))
            })?;
        }
        data_disk::ensure(paths, &disk.name, disk.size_bytes)?;
    }
    let staging = tempfile_dir(&paths.vm_staging(), opts.name.as_str())?;
    let overlay = staging.join("root.qcow2");
    if let Err(e) = create_overlay(opts.backend, &image.rootfs, &overlay) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let record = VmRecord {
        name: opts.name.clone(),
        image_id: image.id.clone(),
        image_name: image.name.clone(),
        arch: image.arch,
        cpus: opts.cpus,
        memory_mib: opts.memory_mib,
        state: VmState::Created,
        supervisor_pid: None,
        vmm_pid: None,
        backend: opts.backend,
        accel: None,
        machine,
        ports: opts.ports.clone(),
        data_disks: opts.disks.iter().map(|d| d.name.clone()).collect(),
        disk_mounts: opts
            .disks
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.mount.clone()?)))
            .collect(),
        host_mounts: opts.mounts.clone(),
        networks: opts.networks.clone(),
        last_exit: None,
        agent_answered: false,
        last_error: None,
        created_at: now(),
        started_at: None,
        cloned_from: None,
        restored_from: None,
    };
    let result = store.create_vm(&record, || {
        // No record exists (we hold the write lock), so a directory here is
        // what an interrupted create or delete left behind: replace it.
        if vm.dir.exists() {
            std::fs::remove_dir_all(&vm.dir)?;
        }
        files::durable_rename(&staging, &vm.dir)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    // Addresses and names now, so peers resolve the VM before it first starts; a VM that
    // cannot be put on its networks is not left half made.
    if let Err(e) = cove_net::attach_vm(paths, opts.name.as_str(), &opts.networks) {
        let _ = delete(paths, opts.name.as_str(), true, false);
        return Err(e.into());
    }
    Ok(record)
}

/// Refuses resources no guest can boot with, before anything is written.
fn validate_resources(cpus: Option<u32>, memory_mib: Option<u64>) -> Result<(), LifecycleError> {
    if let Some(c) = cpus.filter(|c| *c == 0 || *c > 64) {
        return Err(LifecycleError::BadResources(format!(
            "--cpus {c} is out of range (1-64)"
        )));
    }
    let floor = cove_image::MIN_MEMORY_MIB;
    if let Some(m) = memory_mib.filter(|m| *m < floor) {
        return Err(LifecycleError::BadResources(format!(
            "--memory {m}M is below the {floor}M a cove image needs (its kernel and initramfs run \
             out of memory below about 80M); give it at least {floor}M, e.g. 256M"
        )));
    }
    Ok(())
}

pub(crate) fn tempfile_dir(
    parent: &Path,
    name: &str,
) -> Result<std::path::PathBuf, LifecycleError> {
    files::private_dir_all(parent)?;
    let dir = parent.join(format!("{name}.{}.{}", std::process::id(), now()));
    std::fs::DirBuilder::new()
        .mode(files::DIR_MODE)
        .create(&dir)?;
    Ok(dir)
}

/// The VM's own root disk over the image's root filesystem, made by the
/// backend that will run it.
fn create_overlay(
    backend: cove_backend::BackendKind,
    base: &Path,
    overlay: &Path,
) -> Result<(), LifecycleError> {
    crate::backends::for_kind(backend)?.create_root_disk(base, overlay)?;
    // The overlay holds everything the guest writes: its owner's alone, and
    // on disk before the VM that uses it is recorded.
    files::make_private(overlay)?;
    files::sync_file(overlay)?;
    Ok(())
}

/// Reads a VM and makes its recorded state true: a VM whose supervisor is
/// gone is never `running`, and a VM whose VMM died is `crashed` at once,
/// even before its supervisor has written down the details.
pub fn reconcile(store: &mut Store, paths: &Paths, name: &str) -> Result<VmRecord, LifecycleError> {
    let record = store.get_vm(name)?;
    if !record.state.is_active() {
        return Ok(record);
    }
    let vm = paths.vm(name);
    let supervisor_alive = liveness::is_locked(&vm.supervisor_lock())?;
    if !supervisor_alive
        && record
            .vmm_pid
            .is_some_and(|pid| vmm_is_ours(paths, &record, pid))
    {
        return adopt(store, paths, name);
    }
    let vmm_alive = record.vmm_pid.map(liveness::process_running);
    let verdict = match (supervisor_alive, vmm_alive) {
        (true, Some(false)) if record.state != VmState::Stopping => {
            Some((VmState::Crashed, "the VMM exited unexpectedly".to_owned()))
        }
        (true, _) => None,
        (false, _) if record.state == VmState::Stopping => Some((VmState::Stopped, String::new())),
        (false, _) => Some((
            VmState::Crashed,
            format!(
                "the supervisor exited without recording why; see {}",
                vm.supervisor_log().display()
            ),
        )),
    };
    let Some((state, why)) = verdict else {
        return Ok(record);
    };
    let (_, record) = store.update_vm(name, |r| {
        // Only overrule a claim that is still the one we judged; the
        // supervisor may have recorded the outcome meanwhile.
        if r.state.is_active() {
            r.state = state;
            if !why.is_empty() && r.last_error.is_none() {
                r.last_error = Some(why.clone());
            }
            if !supervisor_alive {
                r.supervisor_pid = None;
                r.vmm_pid = None;
            }
        }
    })?;
    Ok(record)
}

/// True when `pid` is the VMM of this VM (its backend tells), not a process
/// that reused the pid.
pub(crate) fn vmm_is_ours(paths: &Paths, record: &VmRecord, pid: u32) -> bool {
    let transports = paths.vm(record.name.as_str()).transports();
    crate::backends::for_kind(record.backend).is_ok_and(|b| b.is_ours(pid, &transports))
}

/// The supervisor died but its VM runs on: start a supervisor that takes
/// it over (console, VMM control, agent link), and wait until it answers.
fn adopt(store: &mut Store, paths: &Paths, name: &str) -> Result<VmRecord, LifecycleError> {
    let vm = paths.vm(name);
    if let Some(lock) = liveness::try_lock(&vm.supervisor_lock())? {
        let opts = StartOptions {
            boot_timeout: ADOPT_TIMEOUT,
            from: None,
        };
        let pid = spawn_supervisor(paths, name, &opts, &lock, true)?;
        drop(lock);
        tracing::info!(name, pid, "adopting a running VM whose supervisor died");
        wait_ready(paths, name, ADOPT_TIMEOUT)?;
    }
    Ok(store.get_vm(name)?)
}

/// How long a new supervisor may take to take over a running VM.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Every VM, reconciled.
pub fn list(paths: &Paths) -> Result<Vec<VmRecord>, LifecycleError> {
    let mut store = Store::open(paths)?;
    let names: Vec<String> = store
        .list_vms()?
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    names
        .iter()
        .map(|n| reconcile(&mut store, paths, n))
        .collect()
}

pub fn show(paths: &Paths, name: &str) -> Result<VmRecord, LifecycleError> {
    let mut store = Store::open(paths)?;
    reconcile(&mut store, paths, name)
}

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

fn spawn_supervisor(
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
    let socket = vm.control_socket();
    // The supervisor binds its socket within milliseconds; boot itself is
    // bounded by the supervisor, which knows the timeout too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    loop {
        match runtime.block_on(cove_api::call(&socket, &Request::WaitReady)) {
            Ok(Response::Ready { boot_ms }) => return Ok(boot_ms),
            Ok(Response::Failed(f)) => return Err(LifecycleError::BootFailed(f)),
            Ok(other) => return Err(LifecycleError::Protocol(format!("{other:?}"))),
            Err(_) if !liveness::is_locked(&vm.supervisor_lock())? => {
                return Err(supervisor_died(paths, name));
            }
            Err(_) if Instant::now() > deadline + boot_timeout => {
                return Err(LifecycleError::SupervisorUnreachable(name.to_owned()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    AlreadyStopped,
    Stopped,
}

/// Asks the supervisor for a graceful stop, forced after `timeout`.
pub fn stop(
    paths: &Paths,
    name: &str,
    timeout: Duration,
) -> Result<(StopOutcome, String), LifecycleError> {
    let mut store = Store::open(paths)?;
    let record = reconcile(&mut store, paths, name)?;
    if !record.state.is_active() {
        return Ok((StopOutcome::AlreadyStopped, String::new()));
    }
    let request = Request::Stop {
        timeout_secs: timeout.as_secs(),
    };
    let detail = control_call(paths, name, &request)?;
    wait_supervisor_gone(paths, name);
    Ok((StopOutcome::Stopped, detail))
}

/// Ends the VMM at once.
pub fn kill(paths: &Paths, name: &str) -> Result<StopOutcome, LifecycleError> {
    let mut store = Store::open(paths)?;
    let record = reconcile(&mut store, paths, name)?;
    if !record.state.is_active() {
        return Ok(StopOutcome::AlreadyStopped);
    }
    if control_call(paths, name, &Request::Kill).is_err() {
        // A supervisor that cannot answer must not keep a VM alive; but the
        // recorded pid is signalled only if it is still this VM's VMM (a
        // pid the kernel reused belongs to somebody else).
        if let Some(pid) = record.vmm_pid.filter(|p| vmm_is_ours(paths, &record, *p))
            && let Ok(backend) = crate::backends::for_kind(record.backend)
        {
            let _ = backend.kill(pid);
        }
    }
    let after = wait_inactive(&mut store, paths, name, Duration::from_secs(10))?;
    if after.state.is_active() {
        // Never report a kill that did not happen.
        return Err(LifecycleError::SupervisorUnreachable(name.to_owned()));
    }
    wait_supervisor_gone(paths, name);
    Ok(StopOutcome::Stopped)
}

/// After the VM stopped, its supervisor delivers its last answers and
/// exits within moments; waiting for that (bounded) means a `start` right
/// after a `stop` never finds the old supervisor still holding the lock.
fn wait_supervisor_gone(paths: &Paths, name: &str) {
    let lock = paths.vm(name).supervisor_lock();
    let deadline = Instant::now() + Duration::from_secs(5);
    while liveness::is_locked(&lock).unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn control_call(
    paths: &Paths,
    name: &str,
    request: &Request,
) -> Result<String, LifecycleError> {
    let socket = paths.vm(name).control_socket();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(cove_api::call(&socket, request)) {
        Ok(Response::Done { detail }) => Ok(detail),
        Ok(Response::Failed(f)) => Err(LifecycleError::BootFailed(f)),
        Ok(other) => Err(LifecycleError::Protocol(format!("{other:?}"))),
        Err(_) => Err(LifecycleError::SupervisorUnreachable(name.to_owned())),
    }
}

fn wait_inactive(
    store: &mut Store,
    paths: &Paths,
    name: &str,
    timeout: Duration,
) -> Result<VmRecord, LifecycleError> {
    let deadline = Instant::now() + timeout;
    loop {
        let record = reconcile(store, paths, name)?;
        if !record.state.is_active() || Instant::now() > deadline {
            return Ok(record);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes a VM and every file of it. A running VM is refused unless
/// `force`. With `purge`, its data disks go too, unless another VM uses one
/// (then nothing at all is deleted).
pub fn delete(paths: &Paths, name: &str, force: bool, purge: bool) -> Result<(), LifecycleError> {
    let mut store = Store::open(paths)?;
    let record = reconcile(&mut store, paths, name)?;
    if record.state.is_active() {
        if !force {
            return Err(LifecycleError::Running(name.to_owned(), record.state));
        }
        kill(paths, name)?;
    }
    // Clones' disks are backed by this VM's snapshots: deleting it would break them.
    let clones = crate::snapshot::all_clones_of(&store.list_vms()?, name);
    if !clones.is_empty() {
        return Err(LifecycleError::BadResources(format!(
            "`{name}` has clones that depend on its snapshots: {}; delete them first",
            clones.join(", ")
        )));
    }
    // Off its networks (TAPs and names) first; refused without the privileges to do so, so
    // nothing of it is left on the host.
    cove_net::detach_vm(paths, name)?;
    let purged = if purge {
        disks_to_purge(&store, &record)?
    } else {
        Vec::new()
    };
    let vm = paths.vm(name);
    // A `start` holds this lock from before its supervisor exists until that
    // supervisor exits; holding it here means no supervisor can be spawned
    // (and no VMM launched) for this VM while its files and record go: a
    // start racing a delete left an orphan VMM. A VM directory already gone
    // (an interrupted delete) has no lock to take.
    let _lock = match liveness::try_lock(&vm.supervisor_lock()) {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => return Err(LifecycleError::Running(name.to_owned(), VmState::Starting)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    // Under the lock the record is what it is: a start that won the race
    // made it active.
    let record = store.get_vm(name)?;
    if record.state.is_active() {
        return Err(LifecycleError::Running(name.to_owned(), record.state));
    }
    // Record first: once it is gone no command can start the VM, and a
    // directory an interrupted delete leaves behind is replaced by the next
    // `create` of the name.
    store.delete_vm(name)?;
    for dir in [&vm.run, &vm.dir] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    for disk in purged {
        data_disk::remove(paths, &disk)?;
    }
    Ok(())
}

/// Removes a data disk no VM uses; refuses one that a VM still lists.
pub fn remove_unused_disk(paths: &Paths, disk: &str) -> Result<(), LifecycleError> {
    let users: Vec<String> = Store::open(paths)?
        .list_vms()?
        .into_iter()
        .filter(|vm| data_disk::uses_shared(vm, disk))
        .map(|vm| vm.name.to_string())
        .collect();
    if let Some(vm) = users.first() {
        return Err(LifecycleError::DiskInUse {
            disk: disk.to_owned(),
            vm: vm.clone(),
            users,
        });
    }
    data_disk::remove(paths, disk)
}

/// The shared data disks of `record` no other VM uses; refuses if another does. (A clone's
/// own disks go with its directory.)
fn disks_to_purge(store: &Store, record: &VmRecord) -> Result<Vec<String>, LifecycleError> {
    if data_disk::owns_its_disks(record) {
        return Ok(Vec::new());
    }
    let others = store.list_vms()?;
    for disk in &record.data_disks {
        let users: Vec<String> = others
            .iter()
            .filter(|o| o.name != record.name && data_disk::uses_shared(o, disk))
            .map(|o| o.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(LifecycleError::DiskInUse {
                disk: disk.clone(),
                vm: record.name.to_string(),
                users,
            });
        }
    }
    Ok(record.data_disks.clone())
}

/// Changes a stopped VM's resources.
pub fn set(
    paths: &Paths,
    name: &str,
    cpus: Option<u32>,
    memory_mib: Option<u64>,
) -> Result<VmRecord, LifecycleError> {
    let mut store = Store::open(paths)?;
    let record = reconcile(&mut store, paths, name)?;
    validate_resources(cpus, memory_mib)?;
    if !record.state.can_reconfigure() {
        return Err(LifecycleError::Running(name.to_owned(), record.state));
    }
    let (_, record) = store.update_vm(name, |r| {
        if let Some(c) = cpus {
            r.cpus = c;
        }
        if let Some(m) = memory_mib {
            r.memory_mib = m;
        }
    })?;
    Ok(record)
}

#[cfg(test)]
mod resource_tests {
    use super::*;

    #[test]
    fn memory_below_what_an_image_needs_is_refused_with_the_floor_named() {
        let err = validate_resources(Some(1), Some(72))
            .unwrap_err()
            .to_string();
        assert!(err.contains("72M") && err.contains("at least 96M"), "{err}");
        validate_resources(Some(1), Some(cove_image::MIN_MEMORY_MIB)).unwrap();
        validate_resources(None, None).unwrap();
    }
}
