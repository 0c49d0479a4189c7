//! `cove man DIR`: write the manual pages (`cove.1`, `cove-start.1`, …),
//! generated from the same clap definitions as `--help`.

use crate::output;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the pages into (created if missing), e.g.
    /// `~/.local/share/man/man1`.
    pub dir: PathBuf,
}

pub fn run(json: bool, args: Args) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(crate::cli::Cli::command(), &args.dir)
        .with_context(|| format!("writing manual pages into {}", args.dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("cove") && n.ends_with(".1"))
        .collect();
    pages.sort();
    if json {
        output::print_json(&serde_json::json!({ "dir": args.dir, "pages": pages }))?;
    } else {
        println!(
            "wrote {} manual pages into {}",
            pages.len(),
            args.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
