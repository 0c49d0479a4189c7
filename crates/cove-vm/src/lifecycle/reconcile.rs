//! Reading VMs so that what the store says is true: a VM whose supervisor is gone is never
//! `running`, and a VM whose supervisor died while its VMM runs on is adopted.

use super::start::{StartOptions, spawn_supervisor, wait_ready};
use crate::error::LifecycleError;
use crate::liveness;
use cove_state::{Paths, Store, VmRecord, VmState};
use std::time::Duration;

/// Reads a VM and makes its recorded state true: a VM whose supervisor is
/// gone is never `running`, and a VM whose VMM died is `crashed` at once,
/// even before its supervisor has written down the details.
pub fn reconcile(store: &mut Store, paths: &Paths, name: &str) -> Result<VmRecord, LifecycleError> {
    let record = store.get_vm(name)?;
    reconcile_record(store, paths, record)
}

/// [`reconcile`] of a record just read: an inactive one is true as it is (no second read).
fn reconcile_record(
    store: &mut Store,
    paths: &Paths,
    record: VmRecord,
) -> Result<VmRecord, LifecycleError> {
    let name = record.name.to_string();
    let name = name.as_str();
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
    if !supervisor_alive {
        // Its VMM is gone too (or it would have been adopted above): the guest's RAM file holds
        // memory nobody will use.
        crate::ram::release(&vm);
    }
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

/// Every VM, reconciled. One read of all records; only the active ones cost more (a lock and a
/// pid check each), so `cove list` stays fast with many VMs.
pub fn list(paths: &Paths) -> Result<Vec<VmRecord>, LifecycleError> {
    let mut store = Store::open(paths)?;
    store
        .list_vms()?
        .into_iter()
        .map(|r| reconcile_record(&mut store, paths, r))
        .collect()
}

pub fn show(paths: &Paths, name: &str) -> Result<VmRecord, LifecycleError> {
    let mut store = Store::open(paths)?;
    reconcile(&mut store, paths, name)
}
