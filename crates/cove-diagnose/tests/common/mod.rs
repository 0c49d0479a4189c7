//! Real artifacts for the tests: the Debian cloud kernel package, downloaded once with
//! `apt-get download` and unpacked with `dpkg-deb -x` under cargo's per-target temp dir.
//! Every test process shares it (nextest runs each test in its own), so it is prepared under
//! a file lock and unpacked beside its place before a rename: nobody sees half a kernel.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The unpacked `linux-image-<ver>-cloud-amd64` package: (vmlinuz, config) paths.
pub fn debian_cloud_kernel() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-cloud-kernel");
    std::fs::create_dir_all(&root).expect("create download dir");
    let _lock = cove_util::lock::exclusive(&root.join("lock")).expect("lock download dir");
    let boot = root.join("x/boot");
    if let Some(found) = find_kernel(&boot) {
        return found;
    }
    // The meta package depends on the versioned one, which holds the files.
    let deps = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]));
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .expect("linux-image-cloud-amd64 depends on a versioned kernel package")
        .to_string();
    run(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(&root));
    let deb = std::fs::read_dir(&root)
        .expect("read download dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download left a .deb");
    let unpacking = root.join("x.tmp");
    let _ = std::fs::remove_dir_all(&unpacking);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking));
    std::fs::rename(&unpacking, root.join("x")).expect("move the unpacked kernel into place");
    find_kernel(&boot).expect("package has /boot/vmlinuz-* and /boot/config-*")
}

fn find_kernel(boot: &Path) -> Option<(PathBuf, PathBuf)> {
    let entries = std::fs::read_dir(boot).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(ver) = name.strip_prefix("vmlinuz-") {
            let config = boot.join(format!("config-{ver}"));
            if config.exists() {
                return Some((e.path(), config));
            }
        }
    }
    None
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
