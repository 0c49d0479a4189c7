//! Benchmark 14: `cove list` and `cove show` with 100 VM records in the store.

use crate::cove::Cove;
use crate::report::Section;
use crate::stats::{Samples, ms, spread_row};
use anyhow::Result;
use std::time::Duration;

/// VM records in the store while `list` and `show` are timed.
pub const RECORDS: usize = 100;
const GOAL: Duration = Duration::from_millis(10);

pub fn run(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!(
            "{RECORDS} VMs created from image `m64` (`cove create ls-N --image m64`, untimed), none running: every record is read and reconciled, none needs a supervisor."
        ),
        format!(
            "Wall time of the whole CLI process: `cove list`, `cove --json list`, `cove show ls-50`, and for reference `cove --version` (the process alone). One untimed warm-up of each, then {runs} runs of each, interleaved with the order rotated each round."
        ),
    ];
    let names: Vec<String> = (0..RECORDS).map(|i| format!("ls-{i}")).collect();
    for n in &names {
        cove.track(n);
        cove.create(n, &["--image", "m64"])?;
    }
    let ways: [(&str, Vec<&str>); 4] = [
        ("`cove list`", vec!["list"]),
        ("`cove --json list`", vec!["--json", "list"]),
        ("`cove show ls-50`", vec!["show", "ls-50"]),
        ("reference: `cove --version`", vec!["--version"]),
    ];
    let mut samples: Vec<Samples> = ways.iter().map(|_| Samples::new()).collect();
    let result = (|| -> Result<()> {
        for i in 0..=runs {
            for k in 0..ways.len() {
                let idx = (i + k) % ways.len();
                let d = cove.timed(&ways[idx].1)?;
                if i > 0 {
                    samples[idx].push(d);
                }
            }
        }
        Ok(())
    })();
    for n in &names {
        let _ = cove.delete(n);
    }
    result?;
    s.headers = ["", "runs", "p50", "p99", "min", "max"]
        .map(String::from)
        .to_vec();
    for ((what, _), x) in ways.iter().zip(&samples) {
        s.rows.push(spread_row(*what, x));
    }
    for (i, what) in [(0, "`cove list`"), (2, "`cove show`")] {
        let x = &samples[i];
        s.goal(
            &format!("{what} with {RECORDS} VM records (p50)"),
            "< 10 ms",
            ms(x.median()),
            x.median() < GOAL,
        );
    }
    Ok(())
}
