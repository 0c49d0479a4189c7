//! Builds Debian images from TOML specs with mmdebstrap.

mod common;

use cove_image::{BuildOptions, ImageError, ImageSpec, NoProgress, build_image};
use std::path::Path;
use std::time::Instant;

fn spec(dir: &Path, text: &str) -> ImageSpec {
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    ImageSpec::load(&path).unwrap()
}

const SPEC: &str = r#"
name = "deb-test"
base = "debian:bookworm"
packages = ["procps"]
commands = ["echo built-in-chroot > /etc/cove-built", "test -e /proc/self && id -u > /etc/cove-uid"]

[[files]]
src = "motd"
dest = "/etc/motd"
mode = "0600"

[[services]]
name = "sleeper"
command = "sleep 1000"
"#;

#[test]
#[ignore = "downloads packages"]
fn debian_image_with_packages_files_and_commands() {
    let mut env = common::env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("motd"), "hello from the spec\n").unwrap();
    let s = spec(dir.path(), SPEC);

    let t = Instant::now();
    let m = build_image(
        &env.paths,
        &mut env.store,
        &s,
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "first build: {:.1} s; sizes {:?}",
        t.elapsed().as_secs_f64(),
        m.sizes
    );
    assert_eq!(m.base, "debian:bookworm");
    // /etc/os-release is a symlink to ../usr/lib/os-release, which debugfs does not follow.
    let os = common::debugfs_cat(&m.rootfs, "/usr/lib/os-release");
    assert!(os.contains("bookworm"), "{os}");
    assert!(common::debugfs_cat(&m.rootfs, "/etc/motd").contains("hello from the spec"));
    assert_eq!(
        common::debugfs_cat(&m.rootfs, "/etc/cove-built").trim(),
        "built-in-chroot"
    );
    assert_eq!(common::debugfs_cat(&m.rootfs, "/etc/cove-uid").trim(), "0");
    assert!(common::debugfs_cat(&m.rootfs, "/sbin/cove-init").contains("run_service 'sleeper'"));
    assert_eq!(
        common::debugfs_cat(&m.rootfs, "/etc/resolv.conf"),
        "nameserver 10.0.2.3\n"
    );
    let stat = std::process::Command::new("debugfs")
        .args(["-R", "stat /usr/bin/ps"])
        .arg(&m.rootfs)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&stat.stdout).contains("Type: regular"),
        "procps is installed"
    );
    let stat = std::process::Command::new("debugfs")
        .args(["-R", "stat /etc/motd"])
        .arg(&m.rootfs)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&stat.stdout).contains("Mode:  0600"));

    // Unchanged: a cache hit (what ran tells it, not how long it took).
    let t = Instant::now();
    let stages = common::Stages::default();
    let again = build_image(
        &env.paths,
        &mut env.store,
        &s,
        &BuildOptions::default(),
        &stages,
    )
    .unwrap();
    eprintln!("unchanged spec: {:.3} s", t.elapsed().as_secs_f64());
    assert_eq!(again.id, m.id);
    stages.assert_cache_hit();

    // A changed file: a new image, but the Debian base comes from the cache.
    std::fs::write(dir.path().join("motd"), "changed\n").unwrap();
    let t = Instant::now();
    let changed = build_image(
        &env.paths,
        &mut env.store,
        &s,
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap();
    eprintln!(
        "changed file, cached base: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_ne!(changed.id, m.id);
    assert!(common::debugfs_cat(&changed.rootfs, "/etc/motd").contains("changed"));
    assert_eq!(
        cove_image::resolve(&env.store, "deb-test").unwrap().id,
        changed.id
    );
}

#[test]
#[ignore = "downloads packages"]
fn a_failing_command_names_the_step_and_shows_its_output() {
    let mut env = common::env();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "name = \"broken\"\nbase = \"debian:bookworm\"\npackages = [\"procps\"]\ncommands = [\"echo about to fail; ls /no/such/dir\"]\n",
    );
    let err = build_image(
        &env.paths,
        &mut env.store,
        &s,
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ImageError::Step { .. }), "{text}");
    assert!(text.contains("command 1"), "{text}");
    assert!(
        text.contains("about to fail") && text.contains("/no/such/dir"),
        "{text}"
    );
    assert!(cove_image::list(&env.store).unwrap().is_empty());
}

#[test]
#[ignore = "downloads packages"]
fn rootfs_from_a_directory() {
    let mut env = common::env();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=handmade\n").unwrap();
    let s = spec(
        dir.path(),
        "name = \"handmade\"\nrootfs = { dir = \"tree\" }\nsize = \"32M\"\n",
    );
    let m = build_image(
        &env.paths,
        &mut env.store,
        &s,
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        common::debugfs_cat(&m.rootfs, "/etc/os-release"),
        "ID=handmade\n"
    );
    assert_eq!(m.sizes.rootfs, 32 << 20);
    assert!(m.base.starts_with("dir:"));
}

#[test]
#[ignore = "downloads packages"]
fn rootfs_from_a_tarball_keeps_owners() {
    let mut env = common::env();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("srv")).unwrap();
    std::fs::write(tree.join("srv/data"), "payload\n").unwrap();
    let st = std::process::Command::new("tar")
        .args(["--owner=1234", "--group=99", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(dir.path().join("root.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let s = spec(
        dir.path(),
        "name = \"from-tar\"\nrootfs = { tarball = \"root.tar\" }\n",
    );
    let m = build_image(
        &env.paths,
        &mut env.store,
        &s,
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(common::debugfs_cat(&m.rootfs, "/srv/data"), "payload\n");
    let stat = std::process::Command::new("debugfs")
        .args(["-R", "stat /srv/data"])
        .arg(&m.rootfs)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(
        stat.contains("User:  1234") && stat.contains("Group:    99"),
        "{stat}"
    );
    // cove's own files are root's.
    let stat = std::process::Command::new("debugfs")
        .args(["-R", "stat /sbin/cove-init"])
        .arg(&m.rootfs)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&stat.stdout).contains("User:     0"));
}
