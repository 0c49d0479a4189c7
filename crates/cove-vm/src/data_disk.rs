//! Persistent data disks: qcow2 files under `Paths::data_disks()` that
//! outlive the VMs using them (and the images those VMs were built from).
//! Each is created holding an empty ext4 filesystem labelled with its name,
//! so a guest can mount it at once; it reaches the guest as a virtio disk
//! with serial `data-<name>`, and the image's init mounts it where the VM
//! record says (`cove.disk=` on the kernel command line).

use crate::error::LifecycleError;
use cove_state::{Paths, VmRecord, files};
use std::path::PathBuf;
use std::process::Command;

/// A data disk a VM asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRequest {
    pub name: String,
    /// Used only when the disk does not exist yet.
    pub size_bytes: u64,
    /// Where the guest mounts it; unmounted when absent.
    pub mount: Option<String>,
}

/// virtio-blk serials hold 20 bytes, and a data disk's is `data-<name>`.
pub const MAX_NAME_LEN: usize = cove_guest::MAX_DATA_DISK_NAME_LEN;

/// Checks a data disk name: the rules of VM names, at most [`MAX_NAME_LEN`] long.
pub fn validate_name(name: &str) -> Result<(), String> {
    cove_state::VmName::new(name).map_err(|e| format!("data disk name: {e}"))?;
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "data disk name `{name}` is longer than {MAX_NAME_LEN} characters (the guest sees it as a \
             20-byte virtio serial `data-<name>`)"
        ));
    }
    Ok(())
}

/// Checks where a guest mounts a data disk. The path travels on the kernel
/// command line (`cove.disk=<serial>:<path>`), which the kernel splits on
/// whitespace and the guest's init reads in a shell: a space would let a
/// spec add kernel arguments (`/srv x init=/bin/sh`), a quote or `*` would
/// reach the shell. So: absolute, at most 255 bytes, only
/// `A-Z a-z 0-9 / . _ - + , @ =`, no `..` component.
pub fn validate_mount(mount: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/._-+,@=".contains(c);
    if !mount.starts_with('/') {
        return Err(format!("mount point `{mount}` must be an absolute path"));
    }
    if let Some(bad) = mount.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "mount point {mount:?} contains {bad:?}: only letters, digits and `/._-+,@=` are \
             allowed (the path travels on the guest kernel's command line)"
        ));
    }
    if mount.len() > 255 || mount.split('/').any(|part| part == "..") {
        return Err(format!(
            "mount point `{mount}` must be at most 255 bytes with no `..` component"
        ));
    }
    Ok(())
}

/// The serial a data disk has in the guest (`/sys/block/vdX/serial`).
pub fn serial(name: &str) -> String {
    cove_guest::data_disk_serial(name)
}

/// The shared, persistent data disk `name` (see [`path_for`] for the file a VM attaches).
pub fn path(paths: &Paths, name: &str) -> PathBuf {
    paths.data_disks().join(format!("{name}.qcow2"))
}

/// Whether `vm`'s data disks are its own. A clone's are: each a copy-on-write child of its
/// snapshot's copy (the disk as it was when the memory image was saved), so a clone never
/// writes to its source's disk nor shares one with another clone. Every other VM attaches the
/// shared persistent disk of the name.
pub fn owns_its_disks(vm: &VmRecord) -> bool {
    vm.cloned_from.is_some()
}

/// The file `vm` attaches as its data disk `name`.
pub fn path_for(paths: &Paths, vm: &VmRecord, name: &str) -> PathBuf {
    if owns_its_disks(vm) {
        paths.vm(vm.name.as_str()).own_data_disk(name)
    } else {
        path(paths, name)
    }
}

/// Whether `vm` attaches the shared persistent disk `name`.
pub fn uses_shared(vm: &VmRecord, name: &str) -> bool {
    !owns_its_disks(vm) && vm.data_disks.iter().any(|d| d == name)
}

