//! Snapshots (issue 12): restore against cold boot for the minimal VM and the PostgreSQL
//! example, and the density of many clones of one snapshot against one cold-booted VM.

use crate::cove::{Cove, json_u64};
use crate::memory;
use crate::report::Section;
use crate::stats::{Samples, ms, ratio, spread_row};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

/// The minimal image built with `cove image build minimal` (as `cove up` and the e2e tests use).
const IMAGE: &str = crate::boot::IMAGE;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn gib(kib: u64) -> String {
    format!("{:.2} GiB", kib as f64 / 1024.0 / 1024.0)
}

/// Time of one `cove --json snapshot NAME TAG --stop` and the snapshot's size as listed.
fn take(cove: &Cove, name: &str, tag: &str) -> Result<(Duration, u64, u64)> {
    let took = cove.timed(&["snapshot", name, tag, "--stop"])?;
    let listed = cove.json(&["snapshot", "ls", name])?;
    let snap = listed
        .as_array()
        .and_then(|a| a.iter().find(|s| s["tag"] == tag))
        .with_context(|| format!("snapshot {name}@{tag} not listed: {listed}"))?;
    Ok((
        took,
        json_u64(snap, "disk_bytes")?,
        json_u64(snap, "bytes")?,
    ))
}

/// A snapshot's size as the reports give it: on disk, and apparent (its sparse memory file).
fn size_text(disk: u64, apparent: u64) -> String {
    format!(
        "{:.1} MiB on disk ({:.0} MiB apparent)",
        disk as f64 / 1048576.0,
        apparent as f64 / 1048576.0
    )
}

/// One untimed warm-up of each, then `runs` of each, restore and cold alternating which goes
/// first; `one(true)` times a restore, `one(false)` a cold start.
fn alternate(
    what: &str,
    runs: usize,
    mut one: impl FnMut(bool) -> Result<Duration>,
) -> Result<(Samples, Samples)> {
    let (mut restored, mut cold) = (Samples::new(), Samples::new());
    for i in 0..=runs {
        for turn in 0..2 {
            let is_restore = (turn == 0) == (i % 2 == 0);
            let d = one(is_restore)?;
            eprintln!(
                "  {what} run {i} {}: {}",
                if is_restore { "restore" } else { "cold" },
                ms(d)
            );
            if i > 0 {
                if is_restore {
                    restored.push(d)
                } else {
                    cold.push(d)
                }
            }
        }
    }
    Ok((restored, cold))
}

/// The restore and cold rows side by side and their ratios; returns the p50 ratio.
fn restore_vs_cold_table(
    s: &mut Section,
    (restore_label, restored): (&str, &Samples),
    (cold_label, cold): (&str, &Samples),
) -> f64 {
    s.headers = ["", "runs", "p50", "p99", "min", "max"]
        .map(String::from)
        .to_vec();
    s.rows.push(spread_row(restore_label, restored));
    s.rows.push(spread_row(cold_label, cold));
    let r50 = ratio(restored.median(), cold.median());
    s.rows.push(vec![
        "restore / cold".into(),
        String::new(),
        format!("{r50:.3}×"),
        format!("{:.3}×", ratio(restored.p99(), cold.p99())),
        String::new(),
        String::new(),
    ]);
    r50
}

/// Minimal image: `cove start --from` (restore, agent answered, fixups applied) against a cold
/// `cove start` of the same VM, alternating.
pub fn restore(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!("Image `{IMAGE}` (as section 1), 256 MiB, 1 vCPU, microvm, one VM `snap`: started cold, snapshot `base` taken with `cove snapshot snap base --stop` (timed)."),
        "**restore**: wall time of `cove start snap --from base`, which returns once the restored guest's agent answered and took the post-restore fixups (clock, entropy). **cold**: wall time of `cove start snap`, which returns once the booted guest's agent answered.".into(),
        format!("The VM is killed (`cove kill`) after each run. One untimed warm-up of each, then {runs} runs of each, alternating which goes first."),
    ];
    let name = "snap";
    cove.create(name, &["--image", IMAGE])?;
    cove.run(&["start", name])?;
    let size = take(cove, name, "base")?;
    let (restored, cold) = alternate("snapshot", runs, |is_restore| {
        let d = if is_restore {
            cove.timed(&["start", name, "--from", "base"])?
        } else {
            cove.timed(&["start", name])?
        };
        cove.run(&["kill", name])?;
        Ok(d)
    })?;
    let r50 = restore_vs_cold_table(
        s,
        (
            "`cove start --from base` (restore to agent answer)",
            &restored,
        ),
        ("`cove start` (cold boot to agent answer)", &cold),
    );
    s.notes.push(format!(
        "`cove snapshot snap base --stop` took {}; the snapshot is {} (the 256 MiB memory file is sparse).",
        ms(size.0),
        size_text(size.1, size.2)
    ));
    s.goal(
        "restore to first agent answer (p50)",
        "≤ 0.3 s",
        ms(restored.median()),
        restored.median() <= Duration::from_millis(300),
    );
    s.goal(
        "restore / cold start (p50)",
        "≤ 0.12×",
        format!("{r50:.3}×"),
        r50 <= 0.12,
    );
    cove.run(&["snapshot", "rm", name, "base"])?;
    Ok(())
}

