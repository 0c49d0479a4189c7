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
}

pub fn read(pid: u64) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
    Ok(Mem {
        rss: field_kib(&status, "VmRSS:").context("VmRSS missing")?,
        pss: field_kib(&rollup, "Pss:").context("Pss missing")?,
    })
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
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
        worst = Mem {
            rss: worst.rss.max(b.0.rss),
            pss: worst.pss.max(b.0.pss),
        };
    }
    cove.delete(name)?;
    s.goal(
        "supervisor RSS (highest reading)",
        "< 10 MiB",
        mib(worst.rss),
        worst.rss < GOAL_KIB,
    );
    s.goal(
        "supervisor PSS (highest reading)",
        "< 10 MiB",
        mib(worst.pss),
        worst.pss < GOAL_KIB,
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
