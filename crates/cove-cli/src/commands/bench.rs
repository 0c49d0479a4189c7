//! `cove bench boot IMAGE|VM`: one boot timed by phase, several times, p50 per phase.
//!
//! Every timestamp is taken on the host: the VMM's start from the supervisor's
//! `vmm.cmdline` (written just before QEMU is spawned), the console phases from when each
//! line reached `console.log` (polled every 2 ms), the agent's answer from `cove start`
//! returning (it returns when the agent has answered). Guest clocks are not trusted: under
//! TCG they drift, and `printk` times start at the kernel's own zero.

use crate::context::Ctx;
use crate::output;
use anyhow::{Context, Result, bail};
use cove_state::VmName;
use cove_vm::lifecycle::{self, CreateOptions, StartOptions};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Boot an image (or a VM's image) several times; p50 of each phase from host-side
    /// timestamps: VMM start, first kernel line, `Run …init`, root mounted, init ready,
    /// agent answer.
    Boot(BootArgs),
}

#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// An image name or id, or an existing VM (its image is booted in a fresh VM).
    pub target: String,
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    #[arg(long, default_value = "256M", value_parser = crate::commands::create::parse_memory)]
    pub memory: u64,
    /// Seconds one boot may take before it counts as failed.
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
}

/// The phases, in boot order: (name, console line marker).
const PHASES: &[(&str, &[&str])] = &[
    ("kernel", &["Linux version"]),
    ("run_init", &["as init process"]),
    ("root_mounted", &["EXT4-fs (vd", "mounted filesystem"]),
    ("init_ready", &["cove-init: root filesystem up"]),
];

#[derive(Debug, Clone, Serialize)]
struct Run {
    /// Milliseconds from `cove start` to each phase (`None`: not seen).
    vmm_ms: Option<f64>,
    phases: Vec<(String, Option<f64>)>,
    agent_ms: f64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match args.command {
        BenchCommand::Boot(a) => boot(ctx, a),
    }
}

fn boot(ctx: &Ctx, a: BootArgs) -> Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // A VM name boots that VM's image (the VM itself is left alone).
    let image = match lifecycle::show(&ctx.paths, &a.target) {
        Ok(r) => r.image_id,
        Err(_) => a.target.clone(),
    };
    let mut runs = Vec::new();
    for i in 0..a.runs {
        let name = format!("bench-{}-{i}", std::process::id());
        let r = one_boot(ctx, &a, &image, &name);
        let _ = lifecycle::kill(&ctx.paths, &name);
        let _ = lifecycle::delete(&ctx.paths, &name, true, false);
        let r = r.with_context(|| format!("boot {} of {}", i + 1, a.runs))?;
        if !ctx.json {
            eprintln!("run {}: agent answered after {:.0} ms", i + 1, r.agent_ms);
        }
        runs.push(r);
    }
    let mut p50: Vec<(String, Option<f64>)> =
        vec![("vmm_start".into(), median(runs.iter().map(|r| r.vmm_ms)))];
    for (idx, (phase, _)) in PHASES.iter().enumerate() {
        p50.push((
            (*phase).into(),
            median(runs.iter().map(|r| r.phases[idx].1)),
        ));
    }
    p50.push((
        "agent_answer".into(),
        median(runs.iter().map(|r| Some(r.agent_ms))),
    ));
    if ctx.json {
        output::print_json(&serde_json::json!({
            "image": image,
            "runs": runs,
            "p50_ms": p50
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        }))?;
    } else {
        println!(
            "{} boots of {image}, p50 from `cove start` (host clock):",
            runs.len()
        );
        let mut prev = 0.0;
        for (phase, v) in &p50 {
            match v {
                Some(ms) => {
                    println!("  {phase:<14} {ms:>7.0} ms  (+{:.0})", ms - prev);
                    prev = *ms;
                }
                None => println!("  {phase:<14}       - (not seen on the console)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn one_boot(ctx: &Ctx, a: &BootArgs, image: &str, name: &str) -> Result<Run> {
    lifecycle::create(
        &ctx.paths,
        &CreateOptions {
            name: VmName::new(name)?,
            image: image.to_owned(),
            cpus: a.cpus,
            memory_mib: a.memory,
            machine: cove_backend::Machine::Microvm,
            backend: cove_backend::BackendKind::Qemu,
            ports: Vec::new(),
            disks: Vec::new(),
            mounts: Vec::new(),
            networks: Vec::new(),
            host_loopback: false,
        },
    )?;
    let vm = ctx.paths.vm(name);
    let console = vm.console_log();
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let wall0 = SystemTime::now();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || watch_console(&console, t0, &done))
    };
    let started = lifecycle::start(
        &ctx.paths,
        name,
        &StartOptions {
            boot_timeout: Duration::from_secs(a.timeout),
            from: None,
        },
    );
    let agent_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Lines printed up to the answer are in the file by now; one more poll reads them.
    std::thread::sleep(Duration::from_millis(20));
    done.store(true, Ordering::Relaxed);
    let lines = watcher.join().unwrap_or_default();
    started?;
    let vmm_ms = std::fs::metadata(vm.vmm_cmdline())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(wall0).ok())
        .map(|d| d.as_secs_f64() * 1000.0);
    let phases = PHASES
        .iter()
        .map(|(phase, markers)| {
            let at = lines
                .iter()
                .find(|(_, l)| markers.iter().all(|m| l.contains(m)))
                .map(|(t, _)| *t);
            ((*phase).to_owned(), at)
        })
        .collect();
    Ok(Run {
        vmm_ms,
        phases,
        agent_ms,
    })
}

/// Lines of the console log with the host time (ms since `t0`) each was first seen.
/// Bounded: a guest flooding its console cannot grow this past 4096 lines.
fn watch_console(path: &std::path::Path, t0: Instant, done: &AtomicBool) -> Vec<(f64, String)> {
    const MAX_LINES: usize = 4096;
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let finished = done.load(Ordering::Relaxed);
        if let Ok(mut f) = std::fs::File::open(path)
            && f.seek(SeekFrom::Start(pos)).is_ok()
        {
            {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    pos += n as u64;
                    let now = t0.elapsed().as_secs_f64() * 1000.0;
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            if out.len() < MAX_LINES {
                                out.push((now, String::from_utf8_lossy(&pending).into_owned()));
                            }
                            pending.clear();
                        } else if pending.len() < 4096 {
                            pending.push(b);
                        }
                    }
                }
            }
        }
        if finished {
            return out;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
