//! Every directory and file name cove uses, in one place.
//!
//! cove honours the XDG base directory variables so that tests (and users)
//! can isolate a whole installation by pointing them somewhere else:
//! - `$XDG_STATE_HOME/cove`: the SQLite store and one directory per VM
//!   (disk overlay, console log, supervisor log).
//! - `$XDG_RUNTIME_DIR/cove/<vm>`: sockets, which must stay short (see
//!   [`MAX_SOCKET_PATH`]).
//! - guest RAM files on a tmpfs (see [`ram_root`]): `/dev/shm`, or the runtime directory.
//! - `$XDG_CACHE_HOME/cove`: downloads and build caches, safe to delete.
//! - `$XDG_DATA_HOME/cove`: built images and persistent data disks.

use std::path::{Path, PathBuf};

/// `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Neither the XDG variable nor `$HOME` is set, so cove cannot place its files.
    #[error("cannot find a home directory: set $HOME or ${0}")]
    NoHome(&'static str),
    #[error(
        "socket path {path} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix sockets; \
         set $XDG_RUNTIME_DIR to a shorter directory"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("cannot create cove's runtime directory {path}")]
    CreateRuntimeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another local user could swap a VM's sockets in a directory we do not
    /// solely own and receive the next `exec`, `cp` or `shell`.
    #[error(
        "refusing cove's runtime directory {path}: {problem}; another local user could take over \
         its sockets. Remove it (or set $XDG_RUNTIME_DIR to a private directory) and retry"
    )]
    UnsafeRuntimeDir { path: PathBuf, problem: String },
}

/// The roots of cove's directories, resolved once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub state: PathBuf,
    pub runtime: PathBuf,
    /// Where cold-booted guests' RAM files live (see [`ram_root`]).
    pub ram: PathBuf,
    pub cache: PathBuf,
    pub data: PathBuf,
}

impl Paths {
    /// Resolves the directories from the XDG variables, falling back to the
    /// XDG defaults under `$HOME` (and `/tmp/cove-<uid>` for runtime files).
    pub fn from_env() -> Result<Self, PathError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = |var: &'static str, default: &str| -> Result<PathBuf, PathError> {
            match std::env::var_os(var).filter(|v| !v.is_empty()) {
                Some(v) => Ok(PathBuf::from(v).join("cove")),
                None => home
                    .as_ref()
                    .map(|h| h.join(default).join("cove"))
                    .ok_or(PathError::NoHome(var)),
            }
        };
        let runtime = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v).join("cove"),
            // SAFETY: getuid has no preconditions and cannot fail.
            None => PathBuf::from(format!("/tmp/cove-{}", unsafe { libc::getuid() })),
        };
        secure_runtime_dir(&runtime)?;
        let ram = ram_root(&runtime, Path::new(SHM));
        Ok(Self {
            state: xdg("XDG_STATE_HOME", ".local/state")?,
            ram,
            runtime,
            cache: xdg("XDG_CACHE_HOME", ".cache")?,
            data: xdg("XDG_DATA_HOME", ".local/share")?,
        })
    }

    /// All four roots below one directory; for tests.
    pub fn under(root: &Path) -> Self {
        Self {
            state: root.join("state"),
            runtime: root.join("run"),
            ram: root.join("run"),
            cache: root.join("cache"),
            data: root.join("data"),
        }
    }

    pub fn database(&self) -> PathBuf {
        self.state.join("cove.db")
    }

    /// Where `create` builds a VM before it is visible under [`Paths::vm`].
    pub fn vm_staging(&self) -> PathBuf {
        self.state.join("staging")
    }

    pub fn vms(&self) -> PathBuf {
        self.state.join("vms")
    }

    /// The snapshot `cove up` keeps of each declared VM for its fresh starts, one directory
    /// per VM name (see `cove_vm::up_snapshot`). Outside the VM's directory, since it
    /// outlives the VM (`cove down`, then `cove up`).
    pub fn up_snapshot(&self, vm: &str) -> PathBuf {
        self.state.join("up-snapshots").join(vm)
    }

    pub fn vm(&self, name: &str) -> VmPaths {
        VmPaths {
            dir: self.vms().join(name),
            run: self.runtime.join(name),
            ram: self.ram.join(name),
        }
    }

    /// Downloaded packages, keyed by their file name (which carries the version).
    pub fn downloads(&self) -> PathBuf {
        self.cache.join("downloads")
    }

    /// Content-addressed build caches (debootstrap trees and the like).
    pub fn build_cache(&self) -> PathBuf {
        self.cache.join("build")
    }

    pub fn images(&self) -> PathBuf {
        self.data.join("images")
    }

    /// Persistent data disks, which outlive the VMs that use them.
    pub fn data_disks(&self) -> PathBuf {
        self.data.join("disks")
    }
}

/// Linux's shared-memory tmpfs, sized for RAM (half of it by default).
pub const SHM: &str = "/dev/shm";

