//! The accelerator probe against the real /dev/kvm of this host, through a
//! real child process (`src/bin/cove-kvm-probe.rs` stands in for `cove`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cove_backend::Accel;
use cove_backend::host::accel::{self, AccelChoice};

const PROBE_BIN: &str = env!("CARGO_BIN_EXE_cove-kvm-probe");

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

/// Whatever this host has, the choice and its reason agree: KVM only when a vCPU really ran
/// the probe code, TCG with the reason KVM was not used. (Which one a host gives is a fact of
/// the host, not of cove, so it is not asserted.)
#[test]
fn probe_picks_what_really_runs() {
    let choice = accel::probe_uncached(Path::new(PROBE_BIN));
    eprintln!("probe: {choice:?}");
    match choice.accel {
        Accel::Kvm => assert_eq!(choice.reason, "a KVM vCPU ran the probe code"),
        Accel::Tcg => assert!(choice.reason.ends_with("using TCG"), "{}", choice.reason),
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
    // The second run answers from the cache: the same choice, and the cache file untouched.
    let written = std::fs::metadata(&cache).unwrap().modified().unwrap();
    let (second, _) = run_bin(&[dir.path()], None);
    assert_eq!(first, second);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().modified().unwrap(),
        written
    );
}

#[test]
fn env_override_wins_over_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (choice, _) = run_bin(&[dir.path()], Some("kvm"));
    assert_eq!(
        choice,
        AccelChoice {
            accel: Accel::Kvm,
            reason: "COVE_ACCEL=kvm is set".into()
        }
    );
    let (choice, _) = run_bin(&[dir.path()], Some("tcg"));
    assert_eq!(choice.accel, Accel::Tcg);
    // Nothing was probed, so nothing was cached.
    assert!(!dir.path().join(accel::CACHE_FILE).exists());
}
