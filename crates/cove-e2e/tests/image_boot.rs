//! Boots the `minimal` image under QEMU (TCG, microvm) and waits for cove's
//! init to say it is ready.

// The image crate's own test helpers (its build and boot tests share them).
#[path = "../../cove-image/tests/common.rs"]
mod common;

use cove_image::{ImageManifest, MinimalOptions};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Boots `kernel` with the image's initrd and an overlay of its rootfs;
/// returns the seconds until `cove-init: ready` and the console output.
/// Writes `text` as a spec file, then builds (or finds cached) its image.
fn build_from_spec(env: &mut common::Env, text: &str) -> ImageManifest {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, text).unwrap();
    let spec = cove_image::ImageSpec::load(&spec_path).unwrap();
    cove_image::build_image(
        &env.paths,
        &mut env.store,
        &spec,
        &cove_image::BuildOptions::default(),
        &cove_image::NoProgress,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn boot(env: &common::Env, m: &ImageManifest, kernel: &Path, tag: &str) -> (f64, String) {
    boot_until(env, m, kernel, tag, "cove-init: ready")
}

/// Like [`boot`], waiting for `marker` instead.
fn boot_until(
    env: &common::Env,
    m: &ImageManifest,
    kernel: &Path,
    tag: &str,
    marker: &str,
) -> (f64, String) {
    boot_with(env, m, kernel, tag, marker, true).0
}

/// Boots (with or without the root disk) until `marker` is on the console;
/// also returns whether QEMU exited by itself within 10 s after that.
fn boot_with(
    env: &common::Env,
    m: &ImageManifest,
    kernel: &Path,
    tag: &str,
    marker: &str,
    disk: bool,
) -> ((f64, String), bool) {
    let overlay = common::tmp_file(env, &format!("root-{tag}.qcow2"));
    std::fs::create_dir_all(overlay.parent().unwrap()).unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&m.rootfs)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(st.success());
    let append = format!(
        "console=ttyS0 reboot=t panic=-1 tsc=reliable tsc_early_khz={} {}",
        common::tsc_khz(),
        m.cmdline_extra.join(" ")
    );
    let start = Instant::now();
    let mut cmd = Command::new("qemu-system-x86_64");
    if disk {
        cmd.arg("-drive")
            .arg(format!(
                "file={},if=none,id=root,format=qcow2",
                overlay.display()
            ))
            .args(["-device", "virtio-blk-device,drive=root,serial=cove-root"]);
    }
    let mut child = cmd
        .args([
            "-M",
            "microvm,acpi=on",
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
        ])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "256",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(
            m.initrd
                .as_ref()
                .expect("the minimal image has an initramfs"),
        )
        .args(["-append", &append])
        .args([
            "-netdev",
            "user,id=n",
            "-device",
            "virtio-net-device,netdev=n",
        ])
        .args(["-device", "virtio-rng-device"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 is installed");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut console = String::new();
    let mut ready = None;
    while let Some(left) = BOOT_TIMEOUT.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok((t, line)) => {
                console.push_str(&line);
                console.push('\n');
                if line.contains(marker) {
                    ready = Some(t.duration_since(start).as_secs_f64());
                    break;
                }
                if line.contains("cove-init: FATAL") && !marker.contains("FATAL") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // Did the guest end QEMU by itself (poweroff)? Give it 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exited = false;
    while ready.is_some() && Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            exited = true;
            break;
        }
        // Console lines arrive until QEMU exits; waiting on them paces the poll.
        if let Ok((_, line)) = rx.recv_timeout(Duration::from_millis(100)) {
            console.push_str(&line);
            console.push('\n');
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    match ready {
        Some(secs) => ((secs, console), exited),
        None => panic!("the guest never said `{marker}`; console:\n{console}"),
    }
}

#[test]
#[ignore = "boots a VM"]
fn minimal_boots_to_ready() {
    let mut env = common::env();
    let m = common::build(&mut env, &MinimalOptions::default());
    let (bz, console) = boot(&env, &m, &m.kernel, "bz");
    eprintln!("bzImage: ready after {bz:.2} s");
    for marker in [
        "cove-init: loading modules",
        "cove-init: mounting root",
        "cove-init: starting agent",
    ] {
        assert!(
            console.contains(marker),
            "no `{marker}` in console:\n{console}"
        );
    }
    assert!(
        !console.contains("failed to load"),
        "a module failed:\n{console}"
    );
    let vmlinux = m.vmlinux.as_ref().expect("vmlinux extracted");
    let (elf, _) = boot(&env, &m, vmlinux, "elf");
    eprintln!("vmlinux: ready after {elf:.2} s");
}

#[test]
#[ignore = "boots a VM"]
fn debian_image_boots_with_cove_init_and_its_service() {
    let mut env = common::env();
    let m = build_from_spec(
        &mut env,
        r#"
name = "deb-boot"
base = "debian:bookworm"
packages = ["procps"]
[[services]]
name = "hello"
user = "nobody"
command = "echo service-ran-as-$(id -un) > /dev/console; exec sleep 1000"
"#,
    );
    let kernel = m.vmlinux.clone().unwrap_or(m.kernel.clone());
    let (secs, console) = boot(&env, &m, &kernel, "deb");
    eprintln!("debian (cove init): ready after {secs:.2} s");
    assert!(
        console.contains("cove-init: starting service hello"),
        "{console}"
    );
}

#[test]
#[ignore = "boots a VM"]
fn systemd_image_boots_to_multi_user() {
    let mut env = common::env();
    let m = build_from_spec(
        &mut env,
        "name = \"deb-systemd\"\nbase = \"debian:bookworm\"\ninit = \"systemd\"\n",
    );
    // cove-init found through the initramfs; the kernel keeps its SMP alternatives (TCG).
    assert_eq!(m.cmdline_extra, ["cove.init=/sbin/init", "noreplace-smp"]);
    let kernel = m.vmlinux.clone().unwrap_or(m.kernel.clone());
    let (secs, console) = boot_until(&env, &m, &kernel, "sd", "Multi-User System");
    eprintln!("debian (systemd): multi-user after {secs:.2} s");
    assert!(
        console.contains("cove-init: switching root to /sbin/init"),
        "{console}"
    );
}

#[test]
#[ignore = "boots a VM"]
fn missing_root_disk_is_a_named_fatal_and_powers_off() {
    let mut env = common::env();
    let m = common::build(&mut env, &MinimalOptions::default());
    let kernel = m.vmlinux.clone().unwrap_or(m.kernel.clone());
    let ((_, console), exited) = boot_with(&env, &m, &kernel, "nodisk", "cove-init: FATAL", false);
    assert!(
        console.contains("no block device with LABEL=cove-root"),
        "{console}"
    );
    assert!(
        exited,
        "QEMU kept running after the FATAL; console:\n{console}"
    );
}