/// Creates the disk if it does not exist yet; an existing disk is kept as
/// it is (its data is the point). Returns whether it was created.
pub fn ensure(paths: &Paths, name: &str, size_bytes: u64) -> Result<bool, LifecycleError> {
    validate_name(name).map_err(LifecycleError::BadResources)?;
    let target = path(paths, name);
    if target.exists() {
        return Ok(false);
    }
    files::private_dir_all(&paths.data_disks())?;
    // Build beside the target and rename, so a killed command never
    // leaves a half-made disk under the real name.
    // Unique per call, not just per process: two threads (or a retry) must
    // never build in each other's files.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}.{call}", std::process::id());
    let raw = paths.data_disks().join(format!(".{name}.raw.{tag}"));
    let qcow = paths.data_disks().join(format!(".{name}.qcow2.{tag}"));
    let result = (|| {
        std::fs::File::create(&raw)?.set_len(size_bytes)?;
        run(
            Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-L",
                    &label(name),
                    "-E",
                    "lazy_itable_init=1,lazy_journal_init=1",
                ])
                .arg(&raw),
            "mkfs.ext4",
        )?;
        disk_backend()?.import_data_disk(&raw, &qcow)?;
        // Private, and on disk under its real name before any VM uses it.
        // Never over an existing disk: a concurrent `create` of the same
        // name may have made it (and a VM may already be writing to it), so
        // the loser keeps theirs and reports it existed.
        files::make_private(&qcow)?;
        Ok(files::durable_rename_new(&qcow, &target)?)
    })();
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&qcow);
    result
}

/// ext4 labels are at most 16 bytes.
fn label(name: &str) -> String {
    name.chars().take(16).collect()
}

/// Grows a disk (never shrinks: that would lose data). The guest's init
/// grows the filesystem to match at the next mount.
pub fn resize(paths: &Paths, name: &str, size_bytes: u64) -> Result<(), LifecycleError> {
    let target = path(paths, name);
    if !target.exists() {
        return Err(LifecycleError::BadResources(format!(
            "no data disk named `{name}`; `cove volume ls` shows them"
        )));
    }
    Ok(disk_backend()?.grow_disk(&target, size_bytes)?)
}

/// Data disks outlive VMs and any VM may attach one, so they are kept in
/// one format: the default backend's (QEMU's qcow2).
fn disk_backend() -> Result<Box<dyn cove_backend::Backend>, LifecycleError> {
    Ok(crate::backends::for_kind(
        cove_backend::BackendKind::default(),
    )?)
}

pub fn remove(paths: &Paths, name: &str) -> Result<(), LifecycleError> {
    match std::fs::remove_file(path(paths, name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Every data disk: (name, file).
pub fn list(paths: &Paths) -> Result<Vec<(String, PathBuf)>, LifecycleError> {
    let mut disks = Vec::new();
    let Ok(entries) = std::fs::read_dir(paths.data_disks()) else {
        return Ok(disks);
    };
    for entry in entries.flatten() {
        let file = entry.path();
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".qcow2").filter(|s| !s.starts_with('.')) {
            disks.push((stem.to_owned(), file.clone()));
        }
    }
    disks.sort();
    Ok(disks)
}

fn run(cmd: &mut Command, _tool: &'static str) -> Result<(), LifecycleError> {
    cove_util::tool::run(cmd, "install e2fsprogs (`scripts/install-deps`)")
        .map(drop)
        .map_err(|tool| LifecycleError::Tool {
            tool,
            fix: "check free space in the data directory (`cove doctor`)",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn mount_points_cannot_inject_kernel_arguments_or_shell_words() {
        validate_mount("/var/lib/postgresql").unwrap();
        validate_mount("/srv/data-1_x.y").unwrap();
        for bad in [
            "/srv x init=/bin/sh",
            "/srv\tinit=/bin/sh",
            "/srv\ninit=/bin/sh",
            "/srv/*",
            "/srv/$(reboot)",
            "/srv/'q'",
            "/srv/../etc",
            "srv",
        ] {
            assert!(validate_mount(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            validate_mount("/srv x init=/bin/sh")
                .unwrap_err()
                .contains("' '")
        );
    }

    #[test]
    fn a_new_disk_holds_a_labelled_ext4_and_is_never_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        assert!(ensure(&paths, "pgdata", 64 << 20).unwrap());
        let file = path(&paths, "pgdata");
        let info = Command::new("qemu-img")
            .arg("info")
            .arg(&file)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("file format: qcow2"), "{info}");
        assert!(info.contains("64 MiB"), "{info}");
        // Other local users must not read a VM's data.
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(paths.data_disks()).unwrap().mode() & 0o777,
            0o700
        );
        // A second ensure keeps the existing data.
        std::fs::write(dir.path().join("marker"), b"x").unwrap();
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert!(!ensure(&paths, "pgdata", 128 << 20).unwrap());
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            before
        );
        resize(&paths, "pgdata", 128 << 20).unwrap();
        let info = Command::new("qemu-img")
            .arg("info")
            .arg(&file)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&info.stdout).contains("128 MiB"));
        assert_eq!(list(&paths).unwrap().len(), 1);
        remove(&paths, "pgdata").unwrap();
        assert!(list(&paths).unwrap().is_empty());
    }
}
