//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cove_image::{ImageManifest, MinimalOptions, NoProgress, build_minimal};
use cove_state::{Paths, Store};
use std::path::PathBuf;

/// A cove installation under a temporary directory.
pub struct Env {
    pub _dir: tempfile::TempDir,
    pub paths: Paths,
    pub store: Store,
}

pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    // Downloads and build caches are shared between tests (they are keyed
    // by content); images and the store are each test's own.
    paths.cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cove-cache");
    let store = Store::open(&paths).unwrap();
    Env {
        _dir: dir,
        paths,
        store,
    }
}

pub fn build(env: &mut Env, opts: &MinimalOptions) -> ImageManifest {
    build_minimal(&env.paths, &mut env.store, opts, &NoProgress)
        .unwrap_or_else(|e| panic!("build_minimal failed: {e}"))
}

/// The host's TSC frequency in kHz, from /proc/cpuinfo's `cpu MHz`.
pub fn tsc_khz() -> u64 {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let mhz: f64 = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("cpu MHz")?
                .split(':')
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
        .expect("/proc/cpuinfo has a cpu MHz line");
    (mhz * 1000.0).round() as u64
}

pub fn tmp_file(env: &Env, name: &str) -> PathBuf {
    env._dir.path().join(name)
}

/// Runs `debugfs -R 'cat PATH'` on an ext4 image.
pub fn debugfs_cat(image: &std::path::Path, path: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Records the stages a build ran, so a test can tell a cache hit from a
/// rebuild by what happened rather than by how long it took.
#[derive(Default)]
pub struct Stages(std::sync::Mutex<Vec<String>>);

impl cove_image::Progress for Stages {
    fn stage_started(&self, stage: &str) {
        self.0.lock().unwrap().push(stage.to_string());
    }
}

impl Stages {
    /// The stages that produce an artifact; none of them runs on a cache hit.
    const BUILDING: &'static [&'static str] = &[
        "bootstrap Debian",
        "unpack Debian base",
        "populate root filesystem",
        "unpack kernel",
        "write initramfs",
        "make ext4 root filesystem",
    ];

    pub fn assert_cache_hit(&self) {
        let ran = self.0.lock().unwrap();
        let built: Vec<_> = ran
            .iter()
            .filter(|s| Self::BUILDING.contains(&s.as_str()))
            .collect();
        assert!(
            built.is_empty(),
            "a cache hit rebuilt {built:?} (stages: {ran:?})"
        );
    }
}
