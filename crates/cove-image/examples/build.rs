//! Builds an image into cove's XDG directories and prints each stage:
//! `cargo run -p cove-image --example build [spec.toml]` (no argument: `minimal`).
//! `COVE_AGENT=path` adds the agent.

use cove_image::{BuildOptions, ImageSpec, MinimalOptions, Progress, build_image, build_minimal};
use cove_state::{Paths, Store};
use std::time::{Duration, Instant};

struct Stderr(Instant);

impl Progress for Stderr {
    fn stage_started(&self, stage: &str) {
        eprintln!("[{:7.3}] {stage} …", self.0.elapsed().as_secs_f64());
    }
    fn stage_finished(&self, stage: &str, elapsed: Duration) {
        eprintln!(
            "[{:7.3}] {stage}: {:.3} s",
            self.0.elapsed().as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    fn message(&self, line: &str) {
        eprintln!("          {line}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths = Paths::from_env()?;
    let mut store = Store::open(&paths)?;
    let agent = std::env::var_os("COVE_AGENT").map(Into::into);
    let progress = Stderr(Instant::now());
    let m = match std::env::args_os().nth(1) {
        Some(spec) => {
            let spec = ImageSpec::load(spec.as_ref())?;
            let opts = BuildOptions {
                agent,
                ..Default::default()
            };
            build_image(&paths, &mut store, &spec, &opts, &progress)?
        }
        None => {
            let opts = MinimalOptions {
                agent,
                ..Default::default()
            };
            build_minimal(&paths, &mut store, &opts, &progress)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&m)?);
    eprintln!("total: {:.3} s", progress.0.elapsed().as_secs_f64());
    Ok(())
}
