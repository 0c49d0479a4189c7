//! The snapshot `cove up` keeps of a declared VM, so the next fresh VM of the same declaration
//! restores instead of booting.
//!
//! Safety rests on one rule: it serves only a VM that has nothing of its own yet. `cove up`
//! restores it into a VM it has just created whose data disks it has just created too (none
//! existed before: no data written since the snapshot, no disk another VM uses), and never into
//! a VM that already existed. It is keyed by the image id and every setting the VM is created
//! with ([`key`]); a different key, or a snapshot that no longer fits (the manifest check), means
//! a cold boot, after which a new one is kept once the checks pass.
//!
//! It is taken of a VM `up` has just created (with new data disks) and cold-booted, as soon as
//! its first checks pass and before `up` returns: it holds what the image and the first boot
//! made, nothing a user wrote. So it outlives `cove down --purge` (which makes the next `up`
//! fresh, and fast), and is replaced when the key changes: one per declared VM name.
//!
//! Layout: `Paths::up_snapshot(NAME)` holds a snapshot's files (see [`crate::snapshot`]) and
//! `key`. A restore hard-links them into the new VM's own snapshot `up` (files of a snapshot are
//! never changed once written, so links cost nothing and the VM's copy stays whole if the kept
//! one is replaced); the restore copies the disks out of it (see
//! [`crate::snapshot::prepare_disks`]).

use crate::error::LifecycleError;
use cove_state::Paths;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The tag of the snapshot in the VM's own directory.
pub const TAG: &str = "up";
const KEY_FILE: &str = "key";

/// The key of a declaration: a hash of the image id and the VM's settings, as the `Debug` text
/// of what `up` creates the VM from (one definition of "the settings", which grows with them).
pub fn key(settings: &impl std::fmt::Debug) -> String {
    hex::encode(Sha256::digest(format!("{settings:?}").as_bytes()))
}

/// Puts the kept snapshot of `vm` for `key`, if there is one, into the VM's directory as its
/// snapshot [`TAG`]; whether it did. The VM must be new (see the module's rule).
pub fn link_into(paths: &Paths, vm: &str, key: &str) -> Result<bool, LifecycleError> {
    let kept = paths.up_snapshot(vm);
    match std::fs::read_to_string(kept.join(KEY_FILE)) {
        Ok(k) if k.trim() == key => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let target = paths.vm(vm).snapshot(TAG);
    let tmp = target.with_extension("linking");
    let _ = std::fs::remove_dir_all(&tmp);
    cove_state::files::private_dir_all(&tmp)?;
    let linked = link_files(&kept, &tmp).and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = linked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    Ok(true)
}

/// Keeps the VM's snapshot [`TAG`] (just taken after its checks passed) for `key`, replacing
/// what was kept for the VM before.
pub fn keep(paths: &Paths, vm: &str, key: &str) -> Result<(), LifecycleError> {
    let kept = paths.up_snapshot(vm);
    if let Some(parent) = kept.parent() {
        cove_state::files::private_dir_all(parent)?;
    }
    let tmp = kept.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    cove_state::files::private_dir_all(&tmp)?;
    let made = link_files(&paths.vm(vm).snapshot(TAG), &tmp)
        .and_then(|()| std::fs::write(tmp.join(KEY_FILE), key))
        .and_then(|()| forget(paths, vm))
        .and_then(|()| std::fs::rename(&tmp, &kept));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// Removes what is kept for `vm` (`cove down --purge`: the copies of its data disks go too).
pub fn forget(paths: &Paths, vm: &str) -> std::io::Result<()> {
    let kept = paths.up_snapshot(vm);
    // The key first: a half-removed snapshot is never taken for a whole one.
    match std::fs::remove_file(kept.join(KEY_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_dir_all(&kept) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn link_files(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() != KEY_FILE && entry.file_type()?.is_file() {
            std::fs::hard_link(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_image_or_setting_changes_the_key() {
        let base = key(&("img-a", 1u32, 256u64));
        assert_eq!(base, key(&("img-a", 1u32, 256u64)));
        assert_ne!(base, key(&("img-b", 1u32, 256u64)));
        assert_ne!(base, key(&("img-a", 1u32, 320u64)));
    }

    #[test]
    fn kept_snapshot_is_linked_only_for_its_key_and_forgotten_whole() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let snap = paths.vm("web").snapshot(TAG);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("memory"), b"m").unwrap();
        keep(&paths, "web", "k1").unwrap();
        std::fs::remove_dir_all(paths.vm("web").dir).unwrap();
        std::fs::create_dir_all(paths.vm("web").snapshots()).unwrap();
        assert!(!link_into(&paths, "web", "k2").unwrap());
        assert!(link_into(&paths, "web", "k1").unwrap());
        assert_eq!(std::fs::read(snap.join("memory")).unwrap(), b"m");
        assert!(!snap.join(KEY_FILE).exists());
        forget(&paths, "web").unwrap();
        assert!(!paths.up_snapshot("web").exists());
        assert!(!link_into(&paths, "web", "k1").unwrap());
    }
}
