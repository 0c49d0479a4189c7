//! Snapshots: a VM's device state, memory and every disk, saved together while it was paused,
//! in `<vm dir>/snapshots/<tag>/` with a manifest that says what they fit.
//!
//! Files of a snapshot: `state` (device state as the VMM saved it, without RAM), `memory`
//! (guest RAM, mapped privately by every VM restored from it), `root.qcow2` (the root overlay
//! as it was, still backed by the image), `data-<name>.qcow2` per data disk, `manifest.json`.
//! A restore checks the manifest against the VM and the files first: a snapshot that no longer
//! fits is refused with the reason, never restored into a broken guest.

use crate::error::LifecycleError;
use cove_state::{Paths, VmRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bumped when the layout of a snapshot changes.
const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const STATE: &str = "state";
pub const MEMORY: &str = "memory";
pub const ROOT: &str = "root.qcow2";

/// Where the save of snapshot `tag` by the supervisor with pid `pid` writes before its one
/// rename into place: beside the snapshots, hidden (`.TAG.PID`), so a save cut short never
/// looks like a whole snapshot.
pub fn staging_dir(snapshots: &Path, tag: &str, pid: u32) -> PathBuf {
    snapshots.join(format!(".{tag}.{pid}"))
}

/// Removes what saves cut short by a kill left in `snapshots`: staging directories
/// ([`staging_dir`]) whose supervisor no longer runs (a memory copy each, as large as the
/// guest's RAM in use). A directory whose pid was reused by a live process waits for a later
/// call; `cove delete` removes all of them with the VM.
pub fn remove_stale_staging(snapshots: &Path) {
    let Ok(entries) = std::fs::read_dir(snapshots) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::liveness::process_running(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// What a snapshot was taken of, and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub vm: String,
    pub tag: String,
    pub created_at: i64,
    pub image_id: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub machine: String,
    /// Data disks in the order the VM attaches them (device state depends on it).
    pub data_disks: Vec<String>,
    pub disk_mounts: std::collections::BTreeMap<String, String>,
    pub cove_version: String,
    /// The QEMU binary as size and modification time: an upgrade changes it, and QEMU loads
    /// device state only from the version that wrote it (for what cove can promise).
    pub qemu: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// SHA-256 of files small enough to check at every restore (the device state); `None` for
    /// the memory and disks, whose size is checked (hashing them would cost more than the
    /// restore itself).
    pub sha256: Option<String>,
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("`{vm}` has no snapshot `{tag}`; `cove snapshot ls {vm}` lists them")]
    NotFound { vm: String, tag: String },
    #[error(
        "snapshot `{vm}@{tag}` no longer fits `{target}`: {reason}; it was not restored. Boot \
         cold with `cove start {target}` (and take a new snapshot with `cove snapshot {vm} {tag}`)"
    )]
    Stale {
        vm: String,
        tag: String,
        /// The VM it was to be restored into.
        target: String,
        reason: String,
    },
    #[error(
        "snapshot tag {0:?} must be 1-32 characters of a-z, 0-9, '-', '_' or '.', not starting with '.'"
    )]
    BadTag(String),
    #[error(
        "`{vm}` already has a snapshot `{tag}`; remove it first (`cove snapshot rm {vm} {tag}`)"
    )]
    Exists { vm: String, tag: String },
    #[error("snapshot `{vm}@{tag}` is the base of {clones}; delete those VMs first")]
    InUse {
        vm: String,
        tag: String,
        clones: String,
    },
}

pub fn validate_tag(tag: &str) -> Result<(), SnapshotError> {
    let ok = !tag.is_empty()
        && tag.len() <= 32
        && !tag.starts_with('.')
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadTag(tag.to_owned()))
    }
}

/// The VMM binary's identity (see [`Manifest::qemu`]), as its backend tells it.
pub fn vmm_identity(backend: cove_backend::BackendKind) -> String {
    crate::backends::for_kind(backend).map_or_else(|_| "absent".into(), |b| b.identity())
}

