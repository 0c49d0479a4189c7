//! Removing a VM, its files and (with --purge) its unshared data disks.

use super::reconcile::reconcile;
use super::stop::kill;
use crate::data_disk;
use crate::error::LifecycleError;
use crate::liveness;
use cove_state::{Paths, Store, VmRecord, VmState};

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
    crate::ram::release(&vm);
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
