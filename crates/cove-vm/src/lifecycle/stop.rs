//! Stopping and killing a VM through its supervisor (the VMM directly only when the
//! supervisor cannot answer).

use super::reconcile::{reconcile, vmm_is_ours};
use crate::error::{ControlOp, LifecycleError};
use crate::liveness;
use cove_api::{Client, Request};
use cove_state::{Paths, Store, VmRecord};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    AlreadyStopped,
    Stopped,
}

/// What a stop may take beyond the guest's own timeout: the supervisor's quit and kill graces.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// How long a kill may take to be carried out and recorded.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

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
    let detail = control_call(paths, name, ControlOp::Stop, &request, timeout + STOP_SLACK)?;
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
    let asked = control_call(paths, name, ControlOp::Kill, &Request::Kill, KILL_TIMEOUT);
    if let Err(e) = &asked {
        // A supervisor that cannot answer (or speaks another API version) must not keep a VM
        // alive; but the recorded pid is signalled only if it is still this VM's VMM (a pid
        // the kernel reused belongs to somebody else).
        tracing::info!(
            name,
            "the supervisor did not carry out the kill ({e}); signalling the VMM"
        );
        if let Some(pid) = record.vmm_pid.filter(|p| vmm_is_ours(paths, &record, *p))
            && let Ok(backend) = crate::backends::for_kind(record.backend)
        {
            let _ = backend.kill(pid);
        }
    }
    let after = wait_inactive(&mut store, paths, name, KILL_TIMEOUT)?;
    if after.state.is_active() {
        // Never report a kill that did not happen.
        return Err(LifecycleError::KillUnconfirmed {
            vm: name.to_owned(),
            state: after.state,
            supervisor: asked.err().map(Box::new),
        });
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

/// The one client of VM `name`'s supervisor.
pub(crate) fn client(paths: &Paths, name: &str) -> Client {
    Client::new(name, paths.vm(name).control_socket())
}

/// Sends `request` (answered `Done`) to the supervisor of `name`; its failure keeps its type and
/// says which operation it ended.
pub(crate) fn control_call(
    paths: &Paths,
    name: &str,
    op: ControlOp,
    request: &Request,
    timeout: Duration,
) -> Result<String, LifecycleError> {
    client(paths, name)
        .call_done(request, timeout)
        .map_err(|source| LifecycleError::Control {
            vm: name.to_owned(),
            op,
            source,
        })
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
