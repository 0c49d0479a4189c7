//! Benchmark 2: `cove create` from a small and a large image.

use crate::cove::Cove;
use crate::report::Section;
use crate::stats::{Samples, ms};
use anyhow::Result;
use std::time::Duration;

const GOAL: Duration = Duration::from_millis(100);

pub fn run(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        "Images `m64` and `m4g`: `cove image build minimal --name m64 --size 64M` and `--name m4g --size 4G` (same content, 64 MiB and 4 GiB root filesystems).".into(),
        format!("Wall time of the whole `cove create NAME --image IMG` CLI, {runs} runs per image after one untimed warm-up each, the two images alternating; each VM is deleted (untimed) before the next run."),
    ];
    let images = ["m64", "m4g"];
    let mut samples = [Samples::new(), Samples::new()];
    for i in 0..=runs {
        for k in 0..2 {
            let idx = if i % 2 == 0 { k } else { 1 - k };
            let img = images[idx];
            let name = format!("cr-{img}-{i}");
            cove.track(&name);
            let d = cove.timed(&["create", &name, "--image", img]);
            cove.delete(&name)?;
            let d = d?;
            eprintln!("  create run {i} {img}: {}", ms(d));
            if i > 0 {
                samples[idx].push(d);
            }
        }
    }
    s.headers = ["image", "runs", "p50", "p99", "min", "max"]
        .map(String::from)
        .to_vec();
    for (img, x) in images.iter().zip(&samples) {
        s.rows.push(crate::stats::spread_row(format!("`{img}`"), x));
        s.goal(
            &format!("create from `{img}` (p50)"),
            "< 100 ms",
            ms(x.median()),
            x.median() < GOAL,
        );
    }
    s.notes.push(format!(
        "4 GiB vs 64 MiB (p50): {:.2}× — creating a VM does not copy the image (a qcow2 overlay over it).",
        crate::stats::ratio(samples[1].median(), samples[0].median())
    ));
    Ok(())
}