/// Below this size a `/dev/shm` is a container's token one (Docker gives 64 MiB), not a place
/// for guest RAM.
const MIN_SHM_BYTES: u64 = 1 << 30;

/// Where guest RAM files go. A cold-booted VM's RAM is a shared file (a snapshot copies it), and
/// that file must be memory: on a disk filesystem the host kernel writes the guest's RAM back to
/// disk as it changes, and a boot took 0.2 s longer (BENCHMARKS.md section 6). The runtime
/// directory when it is a tmpfs (`/run/user/UID`); otherwise a directory of ours alone in
/// `/dev/shm`, named after the runtime directory so two installations (or test runs) of one
/// user never share a VM's RAM file; the runtime directory again when neither is usable, or
/// when that directory exists and is not ours alone. Nothing is created here: a start makes the
/// directory (`secure_runtime_dir`) and the last VM to go removes it.
pub fn ram_root(runtime: &Path, shm: &Path) -> PathBuf {
    if cove_util::space::is_tmpfs(runtime)
        || !cove_util::space::is_tmpfs(shm)
        || cove_util::space::total_bytes(shm).is_none_or(|b| b < MIN_SHM_BYTES)
    {
        return runtime.to_owned();
    }
    use sha2::Digest;
    let tag = hex::encode(&sha2::Sha256::digest(runtime.as_os_str().as_encoded_bytes())[..6]);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let dir = shm.join(format!("cove-{}-{tag}", unsafe { libc::geteuid() }));
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir,
        Ok(meta) if not_ours_alone(&meta).is_none() => dir,
        _ => runtime.to_owned(),
    }
}

