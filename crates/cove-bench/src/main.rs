//! `cove-bench`: side-by-side measurements of cove against the bare tools it
//! replaces (QEMU's own command line, ssh, scp, qemu-guest-agent), in one
//! run, written with their method to BENCHMARKS.md.

mod arch;
mod boot;
mod copy;
mod cove;
mod create;
mod exec;
mod guest;
mod idle;
mod kernels;
mod list;
mod machine;
mod memory;
mod net;
mod qga;
mod report;
mod shares;
mod snapshot;
mod stats;
mod trace;

use anyhow::{Context, Result, bail};
use clap::Parser;
use report::Section;
use std::path::PathBuf;

const ALL: [&str; 15] = [
    "boot", "create", "memory", "exec", "cp", "kernels", "trace", "shares", "arch", "net", "list",
    "snapshot", "pgsnap", "density", "idle",
];

#[derive(Parser, Debug)]
#[command(
    about = "Measure cove side by side with bare QEMU, ssh, scp and qemu-guest-agent; write BENCHMARKS.md"
)]
struct Args {
    /// Benchmarks to run, comma-separated: boot, create, memory, exec, cp, kernels, trace,
    /// shares, arch, net, list, snapshot, pgsnap, density, idle (default: all; `net` needs root: it makes a network
    /// namespace). With a subset, the other sections of the report file are kept.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Runs per slow measurement (boots, creates, new ssh connections); fast
    /// ones (exec over cove, ControlMaster, qemu-ga) run 10× as often, copies
    /// half as often (at least 3).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Clones of one snapshot the density run starts (fewer if the host's memory runs low).
    #[arg(long, default_value_t = 100)]
    clones: usize,
    /// The `cove` binary (default: `cove` beside this program, i.e. the same build).
    #[arg(long)]
    cove: Option<PathBuf>,
    /// Where to write the report (default: BENCHMARKS.md at the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report without writing it.
    #[arg(long)]
    no_write: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let only: Vec<String> = if args.only.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.only.clone()
    };
    if let Some(bad) = only.iter().find(|o| !ALL.contains(&o.as_str())) {
        bail!("unknown benchmark `{bad}`; pick from {}", ALL.join(", "));
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin = match &args.cove {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .join("cove"),
    };
    if !bin.exists() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p cove-cli` or pass --cove",
            bin.display()
        );
    }
    let cove = cove::Cove::new(bin.clone())?;
    let mut m = machine::Machine::detect(&cove);
    // Which build was measured: a debug CLI starts several times slower than a release one.
    let profile = match bin
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
    {
        Some("release") => "release build",
        Some("debug") => "debug build",
        _ => "build profile unknown",
    };
    m.cove = format!("{} ({profile}, {})", m.cove, bin.display());
    for (k, v) in m.lines() {
        println!("{k:>14}: {v}");
    }
    let want = |b: &str| only.iter().any(|o| o == b);
    let mut sections = Vec::new();
    let runs = args.runs;

    if ["boot", "create", "memory"].iter().any(|b| want(b)) {
        eprintln!("building images m64 and m4g (cached after the first time)");
    }
    let images = (|| -> Result<()> {
        let m64 = [
            "boot", "memory", "create", "arch", "list", "snapshot", "density", "idle",
        ];
        if m64.iter().any(|b| want(b)) {
            cove.build_image("minimal", &["--name", "m64", "--size", "64M"], None)?;
        }
        if want("arch") {
            let a64 = [
                "--arch",
                "arm64",
                "--name",
                arch::IMAGES[1].1,
                "--size",
                "64M",
            ];
            cove.build_image("minimal", &a64, None)?;
        }
        if want("create") {
            cove.build_image("minimal", &["--name", "m4g", "--size", "4G"], None)?;
        }
        Ok(())
    })();
    let images_err = images.err().map(|e| format!("building the images: {e:#}"));

    let mut bench = |id: &str, title: &str, f: &mut dyn FnMut(&mut Section) -> Result<()>| {
        if !want(id) {
            return;
        }
        eprintln!("== {title}");
        let mut s = Section::new(title);
        if let Err(e) = f(&mut s) {
            eprintln!("{title}: failed: {e:#}");
            s.error = Some(format!("{e:#}"));
        }
        if cfg!(debug_assertions) {
            s.notes.push(
                "`cove` and `cove-bench` were the debug build in this run (not release).".into(),
            );
        }
        cove.delete_all_except(&[guest::NAME, shares::NAME]);
        println!("\n{}", s.markdown());
        sections.push(s);
    };
    let need_images = || -> Result<()> {
        match &images_err {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    };
    bench("boot", "1. Boot: `cove start` vs bare QEMU", &mut |s| {
        need_images()?;
        boot::run(&cove, runs, s)
    });
    bench(
        "create",
        "2. `cove create` from a 64 MiB and a 4 GiB image",
        &mut |s| {
            need_images()?;
            create::run(&cove, runs, s)
        },
    );
    bench(
        "kernels",
        "6. Guest kernels: cove's own kernel vs Debian's cloud kernel (issue 13)",
        &mut |s| kernels::run(&cove, runs, s),
    );
    bench(
        "list",
        "11. `cove list` and `cove show` with 100 VM records",
        &mut |s| {
            need_images()?;
            list::run(&cove, runs * 5, s)
        },
    );
    bench("memory", "3. Supervisor memory", &mut |s| {
        need_images()?;
        memory::run(&cove, 20, s)
    });
    bench(
        "snapshot",
        "12. Snapshot restore vs cold boot (minimal VM)",
        &mut |s| {
            need_images()?;
            snapshot::restore(&cove, runs, s)
        },
    );
    bench(
        "pgsnap",
        "13. PostgreSQL example: restore vs cold boot to `select 1`",
        &mut |s| snapshot::postgres(&cove, (runs / 2).max(3), s),
    );
    bench(
        "density",
        "14. Density: clones of one snapshot vs one cold-booted VM",
        &mut |s| {
            need_images()?;
            snapshot::density(&cove, args.clones, s)
        },
    );
    bench(
        "idle",
        "15. Idle cost: a VM that runs nothing, as cove runs it and untuned",
        &mut |s| {
            need_images()?;
            idle::run(&cove, std::time::Duration::from_secs(60), s)
        },
    );
    bench(
        "arch",
        "10. arm64 guest beside amd64, both under TCG",
        &mut |s| {
            need_images()?;
            arch::run(&cove, runs, 10, s)
        },
    );

    if want("trace") || want("shares") {
        eprintln!("== booting the minimal VM with a shared folder for trace and shares");
        let booted = cove
            .build_image("minimal", &[], None)
            .and_then(|()| shares::boot(&cove))
            .map_err(|e| format!("setting up the minimal VM: {e:#}"));
        bench(
            "trace",
            "7. `cove trace` overhead on a small command",
            &mut |s| match &booted {
                Ok(()) => trace::run(&cove, runs * 2, s),
                Err(e) => bail!("{e}"),
            },
        );
        bench(
            "shares",
            "8. Shared folder (virtiofs) vs `cove cp`",
            &mut |s| match &booted {
                Ok(()) => shares::run(&cove, (runs / 2).max(3), s),
                Err(e) => bail!("{e}"),
            },
        );
        let _ = cove.delete(shares::NAME);
    }

    if want("exec") || want("cp") {
        eprintln!("== booting the Debian guest for exec and cp");
        let g = guest::Guest::boot(&cove);
        let g_err = g
            .as_ref()
            .err()
            .map(|e| format!("setting up the Debian guest: {e:#}"));
        bench(
            "exec",
            "4. `cove exec` vs ssh vs qemu-guest-agent",
            &mut |s| match &g {
                Ok(g) => exec::run(&cove, g, runs * 10, runs * 2, s),
                Err(_) => bail!("{}", g_err.clone().unwrap_or_default()),
            },
        );
        bench("cp", "5. `cove cp` vs scp, 100 MiB", &mut |s| match &g {
            Ok(g) => copy::run(&cove, g, (runs / 2).max(3), s),
            Err(_) => bail!("{}", g_err.clone().unwrap_or_default()),
        });
        let _ = cove.delete(guest::NAME);
    }

    bench(
        "net",
        "9. VM to VM: a cove network vs user-mode networking through a host forward",
        &mut |s| net::run(&bin, (runs / 2).max(3), s),
    );

    // The build profile is part of what was measured: name the one that ran.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut cmdline = format!("target/{profile}/cove-bench");
    for a in std::env::args().skip(1) {
        cmdline.push(' ');
        cmdline.push_str(&a);
    }
    m.load_end = machine::loadavg();
    let when = now_utc();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md"));
    let doc = match std::fs::read_to_string(&out) {
        Ok(old) if !args.only.is_empty() => {
            // The machine table is not rewritten: the section carries its own load figures.
            let when = format!(
                "{when} (load average {} at the start, {} at the end)",
                m.load_start, m.load_end
            );
            report::splice(&old, &cmdline, &when, &sections)
        }
        _ => report::document(&m, &cmdline, &when, &sections),
    };
    if !args.no_write {
        std::fs::write(&out, doc).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    if sections.iter().any(|s| s.error.is_some()) {
        eprintln!("error: some benchmarks did not complete (see above)");
        drop(cove);
        std::process::exit(1);
    }
    Ok(())
}

/// The current UTC time, from `date` (std has no calendar).
fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "at an unknown time".into())
}
