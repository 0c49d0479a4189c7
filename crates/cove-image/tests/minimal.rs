//! Builds the real `minimal` image from Debian packages.

mod common;

use cove_image::{ImageError, MinimalOptions, kmod::ModuleIndex};
use std::time::Instant;

#[test]
#[ignore = "downloads packages"]
fn minimal_builds_then_comes_from_the_cache() {
    let mut env = common::env();
    let opts = MinimalOptions::default();
    let t = Instant::now();
    let m = common::build(&mut env, &opts);
    let first = t.elapsed();
    eprintln!(
        "first build: {:.2} s, manifest: {m:#?}",
        first.as_secs_f64()
    );
    assert!(
        m.kernel.is_file() && m.initrd.as_ref().is_some_and(|i| i.is_file()) && m.rootfs.is_file()
    );
    assert!(
        m.kernel_version.ends_with("-cloud-amd64"),
        "{}",
        m.kernel_version
    );
    assert!(m.kernel_config.as_ref().is_some_and(|c| c.is_file()));
    assert!(
        m.modules.contains(&"virtio_blk".to_owned()),
        "{:?}",
        m.modules
    );
    let vmlinux = m
        .vmlinux
        .as_ref()
        .expect("the cloud kernel has a PVH entry");
    let elf = std::fs::read(vmlinux).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(m.id.len(), 64);
    assert!(m.kernel.starts_with(env.paths.images().join(&m.id)));

    // The root filesystem is ext4, labelled, and holds cove's init.
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /sbin/cove-init"])
        .arg(&m.rootfs)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cove-init: ready"));
    let label = std::process::Command::new("e2label")
        .arg(&m.rootfs)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "cove-root");

    // The initramfs lists modules in an order where dependencies come first.
    let list = std::process::Command::new("cpio")
        .args(["-i", "--quiet", "--to-stdout", "etc/cove/modules"])
        .stdin(std::fs::File::open(m.initrd.as_ref().unwrap()).unwrap())
        .output()
        .unwrap();
    let order = String::from_utf8_lossy(&list.stdout).to_string();
    let pos = |n: &str| {
        order
            .lines()
            .position(|l| l == n)
            .unwrap_or_else(|| panic!("{n} missing in {order}"))
    };
    assert!(pos("virtio") < pos("virtio_blk"));
    assert!(pos("virtio_ring") < pos("virtio_net"));
    assert!(pos("vsock") < pos("vmw_vsock_virtio_transport"));

    // An unchanged spec is a cache hit: nothing is built again.
    let t = Instant::now();
    let stages = common::Stages::default();
    let again = cove_image::build_minimal(&env.paths, &mut env.store, &opts, &stages).unwrap();
    eprintln!("second build (cached): {:.3} s", t.elapsed().as_secs_f64());
    assert_eq!(again, m);
    stages.assert_cache_hit();

    // The store knows it by name and by id prefix; removal honours users.
    assert_eq!(cove_image::resolve(&env.store, "minimal").unwrap().id, m.id);
    assert_eq!(
        cove_image::resolve(&env.store, &m.id[..12]).unwrap().id,
        m.id
    );
    assert_eq!(cove_image::list(&env.store).unwrap().len(), 1);
    // Files deleted behind cove's back are named when the image is used.
    let initrd = std::fs::read(m.initrd.as_ref().unwrap()).unwrap();
    std::fs::remove_file(m.initrd.as_ref().unwrap()).unwrap();
    let err = cove_image::resolve(&env.store, "minimal").unwrap_err();
    assert!(matches!(err, ImageError::FilesMissing { .. }), "{err}");
    std::fs::write(m.initrd.as_ref().unwrap(), initrd).unwrap();

    let err =
        cove_image::remove(&env.paths, &mut env.store, "minimal", &["web".into()]).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    assert!(m.rootfs.exists());
    cove_image::remove(&env.paths, &mut env.store, "minimal", &[]).unwrap();
    assert!(!m.rootfs.exists());
    assert!(matches!(
        cove_image::resolve(&env.store, "minimal"),
        Err(ImageError::NotFound(_))
    ));
}

#[test]
#[ignore = "downloads packages"]
fn real_modules_are_ordered_after_their_dependencies() {
    let mut env = common::env();
    let m = common::build(
        &mut env,
        &MinimalOptions {
            vmlinux: false,
            ..Default::default()
        },
    );
    // Find the extracted kernel package in the build cache.
    let modules_dir = std::fs::read_dir(env.paths.build_cache())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("lib/modules").join(&m.kernel_version))
        .find(|p| p.is_dir())
        .expect("the kernel package is extracted in the build cache");
    let index = ModuleIndex::scan(&modules_dir).unwrap();
    assert!(index.len() > 1000, "only {} modules", index.len());
    assert!(index.is_builtin("ext4"));
    let mods = index
        .resolve(&[
            "virtio_pci",
            "vmw_vsock_virtio_transport",
            "virtio-rng",
            "ext4",
        ])
        .unwrap();
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    eprintln!("load order: {names:?}");
    for (i, m) in mods.iter().enumerate() {
        for d in &m.depends {
            let j = names.iter().position(|n| n == d);
            // A dependency is either earlier in the list or built in.
            assert!(
                j.is_some_and(|j| j < i) || index.is_builtin(d),
                "{} needs {d}: {names:?}",
                m.name
            );
        }
    }
    assert!(names.contains(&"virtio_pci_modern_dev"), "{names:?}");
    assert!(names.contains(&"virtio_rng"));
    assert!(!names.contains(&"ext4"), "ext4 is built in");
    let err = index.resolve(&["no_such_module"]).unwrap_err();
    assert!(matches!(err, ImageError::ModuleMissing { .. }), "{err}");
}
