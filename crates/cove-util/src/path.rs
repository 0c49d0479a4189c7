//! Finding a program on `PATH`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where system tools live that a user's `PATH` may lack (`mkfs.ext4` is in `/sbin`).
const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The first executable file named `program` in the directories of `$PATH`, then in the sbin
/// directories. A name with a `/` is taken as a path and only checked.
pub fn which(program: &str) -> Option<PathBuf> {
    which_in(program, std::env::var_os("PATH").as_deref()).or_else(|| {
        let sbin = std::env::join_paths(SBIN_DIRS).ok()?;
        which_in(program, Some(&sbin))
    })
}

/// [`which`] over an explicit `PATH` value (`None`: nothing is found by name).
pub fn which_in(program: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return is_executable(p).then(|| p.to_path_buf());
    }
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_executable_files_in_path_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("tool"), "").unwrap(); // not executable
        std::fs::create_dir(a.path().join("dir")).unwrap();
        let exe = b.path().join("tool");
        std::fs::write(&exe, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(which_in("tool", Some(&path)), Some(exe.clone()));
        assert_eq!(which_in("dir", Some(&path)), None);
        assert_eq!(which_in("tool", None), None);
        assert_eq!(which_in(exe.to_str().unwrap(), None), Some(exe));
    }
}
