//! Making a VM (its root disk over the image, its record, its networks) and changing a stopped
//! VM's resources.

use super::delete::delete;
use super::reconcile::reconcile;
use crate::boot_image;
use crate::data_disk;
use crate::error::LifecycleError;
use cove_backend::Machine;
use cove_state::store::now;
use cove_state::{Paths, PortForward, Store, VmName, VmRecord, VmState, files};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

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
    /// Let the guest reach the host's loopback (see `VmRecord::host_loopback`).
    pub host_loopback: bool,
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
    if opts.host_loopback && !opts.networks.is_empty() {
        return Err(LifecycleError::BadResources(
            "--host-loopback is for the default user-mode network; a VM on cove networks \
             reaches the host at its network's gateway address instead"
                .into(),
        ));
    }
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
        host_loopback: opts.host_loopback,
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
