//! A cold-booted guest's RAM file: put in place before its VMM starts, only where there is room
//! for all of it, and removed with the VM's runtime files.
//!
//! The file is sparse and grows as the guest touches its memory. On a tmpfs that runs out, the
//! VMM dies of SIGBUS at the guest's next new page, long after `start` said it was fine; so a
//! start counts the room left after every other cove guest in the same place has grown to its
//! full size, and refuses when this guest would not fit.

use cove_state::{Paths, VmPaths};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RamError {
    #[error(
        "no room for the guest's {need_mib} MiB of RAM in {}: {room_mib} MiB are left there once \
         the VMs already running have all of theirs; stop a VM, or give this one less memory \
         (`cove set NAME --memory SIZE`)",
        dir.display()
    )]
    NoRoom {
        dir: PathBuf,
        need_mib: u64,
        room_mib: u64,
    },
    #[error(transparent)]
    Root(cove_state::paths::PathError),
    #[error("cannot prepare the guest's RAM file in {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes the VM's RAM directory (ours alone), removes a RAM file a killed VMM left, and checks
/// that `memory_mib` fits.
pub fn prepare(paths: &Paths, vm: &VmPaths, memory_mib: u64) -> Result<(), RamError> {
    make_dir(paths, vm)?;
    // A stale file would hand the new boot the old one's memory, and count against the room.
    match std::fs::remove_file(vm.memory_file()) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(RamError::Io {
                path: vm.memory_file(),
                source,
            });
        }
        _ => {}
    }
    let Some(room) = room(&paths.ram) else {
        return Ok(()); // unreadable: nothing better to go on than trying
    };
    if room < memory_mib * MIB {
        return Err(RamError::NoRoom {
            dir: paths.ram.clone(),
            need_mib: memory_mib,
            room_mib: room / MIB,
        });
    }
    Ok(())
}

/// The VM's RAM directory inside the RAM root, which may sit in a directory every user can
/// write to (`/dev/shm`): the root is made or checked ours alone first, and the VM's directory is
/// made inside it without creating parents, so a root that the last VM's `release` removed
/// meanwhile is made and checked again rather than recreated unchecked.
fn make_dir(paths: &Paths, vm: &VmPaths) -> Result<(), RamError> {
    let io = |source| RamError::Io {
        path: vm.ram.clone(),
        source,
    };
    for _ in 0..3 {
        cove_state::paths::secure_runtime_dir(&paths.ram).map_err(RamError::Root)?;
        match std::fs::DirBuilder::new()
            .mode(cove_state::files::DIR_MODE)
            .create(&vm.ram)
        {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Inside a root that is ours alone, only we made it.
                return cove_state::files::private_dir_all(&vm.ram).map_err(io);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(std::io::ErrorKind::NotFound.into()))
}

/// Free bytes under `ram_root`, less what the RAM files of the VMs in it may still grow by.
fn room(ram_root: &Path) -> Option<u64> {
    let free = cove_util::space::free_bytes(ram_root)?;
    let growth: u64 = std::fs::read_dir(ram_root)
        .ok()?
        .flatten()
        .filter_map(|vm| std::fs::metadata(vm.path().join("memory")).ok())
        .map(|m| m.size().saturating_sub(m.blocks() * 512))
        .sum();
    Some(free.saturating_sub(growth))
}

/// Frees the RAM a VM's file holds once its VMM is gone; the last VM to go takes the RAM root
/// with it (a root that still holds a VM stays: removing a non-empty directory fails).
pub fn release(vm: &VmPaths) {
    let _ = std::fs::remove_file(vm.memory_file());
    if vm.ram != vm.run {
        let _ = std::fs::remove_dir(&vm.ram);
        if let Some(root) = vm.ram.parent() {
            let _ = std::fs::remove_dir(root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_that_would_not_fit_beside_the_others_is_refused_and_a_stale_file_goes() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let free = cove_util::space::free_bytes(root.path()).unwrap();
        // Another VM's sparse RAM file that may still grow to all but 64 MiB of what is free.
        let other = paths.vm("other");
        cove_state::files::private_dir_all(&other.ram).unwrap();
        let f = std::fs::File::create(other.memory_file()).unwrap();
        f.set_len(free - 64 * MIB).unwrap();

        let vm = paths.vm("new");
        let err = prepare(&paths, &vm, 1024).unwrap_err();
        assert!(
            matches!(err, RamError::NoRoom { need_mib: 1024, room_mib, .. } if room_mib < 1024),
            "{err}"
        );
        assert!(err.to_string().contains("cove set"), "{err}");

        // It fits once the other VM's RAM is released; a file a killed VMM left is replaced.
        release(&other);
        std::fs::write(vm.memory_file(), b"old guest memory").unwrap();
        prepare(&paths, &vm, 128).unwrap();
        assert!(!vm.memory_file().exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&vm.ram).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