/// The PostgreSQL example: from `cove start` (cold, or `--from` its snapshot) to `select 1`
/// answered through the host forward.
pub fn postgres(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    const PORT: &str = "25471";
    let name = "pgb";
    let disk = format!("bench{}", std::process::id() % 1_000_000);
    s.method = vec![
        format!("`examples/postgres.toml` (Debian bookworm with PostgreSQL 15, 1 GiB, 2 vCPUs, its data on a data disk) as VM `{name}` on host port {PORT}, brought up with `cove up --no-test`; snapshot `base` taken with `cove snapshot {name} base --stop` once `select 1` answered (timed)."),
        "**restore**: from running `cove start pgb --from base` to the host's `psql -h 127.0.0.1 -c 'select 1'` answering `1` (psql retried every 20 ms until it does). **cold**: the same from `cove start pgb` (boot, init, PostgreSQL's start and recovery).".into(),
        format!("The VM is stopped (`cove stop`) after each run. {runs} runs of each after one untimed warm-up, alternating which goes first."),
    ];
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/postgres.toml"),
    )?
    .replace("\"15432:5432\"", &format!("\"{PORT}:5432\""))
    .replace("name = \"pgdata\"", &format!("name = \"{disk}\""))
    .replace("name = \"pg\"", &format!("name = \"{name}\""));
    let spec_path = cove.root().join("postgres.toml");
    std::fs::write(&spec_path, spec)?;
    cove.track(name);
    let result = (|| -> Result<()> {
        cove.run(&["up", "--no-test", &spec_path.to_string_lossy()])?;
        wait_select1(PORT, Instant::now())?;
        let size = take(cove, name, "base")?;
        let (restored, cold) = alternate("postgres", runs, |is_restore| {
            let t = Instant::now();
            if is_restore {
                cove.run(&["start", name, "--from", "base"])?;
            } else {
                cove.run(&["start", name])?;
            }
            let d = wait_select1(PORT, t)?;
            cove.run(&["stop", name])?;
            Ok(d)
        })?;
        restore_vs_cold_table(
            s,
            ("`cove start --from base` to `select 1` answered", &restored),
            ("`cove start` (cold) to `select 1` answered", &cold),
        );
        s.notes.push(format!(
            "`cove snapshot {name} base --stop` took {}; the snapshot is {} (1 GiB memory file, sparse; the root overlay and the data disk's copy).",
            ms(size.0),
            size_text(size.1, size.2)
        ));
        s.goal(
            "PostgreSQL: restore to `select 1` (p50)",
            "≤ 0.5 s",
            ms(restored.median()),
            restored.median() <= Duration::from_millis(500),
        );
        cove.run(&["snapshot", "rm", name, "base"])?;
        Ok(())
    })();
    let _ = cove.delete_purging(name);
    result
}

