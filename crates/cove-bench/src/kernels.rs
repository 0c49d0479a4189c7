//! Benchmark 6 (issue 13): the minimal image on cove's own kernel against the same image on
//! Debian's cloud kernel, to the agent's answer, phase by phase (`cove bench boot`, which
//! times each phase from the console on the host clock); and the kernel build itself, cold
//! when this run had to compile it, and cached.

use crate::cove::Cove;
use crate::report::Section;
use crate::stats::{Samples, ms, ratio};
use anyhow::{Context, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The two images, built by `cove image build minimal` with and without `--kernel cove`.
const IMAGES: [(&str, &str); 2] = [
    ("Debian's cloud kernel + initramfs", "kern-debian"),
    ("cove's kernel, no initramfs", "kern-cove"),
];

/// `cove bench boot`'s phases, in boot order, with what each marks.
const PHASES: [(&str, &str); 6] = [
    ("vmm_start", "VMM spawned"),
    ("kernel", "first kernel line"),
    ("run_init", "`Run … as init process`"),
    ("root_mounted", "root mounted"),
    ("init_ready", "init ready"),
    ("agent_answer", "**agent answer**"),
];

/// A kernel build slower than this compiled something: the cache did not have it.
const COMPILED: Duration = Duration::from_secs(20);

pub fn run(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    // The base kernel first, alone, so that its build is timed apart from the image's.
    let t = Instant::now();
    cove.run(&["kernel", "build"])?;
    let first_build = t.elapsed();
    cove.build_image("minimal", &["--name", IMAGES[0].1], None)?;
    cove.build_image(
        "minimal",
        &["--kernel", "cove", "--name", IMAGES[1].1],
        None,
    )?;
    let mut cached = Samples::new();
    for _ in 0..5 {
        cached.push(cove.timed(&["kernel", "build"])?);
    }

    s.method = vec![
        format!("`cove image build minimal --name {}` (Debian's cloud kernel, its initramfs loading the virtio modules) and `cove image build minimal --kernel cove --name {}` (cove's base config from `kernels/`, everything built in, no initramfs), the same root filesystem, 256 MiB, 1 vCPU, microvm.", IMAGES[0].1, IMAGES[1].1),
        "Each boot is `cove bench boot IMAGE --runs 1 --json`: a fresh VM created and started, each phase timed on the host clock from `cove start` when its console line reached the console log (polled every 2 ms), the last when `cove start` returned on the agent's answer.".into(),
        format!("{runs} boots of each, alternating which goes first; p50 per phase."),
        "The kernel build: `cove kernel build` (the base config, no fragments) timed once before the images, then 5 times more (the cached rebuild).".into(),
    ];
    let mut phases: Vec<[Samples; 2]> = PHASES.iter().map(|_| Default::default()).collect();
    for i in 0..runs {
        for turn in 0..2 {
            let idx = if i % 2 == 0 { turn } else { 1 - turn };
            let image = IMAGES[idx].1;
            let boot = cove.json(&["bench", "boot", image, "--runs", "1"])?;
            for (p, (key, _)) in PHASES.iter().enumerate() {
                if let Some(v) = phase_ms(&boot, key) {
                    phases[p][idx].push(Duration::from_secs_f64(v / 1000.0));
                }
            }
            let answer = phase_ms(&boot, "agent_answer").context("no agent answer")?;
            eprintln!("  {image} run {i}: agent answer {answer:.0} ms");
        }
    }
    s.headers = vec![
        "phase, p50 from `cove start`".into(),
        IMAGES[0].0.into(),
        IMAGES[1].0.into(),
        "cove's ÷ Debian's".into(),
    ];
    for (p, (_, label)) in PHASES.iter().enumerate() {
        let [debian, own] = &phases[p];
        s.rows.push(vec![
            (*label).into(),
            ms(debian.median()),
            ms(own.median()),
            format!("{:.2}×", ratio(own.median(), debian.median())),
        ]);
    }
    let answer = phases[PHASES.len() - 1][1].median();
    s.goal(
        "boot to agent answer, cove's kernel (p50)",
        "≤ 1.0 s",
        ms(answer),
        !answer.is_zero() && answer <= Duration::from_secs(1),
    );
    if first_build > COMPILED {
        s.goal(
            "cold compile of cove's base kernel, 2 cores",
            "minutes",
            format!("{:.0} s (this run compiled it)", first_build.as_secs_f64()),
            true,
        );
    } else {
        s.notes.push(format!(
            "The base kernel was already cached when this run started ({}), so its cold compile was not measured here; `XDG_CACHE_HOME` pointing to an empty directory makes the next run compile it.",
            ms(first_build)
        ));
    }
    s.goal(
        "cached rebuild (unchanged spec, p50 of 5)",
        "well under 1 s",
        ms(cached.median()),
        cached.median() < Duration::from_secs(1),
    );
    Ok(())
}

/// One phase's time in a `cove bench boot --json` answer; absent when the boot never printed
/// that phase's console line. (Without an initramfs the root is mounted before `Run`: the
/// phases are listed in the order of a boot with one.)
fn phase_ms(boot: &Value, key: &str) -> Option<f64> {
    boot.get("p50_ms")?.get(key)?.as_f64()
}