/// Creates the runtime directory 0700 if it is missing, then refuses it
/// unless it is a real directory (not a symlink) owned by us with no
/// group or other permissions, as tmux does for its socket directory:
/// `/tmp/cove-<uid>` can be created first by anyone.
pub fn secure_runtime_dir(dir: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::DirBuilderExt;
    let created = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(crate::files::DIR_MODE)
        .create(dir);
    if let Err(source) = created {
        return Err(PathError::CreateRuntimeDir {
            path: dir.to_owned(),
            source,
        });
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| PathError::CreateRuntimeDir {
        path: dir.to_owned(),
        source,
    })?;
    match not_ours_alone(&meta) {
        Some(problem) => Err(PathError::UnsafeRuntimeDir {
            path: dir.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Why a directory found in a place others can write to is not ours alone, if it is not.
fn not_ours_alone(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.file_type().is_symlink() {
        Some("it is a symbolic link".to_owned())
    } else if !meta.is_dir() {
        Some("it is not a directory".to_owned())
    } else if meta.uid() != uid {
        Some(format!(
            "it is owned by uid {}, not by us (uid {uid})",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "its mode is {:o}, open to group or others (it must be 700)",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// The file name of data disk `name` inside a VM's or a snapshot's directory.
pub fn data_disk_file(name: &str) -> String {
    format!("data-{name}.qcow2")
}

/// The files of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// Persistent: disk overlay, logs. Removed by `delete`.
    pub dir: PathBuf,
    /// Runtime: sockets. Removed when the supervisor exits.
    pub run: PathBuf,
    /// The guest's RAM file, on a tmpfs where there is one (see [`ram_root`]); the same as
    /// `run` otherwise. Removed when the supervisor exits.
    pub ram: PathBuf,
}

impl VmPaths {
    pub fn root_disk(&self) -> PathBuf {
        self.dir.join("root.qcow2")
    }
    /// A data disk of this VM alone (a clone's copy-on-write child of its snapshot's copy),
    /// where a shared one is `Paths::data_disks()/<name>.qcow2`. It goes with the VM.
    pub fn own_data_disk(&self, name: &str) -> PathBuf {
        self.dir.join(data_disk_file(name))
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    /// The previous boot's console, kept when a new boot starts.
    pub fn previous_console_log(&self) -> PathBuf {
        self.dir.join("console.log.1")
    }
    /// What the VMM itself printed (its errors, e.g. a port already in use).
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    /// Held (flock) by the VM's supervisor for its whole life: the one
    /// liveness test that survives pid reuse and needs no socket.
    pub fn supervisor_lock(&self) -> PathBuf {
        self.dir.join("supervisor.lock")
    }
    /// The health checks `cove up` declared for this VM (JSON), run by `cove test`.
    pub fn checks_file(&self) -> PathBuf {
        self.dir.join("checks.json")
    }
    /// The VMM command line the supervisor ran, for `why` and for humans.
    pub fn vmm_cmdline(&self) -> PathBuf {
        self.dir.join("vmm.cmdline")
    }
    /// Guest RAM of a cold-booted VM, shared with QEMU so a snapshot can copy it.
    pub fn memory_file(&self) -> PathBuf {
        self.ram.join("memory")
    }
    /// The VM's snapshots, one directory per tag (see `cove_vm::snapshot`).
    pub fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
    pub fn snapshot(&self, tag: &str) -> PathBuf {
        self.snapshots().join(tag)
    }
    pub fn control_socket(&self) -> PathBuf {
        self.run.join("control.sock")
    }
    /// The sockets the VMM listens on; what goes over them is the backend's
    /// business.
    pub fn transports(&self) -> cove_backend::Transports {
        cove_backend::Transports {
            vmm: self.run.join("vmm.sock"),
            console: self.run.join("console.sock"),
            agent: self.run.join("agent.sock"),
        }
    }
    /// virtiofsd's vhost-user socket for shared folder `index`.
    pub fn share_socket(&self, index: usize) -> PathBuf {
        self.run.join(format!("fs{index}.sock"))
    }
    /// virtiofsd's log for shared folder `index`.
    pub fn share_log(&self, index: usize) -> PathBuf {
        self.dir.join(format!("virtiofsd{index}.log"))
    }

    /// What passt printed (its forwards, a port it could not bind).
    pub fn passt_log(&self) -> PathBuf {
        self.dir.join("passt.log")
    }

    /// Checks that every socket path of this VM fits in `sun_path`.
    pub fn check_socket_paths(&self) -> Result<(), PathError> {
        let transports = self.transports();
        let sockets = transports.sockets().map(|p| p.clone());
        for path in std::iter::once(self.control_socket()).chain(sockets) {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(PathError::SocketPathTooLong { path, len });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest RAM goes to a tmpfs: the runtime directory when it is one, else a private
    /// directory in a usable shm named after the runtime directory, else the runtime directory.
    #[test]
    fn ram_root_is_a_private_tmpfs_directory_per_installation() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let runtime = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let shm_root = Path::new(SHM);
        let usable = |shm: &Path| {
            cove_util::space::is_tmpfs(shm)
                && cove_util::space::total_bytes(shm).is_some_and(|b| b >= MIN_SHM_BYTES)
        };
        // A shm of our own inside the real one, so nothing is left in /dev/shm itself.
        let shm = match usable(shm_root) {
            true => Some(tempfile::tempdir_in(shm_root).unwrap()),
            false => None,
        };
        let shm_path = shm.as_ref().map_or(Path::new("/no/such/shm"), |d| d.path());
        let ram = ram_root(runtime.path(), shm_path);
        if cove_util::space::is_tmpfs(runtime.path()) || shm.is_none() {
            assert_eq!(ram, runtime.path());
        } else {
            assert!(ram.starts_with(shm_path), "{}", ram.display());
            assert!(!ram.exists(), "made by a start, not by reading paths");
            // The same installation finds the same directory, made private; another one its own.
            secure_runtime_dir(&ram).unwrap();
            assert_eq!(std::fs::metadata(&ram).unwrap().mode() & 0o777, 0o700);
            assert_eq!(ram_root(runtime.path(), shm_path), ram);
            let theirs = ram_root(other.path(), shm_path);
            assert_ne!(theirs, ram);
            // One that is there and not ours alone is not used: the runtime directory is.
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
            assert_eq!(ram_root(other.path(), shm_path), other.path());
        }
        // Not a tmpfs at all: the runtime directory.
        assert_eq!(ram_root(runtime.path(), Path::new("/proc")), runtime.path());
    }

    #[test]
    fn overlong_runtime_dir_is_reported_with_the_fix() {
        let long = "x".repeat(120);
        let paths = Paths::under(Path::new(&format!("/tmp/{long}")));
        let err = paths.vm("a").check_socket_paths().unwrap_err();
        assert!(err.to_string().contains("XDG_RUNTIME_DIR"), "{err}");
    }

    #[test]
    fn runtime_dir_is_created_private_and_refused_when_not_ours_alone() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cove-1000");
        secure_runtime_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Checked again when it exists: still fine.
        secure_runtime_dir(&dir).unwrap();

        // Group or other bits: refused, with the way out.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = secure_runtime_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("755") && err.contains("XDG_RUNTIME_DIR"),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

        // A symlink to a directory we own (planted by someone who can then
        // swap its target): refused.
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = secure_runtime_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");

        // A plain file in its place: refused.
        let file = root.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = secure_runtime_dir(&file).unwrap_err().to_string();
        assert!(
            err.contains("not a directory") || err.contains("cannot create"),
            "{err}"
        );
    }

    #[test]
    fn runtime_dir_owned_by_another_user_is_refused() {
        // `/` is root's; as root, any directory owned by nobody will do.
        if cove_util::process::is_root() {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("theirs");
            std::fs::create_dir(&dir).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            let err = secure_runtime_dir(&dir).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
        } else {
            let err = secure_runtime_dir(Path::new("/")).unwrap_err().to_string();
            assert!(err.contains("owned by uid 0"), "{err}");
        }
    }

    #[test]
    fn short_paths_pass() {
        let paths = Paths::under(Path::new("/tmp/t"));
        paths.vm("web").check_socket_paths().unwrap();
        assert_eq!(
            paths.vm("web").control_socket(),
            Path::new("/tmp/t/run/web/control.sock")
        );
    }
}
