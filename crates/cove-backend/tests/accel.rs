//! The accelerator probe against the real /dev/kvm of this host, through a
//! real child process (`src/bin/cove-kvm-probe.rs` stands in for `cove`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cove_backend::Accel;
use cove_backend::host::accel::{self, AccelChoice};

const PROBE_BIN: &str = env!("CARGO_BIN_EXE_cove-kvm-probe");
const NO_PROGRESS: &str = "KVM opens but its vCPUs make no progress; using TCG";

/// This workplace's machines: /dev/kvm present, nested vCPUs that hang.
fn on_known_broken_kvm_host() -> bool {
    Path::new("/dev/kvm").exists() && Path::new("/work/shared/BRIEF.md").exists()
}

fn run_bin(args: &[&Path], accel_env: Option<&str>) -> (AccelChoice, Duration) {
    let mut cmd = Command::new(PROBE_BIN);
    cmd.args(args).env_remove(accel::ENV_OVERRIDE);
    if let Some(v) = accel_env {
        cmd.env(accel::ENV_OVERRIDE, v);
    }
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{out:?}");
    (serde_json::from_slice(&out.stdout).unwrap(), took)
}

/// A /dev/kvm that opens but whose vCPUs hang must give TCG, within about
/// the probe timeout; a working KVM must give KVM.
#[test]
fn probe_picks_what_really_runs() {
    let start = Instant::now();
    let choice = accel::probe_uncached(Path::new(PROBE_BIN));
    let took = start.elapsed();
    eprintln!("probe: {choice:?} in {took:?}");
    assert!(took < accel::PROBE_TIMEOUT * 3, "probe took {took:?}");
    match choice.accel {
        Accel::Kvm => assert_eq!(choice.reason, "a KVM vCPU ran the probe code"),
        Accel::Tcg => assert!(choice.reason.ends_with("using TCG"), "{}", choice.reason),
    }
    if on_known_broken_kvm_host() {
        assert_eq!(
            choice,
            AccelChoice {
                accel: Accel::Tcg,
                reason: NO_PROGRESS.into()
            }
        );
    }
}

/// The first start pays for the probe; later ones in the same host boot
/// read the cache.
#[test]
fn result_is_cached_per_host_boot() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = run_bin(&[dir.path()], None);
    let cache = dir.path().join(accel::CACHE_FILE);
    let text = std::fs::read_to_string(&cache).unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert!(text.contains(boot_id.trim()), "{text}");
    let (second, took) = run_bin(&[dir.path()], None);
    assert_eq!(first, second);
    assert!(
        took < Duration::from_millis(500),
        "cached probe took {took:?}"
    );
    if on_known_broken_kvm_host() {
        assert_eq!(second.reason, NO_PROGRESS);
    }
}

#[test]
fn env_override_wins_over_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (choice, took) = run_bin(&[dir.path()], Some("kvm"));
    assert_eq!(
        choice,
        AccelChoice {
            accel: Accel::Kvm,
            reason: "COVE_ACCEL=kvm is set".into()
        }
    );
    assert!(took < Duration::from_millis(500));
    let (choice, _) = run_bin(&[dir.path()], Some("tcg"));
    assert_eq!(choice.accel, Accel::Tcg);
    // Nothing was probed, so nothing was cached.
    assert!(!dir.path().join(accel::CACHE_FILE).exists());
}