pub use cove_state::paths::data_disk_file;

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The manifest of a snapshot whose files are in `dir`, for `record` as it runs now.
pub fn manifest_for(dir: &Path, record: &VmRecord, tag: &str) -> std::io::Result<Manifest> {
    let mut names = vec![STATE.to_owned(), MEMORY.to_owned(), ROOT.to_owned()];
    names.extend(record.data_disks.iter().map(|d| data_disk_file(d)));
    let files = names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let size = std::fs::metadata(&path)?.len();
            let sha256 = (name == STATE).then(|| sha256_file(&path)).transpose()?;
            Ok(FileEntry { name, size, sha256 })
        })
        .collect::<std::io::Result<_>>()?;
    Ok(Manifest {
        format: FORMAT,
        vm: record.name.to_string(),
        tag: tag.to_owned(),
        created_at: cove_state::store::now(),
        image_id: record.image_id.clone(),
        cpus: record.cpus,
        memory_mib: record.memory_mib,
        machine: record.machine.to_string(),
        data_disks: record.data_disks.clone(),
        disk_mounts: record.disk_mounts.clone(),
        cove_version: env!("CARGO_PKG_VERSION").to_owned(),
        qemu: vmm_identity(record.backend),
        files,
    })
}

/// Reads a snapshot's manifest and checks it against `record` (the VM that will run it: the
/// snapshot's own VM, or a clone with the same settings) and its files.
pub fn check(
    paths: &Paths,
    owner: &str,
    tag: &str,
    record: &VmRecord,
) -> Result<Manifest, LifecycleError> {
    let dir = paths.vm(owner).snapshot(tag);
    let stale = |reason: String| SnapshotError::Stale {
        vm: owner.to_owned(),
        tag: tag.to_owned(),
        target: record.name.to_string(),
        reason,
    };
    let text = match std::fs::read(dir.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::NotFound {
                vm: owner.to_owned(),
                tag: tag.to_owned(),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| stale(format!("its manifest is unreadable ({e})")))?;
    let mut differs = Vec::new();
    if m.format != FORMAT {
        differs.push(format!(
            "snapshot format {} (this cove reads {FORMAT})",
            m.format
        ));
    }
    if m.image_id != record.image_id {
        differs.push(format!(
            "the image was rebuilt (snapshot of {}, the VM now uses {})",
            short(&m.image_id),
            short(&record.image_id)
        ));
    }
    if m.cpus != record.cpus {
        differs.push(format!(
            "CPUs changed ({} then, {} now)",
            m.cpus, record.cpus
        ));
    }
    if m.memory_mib != record.memory_mib {
        differs.push(format!(
            "memory changed ({}M then, {}M now)",
            m.memory_mib, record.memory_mib
        ));
    }
    if m.machine != record.machine.as_str() {
        differs.push(format!(
            "machine changed ({} then, {} now)",
            m.machine, record.machine
        ));
    }
    if m.data_disks.len() != record.data_disks.len() {
        differs.push("the data disks changed".into());
    }
    let cove = env!("CARGO_PKG_VERSION");
    if m.cove_version != cove {
        differs.push(format!(
            "cove was upgraded ({} then, {cove} now)",
            m.cove_version
        ));
    }
    let vmm = vmm_identity(record.backend);
    if m.qemu != vmm {
        differs.push(format!("the VMM changed ({} then, {vmm} now)", m.qemu));
    }
    for f in &m.files {
        let path = dir.join(&f.name);
        match std::fs::metadata(&path) {
            Err(_) => differs.push(format!("its file {} is missing", f.name)),
            Ok(meta) if meta.len() != f.size => differs.push(format!(
                "its file {} is {} bytes, not {} (truncated or replaced)",
                f.name,
                meta.len(),
                f.size
            )),
            Ok(_) => {
                if let Some(want) = &f.sha256
                    && sha256_file(&path)? != *want
                {
                    differs.push(format!("its file {} is corrupt (SHA-256 differs)", f.name));
                }
            }
        }
    }
    if differs.is_empty() {
        Ok(m)
    } else {
        Err(stale(differs.join("; ")).into())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A snapshot as `cove snapshot ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub tag: String,
    pub created_at: i64,
    pub bytes: u64,
    /// Allocated on disk (memory and disks are sparse).
    pub disk_bytes: u64,
    pub clones: Vec<String>,
}

/// The snapshots of `vm`, oldest first.
pub fn list(paths: &Paths, vm: &str) -> Result<Vec<Listed>, LifecycleError> {
    let store = cove_state::Store::open(paths)?;
    let all = store.list_vms()?;
    let dir = paths.vm(vm).snapshots();
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(text) = std::fs::read(entry.path().join(MANIFEST)) else {
            continue; // a snapshot being written, or an interrupted one
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&text) else {
            continue;
        };
        let (mut bytes, mut disk_bytes) = (0, 0);
        for f in &m.files {
            if let Ok(meta) = std::fs::metadata(entry.path().join(&f.name)) {
                use std::os::unix::fs::MetadataExt;
                bytes += meta.len();
                disk_bytes += meta.blocks() * 512;
            }
        }
        out.push(Listed {
            clones: clones_of(&all, vm, &m.tag),
            tag: m.tag,
            created_at: m.created_at,
            bytes,
            disk_bytes,
        });
    }
    out.sort_by_key(|l| l.created_at);
    Ok(out)
}

/// VMs whose disks are backed by `vm@tag`.
pub fn clones_of(all: &[VmRecord], vm: &str, tag: &str) -> Vec<String> {
    let origin = format!("{vm}@{tag}");
    all.iter()
        .filter(|r| r.cloned_from.as_deref() == Some(origin.as_str()))
        .map(|r| r.name.to_string())
        .collect()
}

/// VMs cloned from any snapshot of `vm`.
pub fn all_clones_of(all: &[VmRecord], vm: &str) -> Vec<String> {
    let prefix = format!("{vm}@");
    all.iter()
        .filter(|r| {
            r.cloned_from
                .as_deref()
                .is_some_and(|c| c.starts_with(&prefix))
        })
        .map(|r| {
            format!(
                "{} (from {})",
                r.name,
                r.cloned_from.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// Removes a snapshot no clone depends on.
pub fn remove(paths: &Paths, vm: &str, tag: &str) -> Result<(), LifecycleError> {
    validate_tag(tag)?;
    let store = cove_state::Store::open(paths)?;
    let clones = clones_of(&store.list_vms()?, vm, tag);
    if !clones.is_empty() {
        return Err(SnapshotError::InUse {
            vm: vm.to_owned(),
            tag: tag.to_owned(),
            clones: clones.join(", "),
        }
        .into());
    }
    let dir = paths.vm(vm).snapshot(tag);
    if !dir.join(MANIFEST).exists() {
        return Err(SnapshotError::NotFound {
            vm: vm.to_owned(),
            tag: tag.to_owned(),
        }
        .into());
    }
    // The manifest first: a half-removed snapshot is never mistaken for a whole one.
    std::fs::remove_file(dir.join(MANIFEST))?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// [`cove_util::sparse::copy_sparse`], its failure with the next step for a VM's files.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), LifecycleError> {
    cove_util::sparse::copy_sparse(from, to).map_err(|tool| LifecycleError::Tool {
        tool,
        fix: "check free space where cove keeps its VMs",
    })
}

/// A child of a snapshot's disk: the VM's disk as the snapshot had it, its writes its own.
pub fn overlay_of(
    backend: cove_backend::BackendKind,
    base: &Path,
    overlay: &Path,
) -> Result<(), LifecycleError> {
    let tmp = overlay.with_extension("qcow2.new");
    crate::backends::for_kind(backend)?.create_child_disk(base, &tmp)?;
    std::fs::rename(&tmp, overlay)?;
    Ok(())
}

/// Puts the snapshot's disks in place for a restore of `record` from `owner@tag`, as the
/// snapshot has them (their content must match the memory image the guest resumes with). A
/// clone restoring its origin gets new children of the snapshot's copies (that snapshot cannot
/// go while the clone exists). Any other restore gets copies, so the VM never depends on the
/// snapshot's files (`cove snapshot rm` may remove them); shared data disks are rolled back.
pub fn prepare_disks(
    paths: &Paths,
    owner: &str,
    tag: &str,
    record: &VmRecord,
) -> Result<(), LifecycleError> {
    let snap = paths.vm(owner).snapshot(tag);
    let origin = format!("{owner}@{tag}");
    let clone = record.cloned_from.as_deref() == Some(origin.as_str());
    let put = |saved: &Path, target: &Path| {
        if clone {
            return overlay_of(record.backend, saved, target);
        }
        let tmp: PathBuf = target.with_extension("qcow2.restoring");
        copy_sparse(saved, &tmp)?;
        std::fs::rename(&tmp, target)?;
        Ok(())
    };
    let mut disks = vec![(snap.join(ROOT), paths.vm(record.name.as_str()).root_disk())];
    disks.extend(record.data_disks.iter().map(|disk| {
        (
            snap.join(data_disk_file(disk)),
            crate::data_disk::path_for(paths, record, disk),
        )
    }));
    // All at once: a restore waits for the slowest copy, not their sum.
    std::thread::scope(|scope| {
        let copies: Vec<_> = disks
            .iter()
            .map(|(saved, target)| scope.spawn(|| put(saved, target)))
            .collect();
        copies
            .into_iter()
            .try_for_each(|c| c.join().expect("a disk copy panicked"))
    })
}

/// How long the supervisor may take to save a running VM (its device state and disks; the RAM
/// is already in the memory file).
const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes snapshot `tag` of the running VM `name`; with `resume: false` the VM ends afterwards.
pub fn take(paths: &Paths, name: &str, tag: &str, resume: bool) -> Result<String, LifecycleError> {
    validate_tag(tag)?;
    let record = crate::lifecycle::show(paths, name)?;
    if record.state != cove_state::VmState::Running {
        return Err(LifecycleError::BadResources(format!(
            "`{name}` is {}; a snapshot is taken of a running VM (`cove start {name}` first)",
            record.state
        )));
    }
    if paths.vm(name).snapshot(tag).exists() {
        return Err(SnapshotError::Exists {
            vm: name.to_owned(),
            tag: tag.to_owned(),
        }
        .into());
    }
    crate::lifecycle::control_call(
        paths,
        name,
        crate::ControlOp::Snapshot,
        &cove_api::Request::Snapshot {
            tag: tag.to_owned(),
            resume,
        },
        SAVE_TIMEOUT,
    )
}

/// Creates VM `name` from snapshot `origin` (`OWNER@TAG`): the owner's settings and declared
/// checks, a root disk and data disks of its own backed by the snapshot's copies (the owner's
/// disks are never attached to it), and no forwarded ports (two VMs cannot hold one host port).
/// Its first `start` restores the snapshot.
pub fn create_clone(
    paths: &Paths,
    origin: &str,
    name: &cove_state::VmName,
) -> Result<VmRecord, LifecycleError> {
    create_clone_with_ports(paths, origin, name, Vec::new())
}

/// [`create_clone`] with host forwards of its own (host ports the owner does not hold).
pub fn create_clone_with_ports(
    paths: &Paths,
    origin: &str,
    name: &cove_state::VmName,
    ports: Vec<cove_state::PortForward>,
) -> Result<VmRecord, LifecycleError> {
    let (owner, tag) = origin.split_once('@').ok_or_else(|| {
        LifecycleError::BadResources(format!(
            "{origin:?} names no snapshot; write NAME@TAG (`cove snapshot ls NAME`)"
        ))
    })?;
    validate_tag(tag)?;
    let mut store = cove_state::Store::open(paths)?;
    let source = store.get_vm(owner)?;
    let manifest = check(paths, owner, tag, &source)?;
    if !source.networks.is_empty() {
        // On its source's networks with an address, MAC, TAP and name of its own (attached
        // below); its first start moves the guest's NICs to them.
        cove_net::require_privileges()?;
    }
    if store.find_vm(name.as_str())?.is_some() {
        return Err(cove_state::StoreError::AlreadyExists(name.clone()).into());
    }
    let vm = paths.vm(name.as_str());
    vm.check_socket_paths()?;
    let staging = crate::lifecycle::tempfile_dir(&paths.vm_staging(), name.as_str())?;
    let snap = paths.vm(owner).snapshot(tag);
    // The staging directory becomes the clone's directory, its own disks made inside it.
    let prepared = overlay_of(source.backend, &snap.join(ROOT), &staging.join(ROOT))
        .and_then(|()| {
            manifest.data_disks.iter().try_for_each(|disk| {
                overlay_of(
                    source.backend,
                    &snap.join(data_disk_file(disk)),
                    &staging.join(data_disk_file(disk)),
                )
            })
        })
        .and_then(|()| copy_checks(&paths.vm(owner).checks_file(), &staging));
    if let Err(e) = prepared {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let record = VmRecord {
        name: name.clone(),
        state: cove_state::VmState::Created,
        supervisor_pid: None,
        vmm_pid: None,
        accel: None,
        ports,
        last_exit: None,
        agent_answered: false,
        last_error: None,
        created_at: cove_state::store::now(),
        started_at: None,
        cloned_from: Some(format!("{owner}@{tag}")),
        restored_from: None,
        ..source
    };
    let result = store.create_vm(&record, || {
        if vm.dir.exists() {
            std::fs::remove_dir_all(&vm.dir)?;
        }
        std::fs::rename(&staging, &vm.dir)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    // Names now, as `create` does, so peers resolve the clone before it first starts.
    if let Err(e) = cove_net::attach_vm(paths, name.as_str(), &record.networks) {
        let _ = crate::lifecycle::delete(paths, name.as_str(), true, false);
        return Err(e.into());
    }
    Ok(record)
}

/// A clone runs the checks its owner declared (`cove up` wrote them beside the owner's disks).
fn copy_checks(owner_checks: &Path, clone_dir: &Path) -> Result<(), LifecycleError> {
    let Some(file) = owner_checks.file_name() else {
        return Ok(());
    };
    match std::fs::read(owner_checks) {
        Ok(text) => {
            let target = clone_dir.join(file);
            std::fs::write(&target, text)?;
            cove_state::files::make_private(&target)?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A save killed midway leaves its staging directory; the next save's sweep removes it,
    /// and never one whose supervisor still runs, nor a snapshot.
    #[test]
    fn only_staging_of_supervisors_that_are_gone_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        // No process ever has pid_max as its pid (pids are below it).
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let dead = staging_dir(dir.path(), "v1.2", pid_max);
        let live = staging_dir(dir.path(), "v1.2", std::process::id());
        let whole = dir.path().join("v1.2");
        for d in [&dead, &live, &whole] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(MEMORY), b"x").unwrap();
        }
        remove_stale_staging(dir.path());
        assert!(!dead.exists());
        assert!(live.exists() && whole.exists());
    }

    #[test]
    fn tags_are_plain_names() {
        for ok in ["base", "v1.2", "after-init_2"] {
            validate_tag(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "UP", &"x".repeat(33), "a b"] {
            assert!(validate_tag(bad).is_err(), "{bad:?}");
        }
    }
}