/// Polls `select 1` through the host forward; the time from `since` to the first answer.
fn wait_select1(port: &str, since: Instant) -> Result<Duration> {
    let deadline = since + Duration::from_secs(120);
    loop {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", port])
            .args(["-U", "postgres", "-c", "select 1"])
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .context("running the host's psql (postgresql-client)")?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "`select 1` on port {port} not answered within 120 s: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (utime + stime) of a process so far, in clock ticks.
fn cpu_ticks(pid: u64) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Clones are started while the host keeps at least this much memory available for the other
/// work on it (the machine is shared).
const RESERVE_KIB: u64 = 6 * 1024 * 1024;

/// `want` clones of one snapshot of the minimal VM running at once: memory per clone against one
/// cold-booted VM, idle CPU, time to create and start them, `cove list` among them.
pub fn density(cove: &Cove, want: usize, s: &mut Section) -> Result<()> {
    let src = "dsrc";
    s.method = vec![
        format!(
            "Image `{IMAGE}`, 256 MiB, 1 vCPU. VM `{src}` booted cold; its QEMU's PSS and RSS read once it answered (section 3's /proc method); then `cove snapshot {src} base --stop`, and clones `d1`..`dN` made and started one after another with `cove clone {src}@base dI` (each restores the snapshot and takes the fixups)."
        ),
        format!(
            "Clones are started while MemAvailable stays above {} (the machine is shared with other work) up to {want}. With all of them up: the sum of their QEMU PSS and RSS, their supervisors' PSS, the CPU time of every QEMU and supervisor over 30 s (utime + stime from /proc/PID/stat), and `cove list` timed 10 times.",
            gib(RESERVE_KIB)
        ),
    ];
    cove.create(src, &["--image", IMAGE])?;
    cove.run(&["start", src])?;
    // Settle: the guest's first seconds after the agent answered still touch memory.
    std::thread::sleep(Duration::from_secs(5));
    let cold = memory::read(json_u64(&cove.show(src)?, "pid")?)?;
    let size = take(cove, src, "base")?;
    let mut names = Vec::new();
    let began = Instant::now();
    let mut stopped_by = None;
    for i in 1..=want {
        if mem_available_kib() < RESERVE_KIB {
            stopped_by = Some(format!(
                "stopped at {} clones: MemAvailable fell under {}",
                names.len(),
                gib(RESERVE_KIB)
            ));
            break;
        }
        let name = format!("d{i}");
        cove.track(&name);
        cove.run(&["clone", &format!("{src}@base"), &name])
            .with_context(|| format!("clone {i} of {want}"))?;
        names.push(name);
        if i % 10 == 0 {
            eprintln!(
                "  density: {i} clones up after {:.1} s, MemAvailable {}",
                began.elapsed().as_secs_f64(),
                gib(mem_available_kib())
            );
        }
    }
    let all_up = began.elapsed();
    let n = names.len() as u64;
    if n == 0 {
        bail!("no clone could be started");
    }
    std::thread::sleep(Duration::from_secs(10));
    let mut pids = Vec::new();
    for name in &names {
        let show = cove.show(name)?;
        pids.push((json_u64(&show, "pid")?, json_u64(&show, "supervisor_pid")?));
    }
    let ticks = || -> u64 {
        pids.iter()
            .map(|(q, v)| cpu_ticks(*q) + cpu_ticks(*v))
            .sum()
    };
    let t0 = (Instant::now(), ticks());
    std::thread::sleep(Duration::from_secs(30));
    let cpu = (ticks() - t0.1) as f64 / 100.0 / t0.0.elapsed().as_secs_f64();
    let (mut q_pss, mut q_rss, mut s_pss, mut max_pss) = (0, 0, 0, 0);
    for (q, v) in &pids {
        let m = memory::read(*q)?;
        q_pss += m.pss;
        q_rss += m.rss;
        max_pss = max_pss.max(m.pss);
        s_pss += memory::read(*v)?.pss;
    }
    let mut list = Samples::new();
    for _ in 0..10 {
        list.push(cove.timed(&["list"])?);
    }
    s.headers = ["", "value"].map(String::from).to_vec();
    let rows: Vec<(&str, String)> = vec![
        ("clones running at once", n.to_string()),
        (
            "one cold-booted VM: QEMU PSS / RSS",
            format!("{} / {}", mib(cold.pss), mib(cold.rss)),
        ),
        (
            "clones: QEMU PSS, sum / per clone (highest)",
            format!("{} / {} ({})", gib(q_pss), mib(q_pss / n), mib(max_pss)),
        ),
        (
            "clones: QEMU RSS, sum / per clone",
            format!("{} / {}", gib(q_rss), mib(q_rss / n)),
        ),
        (
            "per clone PSS / one cold VM's PSS",
            format!("{:.3}×", (q_pss / n) as f64 / cold.pss as f64),
        ),
        (
            "clones: supervisors' PSS, sum / per clone",
            format!("{} / {}", mib(s_pss), mib(s_pss / n)),
        ),
        (
            "idle CPU of all clones (QEMU + supervisor) over 30 s",
            format!(
                "{:.2} of a core ({:.2} % each)",
                cpu,
                cpu * 100.0 / n as f64
            ),
        ),
        (
            "create and start all clones, one after another",
            format!(
                "{:.1} s ({} each)",
                all_up.as_secs_f64(),
                ms(all_up / n as u32)
            ),
        ),
        (
            "`cove list` among them: p50 / p99 (10 runs)",
            format!("{} / {}", ms(list.median()), ms(list.p99())),
        ),
        ("snapshot `base`", size_text(size.1, size.2)),
    ];
    s.rows = rows
        .into_iter()
        .map(|(a, b)| vec![a.to_owned(), b])
        .collect();
    s.notes.push(format!(
        "RSS counts the snapshot's memory file pages every clone maps (shared, copy-on-write) in full for each clone; PSS divides them among the clones, so the sum of PSS is what the clones cost together. {} (sum of RSS) against {} (sum of PSS) is the shared memory image.",
        gib(q_rss),
        gib(q_pss)
    ));
    if let Some(why) = &stopped_by {
        s.notes.push(format!("Fewer than {want}: {why}."));
    }
    let scaled = q_pss as f64 / n as f64 * 100.0;
    s.goal(
        "100 clones: sum of QEMU PSS (scaled from the clones measured)",
        "≤ 6 GiB",
        gib(scaled as u64),
        scaled <= 6.0 * 1024.0 * 1024.0,
    );
    s.goal(
        "100 clones: idle CPU (scaled)",
        "< 0.5 core",
        format!("{:.2}", cpu * 100.0 / n as f64),
        cpu * 100.0 / (n as f64) < 0.5,
    );
    s.goal(
        &format!("`cove list` at {n} VMs (p50)"),
        "< 100 ms",
        ms(list.median()),
        list.median() < Duration::from_millis(100),
    );
    for name in &names {
        let _ = cove.run(&["kill", name]);
    }
    for name in names.iter().chain([&src.to_owned()]) {
        cove.delete(name)?;
    }
    Ok(())
}
