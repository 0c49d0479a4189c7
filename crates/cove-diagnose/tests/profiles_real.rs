//! Profiles against the real Debian cloud kernel config, and `=m` options checked against
//! initramfs archives made by the real `cpio` from the package's real modules.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cove_diagnose::kernel::{
    self, InitramfsModules, KernelConfig, OptionState, Status, builtin_profile, check,
};

fn config_without(text: &str, option: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(&format!("CONFIG_{option}=")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Seed 000: an older guest kernel without SYSVIPC made initdb die with ENOSYS from shmget.
#[test]
#[ignore = "downloads packages"]
fn seed_000_kernel_without_sysvipc_fails_postgres_profile() {
    let (_, config_path) = common::debian_cloud_kernel();
    let text = std::fs::read_to_string(&config_path).unwrap();
    let full = KernelConfig::parse(&text);
    let postgres = builtin_profile("postgres").unwrap();
    let ok = check(&full, std::slice::from_ref(&postgres), None);
    assert!(ok.ok(), "the Debian config satisfies postgres:\n{ok}");

    let dir = tempfile::tempdir().unwrap();
    let stripped_path = dir.path().join("config-no-sysvipc");
    std::fs::write(&stripped_path, config_without(&text, "SYSVIPC")).unwrap();
    let (stripped, _) = kernel::load_config(&stripped_path).unwrap();
    let report = check(&stripped, &[postgres], None);
    assert!(!report.ok());
    let failed: Vec<_> = report
        .problems()
        .filter(|f| f.status == Status::Fail)
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0].options, vec!["SYSVIPC"]);
    assert_eq!(failed[0].fix, vec!["CONFIG_SYSVIPC=y"]);
    let human = report.to_string();
    assert!(
        human.contains("FAIL [postgres] CONFIG_SYSVIPC is not set"),
        "{human}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["findings"][0]["fix"][0], "CONFIG_SYSVIPC=y");
}

#[test]
#[ignore = "downloads packages"]
fn tailscale_profile_names_missing_tun() {
    let (_, config_path) = common::debian_cloud_kernel();
    let text = std::fs::read_to_string(&config_path).unwrap();
    let cfg = KernelConfig::parse(&config_without(&text, "TUN"));
    let report = check(&cfg, &[builtin_profile("tailscale").unwrap()], None);
    let failed: Vec<_> = report
        .problems()
        .filter(|f| f.status == Status::Fail)
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0].options, vec!["TUN"]);
}

/// The Debian cloud kernel lacks VIRTIO_MMIO_CMDLINE_DEVICES but has ACPI: microvm works
/// with acpi=on, which the any-of requirement must accept.
#[test]
#[ignore = "downloads packages"]
fn debian_config_passes_microvm_through_acpi() {
    let (_, config_path) = common::debian_cloud_kernel();
    let cfg = KernelConfig::parse(&std::fs::read_to_string(&config_path).unwrap());
    let report = check(&cfg, &[builtin_profile("microvm").unwrap()], None);
    assert!(report.ok(), "{report}");
    let acpi = report
        .findings
        .iter()
        .find(|f| f.options.contains(&"ACPI".to_string()))
        .unwrap();
    assert_eq!(acpi.status, Status::Ok);
    assert_eq!(acpi.states[1].1, OptionState::NotSet);
}

/// Stage real module files and pack them with the real `cpio -o -H newc`, then compress.
fn initramfs(modules_root: &Path, modules: &[&str], compress: Option<&[&str]>) -> Vec<u8> {
    let stage = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for m in modules {
        let src = find_module(modules_root, m);
        let rel = src.strip_prefix(modules_root.parent().unwrap()).unwrap();
        let dst = stage.path().join("lib/modules").join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
        names.push(
            dst.strip_prefix(stage.path())
                .unwrap()
                .display()
                .to_string(),
        );
    }
    names.push("lib".into());
    let list = names.join("\n") + "\n";
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(stage.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cpio");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    match compress {
        None => out.stdout,
        Some(cmd) => {
            let mut c = Command::new(cmd[0])
                .args(&cmd[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let data = out.stdout;
            let mut stdin = c.stdin.take().unwrap();
            let w = std::thread::spawn(move || stdin.write_all(&data));
            let o = c.wait_with_output().unwrap();
            w.join().unwrap().unwrap();
            o.stdout
        }
    }
}

fn find_module(root: &Path, name: &str) -> PathBuf {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy() == format!("{name}.ko") {
                return p;
            }
        }
    }
    panic!("module {name} not in {}", root.display());
}

/// `modinfo -F depends` from kmod: an oracle independent of our `.modinfo` reader.
fn modinfo_depends(path: &Path) -> Vec<String> {
    let out = common::run(Command::new("modinfo").args(["-F", "depends"]).arg(path));
    let mut v: Vec<String> = out
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "downloads packages"]
fn module_options_count_only_with_their_modules_in_the_initramfs() {
    let (vmlinuz, config_path) = common::debian_cloud_kernel();
    let cfg = KernelConfig::parse(&std::fs::read_to_string(&config_path).unwrap());
    let ver = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let root = vmlinuz
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib/modules")
        .join(&ver);
    let agent = [builtin_profile("agent-serial").unwrap()];

    // Complete: virtio_console and everything modinfo says it depends on.
    let console = find_module(&root, "virtio_console");
    let deps = modinfo_depends(&console);
    let mut all: Vec<&str> = deps.iter().map(String::as_str).collect();
    all.push("virtio_console");
    let gz = initramfs(&root, &all, Some(&["gzip", "-9"]));
    let mods = InitramfsModules::from_bytes(&gz).unwrap();
    let mut got = mods.modules["virtio_console"].depends.clone();
    got.sort();
    assert_eq!(got, deps, "our .modinfo reader agrees with modinfo");
    let report = check(&cfg, &agent, Some(&mods));
    assert!(report.ok(), "{report}");
    assert_eq!(
        report.findings[0].states[0].1,
        OptionState::ModuleInInitramfs {
            module: "virtio_console".into()
        }
    );

    // Dependencies left out (zstd-compressed this time): the option does not count.
    let zst = initramfs(&root, &["virtio_console"], Some(&["zstd", "-q", "-c"]));
    let mods = InitramfsModules::from_bytes(&zst).unwrap();
    let report = check(&cfg, &agent, Some(&mods));
    assert!(!report.ok());
    match &report.findings[0].states[0].1 {
        OptionState::ModuleMissing { module, missing } => {
            assert_eq!(module, "virtio_console");
            assert_eq!(*missing, deps);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(report.findings[0].fix, vec!["CONFIG_VIRTIO_CONSOLE=y"]);
    assert!(report.to_string().contains("not in the initramfs"));

    // No module at all, uncompressed archive.
    let plain = initramfs(&root, &["virtio_blk"], None);
    let mods = InitramfsModules::from_bytes(&plain).unwrap();
    assert!(mods.contains("virtio_blk"));
    let report = check(&cfg, &agent, Some(&mods));
    assert!(!report.ok());
}
