//! Benchmark 3: memory of a running VM's supervisor (and QEMU's, for context).

use crate::cove::{Cove, json_u64};
use crate::report::Section;
use anyhow::{Context, Result};

const GOAL_KIB: u64 = 10 * 1024;

/// Resident and proportional set sizes of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub rss: u64,
    pub pss: u64,
    /// The split of RSS: private heap/stacks vs mapped files (the binary).
    pub anon: u64,
    pub file: u64,
    pub threads: u64,
}

pub fn read(pid: u64) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
    Ok(Mem {
        rss: field_kib(&status, "VmRSS:").context("VmRSS missing")?,
        pss: field_kib(&rollup, "Pss:").context("Pss missing")?,
        anon: field_kib(&status, "RssAnon:").unwrap_or(0),
        file: field_kib(&status, "RssFile:").unwrap_or(0),
        threads: field_kib(&status, "Threads:").unwrap_or(0),
    })
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The size on disk of a process's executable, in MiB.
fn binary_mib(pid: u64) -> f64 {
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .map(|m| m.len() as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn run(cove: &Cove, execs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!("A VM from image `{}` (256 MiB guest), started with `cove start`. The supervisor's pid is `supervisor_pid` from `cove --json show`, QEMU's is `pid`.", crate::boot::IMAGE),
        "RSS is VmRSS from /proc/PID/status, PSS is Pss from /proc/PID/smaps_rollup (shared pages divided among the processes that map them).".into(),
        format!("Read once right after `cove start` returned and again after {execs} `cove exec NAME -- true` and a 1 MiB `cove cp` in and out have gone through the supervisor."),
    ];
    let name = "mem";
    cove.create(name, &["--image", crate::boot::IMAGE])?;
    cove.run(&["start", name])?;
    let show = cove.show(name)?;
    let sup = json_u64(&show, "supervisor_pid")?;
    let qemu = json_u64(&show, "pid")?;
    let idle = (read(sup)?, read(qemu)?);
    let bin_mib = binary_mib(sup);
    s.headers = [
        "",
        "supervisor RSS",
        "supervisor PSS",
        "QEMU RSS",
        "QEMU PSS",
    ]
    .map(String::from)
    .to_vec();
    let row = |when: &str, (sm, qm): (Mem, Mem)| {
        vec![
            when.into(),
            mib(sm.rss),
            mib(sm.pss),
            mib(qm.rss),
            mib(qm.pss),
        ]
    };
    s.rows.push(row("after start", idle));
    // The busy phase may fail (a cove bug); the idle figures still count.
    let busy = (|| -> Result<(Mem, Mem)> {
        let file = cove.root().join("mem-1m");
        std::fs::write(&file, vec![0x5au8; 1024 * 1024])?;
        for _ in 0..execs {
            cove.run(&["exec", name, "--", "true"])?;
        }
        let f = file.to_string_lossy().into_owned();
        cove.run(&["cp", &f, &format!("{name}:/tmp/m")])?;
        cove.run(&["cp", &format!("{name}:/tmp/m"), &format!("{f}.back")])?;
        Ok((read(sup)?, read(qemu)?))
    })();
    let mut worst = idle.0;
    if let Ok(b) = &busy {
        s.rows.push(row("after exec and cp", *b));
        if b.0.rss > worst.rss {
            worst = b.0;
        }
    }
    let pss = idle.0.pss.max(busy.as_ref().map(|b| b.0.pss).unwrap_or(0));
    cove.delete(name)?;
    s.notes.push(format!(
        "Supervisor at its highest RSS: {} anonymous (heap, stacks) + {} file-backed (mostly the `cove` binary's own pages, shared with every other cove process, hence PSS < RSS); threads: {}.",
        mib(worst.anon),
        mib(worst.file),
        worst.threads
    ));
    if worst.rss >= GOAL_KIB {
        s.notes.push(format!(
            "**Why RSS is over 10 MiB:** {} of it is file-backed, i.e. pages of the `cove` binary itself ({:.1} MiB on disk; the supervisor is `cove __supervise`, the same binary as the CLI with every command linked in), and {} is the supervisor's own memory. PSS ({}) counts shared binary pages only in part.",
            mib(worst.file),
            bin_mib,
            mib(worst.anon),
            mib(pss)
        ));
    }
    s.goal(
        "supervisor RSS (highest reading)",
        "< 10 MiB",
        mib(worst.rss),
        worst.rss < GOAL_KIB,
    );
    s.goal(
        "supervisor PSS (highest reading)",
        "< 10 MiB",
        mib(pss),
        pss < GOAL_KIB,
    );
    busy.map(|_| ())
        .context("the exec/cp phase (figures after start are above)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let m = read(std::process::id().into()).unwrap();
        assert!(m.rss > 0 && m.pss > 0);
    }

    #[test]
    fn parses_kib_fields() {
        assert_eq!(
            field_kib("Name:\tx\nVmRSS:\t  9968 kB\n", "VmRSS:"),
            Some(9968)
        );
        assert_eq!(field_kib("Rss: 1 kB\nPss:  42 kB\n", "Pss:"), Some(42));
    }
}
