//! Benchmark 7: what `cove trace` costs on a small command, against the same command run plainly
//! with `cove exec`, both in the minimal VM of §8 (busybox; no Debian image needed).

use crate::cove::Cove;
use crate::report::Section;
use crate::shares::NAME;
use crate::stats::{Samples, ms, ratio};
use anyhow::Result;

/// A small command that opens files, reads a directory, fails to open one
/// and starts child processes.
const SCRIPT: &str = "ls / >/dev/null; cat /etc/passwd >/dev/null; cat /no/such 2>/dev/null; true";

pub fn run(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!(
            "The minimal VM of §8 (busybox, TCG). **plain**: wall time of `cove exec {NAME} -- sh -c SCRIPT`; **traced**: `cove trace {NAME} -- sh -c SCRIPT` (the agent's ptrace tracer stops every system call of the shell and its children at entry and exit, reads path arguments, and streams each failed call to the CLI)."
        ),
        format!("SCRIPT: `{SCRIPT}`."),
        format!(
            "One untimed warm-up of each, then {runs} runs of each, alternating which goes first."
        ),
    ];
    let sh = ["sh", "-c", SCRIPT];
    let plain: Vec<&str> = ["exec", NAME, "--"].iter().chain(&sh).copied().collect();
    let traced: Vec<&str> = ["trace", NAME, "--"].iter().chain(&sh).copied().collect();
    let (mut p, mut t) = (Samples::new(), Samples::new());
    for i in 0..=runs {
        let (a, b) = if i % 2 == 0 {
            (cove.timed(&plain)?, cove.timed(&traced)?)
        } else {
            let b = cove.timed(&traced)?;
            (cove.timed(&plain)?, b)
        };
        if i > 0 {
            p.push(a);
            t.push(b);
        }
    }
    s.headers = ["", "runs", "p50", "p99", "p50 ÷ plain", "p99 ÷ plain"]
        .map(String::from)
        .to_vec();
    for (label, x) in [("plain `cove exec`", &p), ("`cove trace`", &t)] {
        s.rows.push(vec![
            label.into(),
            x.len().to_string(),
            ms(x.median()),
            ms(x.p99()),
            format!("{:.2}×", ratio(x.median(), p.median())),
            format!("{:.2}×", ratio(x.p99(), p.p99())),
        ]);
    }
    s.notes.push(format!(
        "Tracing cost per run (p50): {} for the whole script.",
        ms(t.median().saturating_sub(p.median()))
    ));
    Ok(())
}
