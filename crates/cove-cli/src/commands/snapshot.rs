//! `cove snapshot NAME [TAG]`, `cove snapshot ls NAME`, `cove snapshot rm NAME TAG`.

use crate::context::Ctx;
use crate::output;
use anyhow::{Result, bail};
use cove_vm::snapshot;
use std::process::ExitCode;

/// The tag of `cove snapshot NAME` without one.
pub const DEFAULT_TAG: &str = "base";

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Forms:\n  cove snapshot NAME [TAG]   save a running VM (memory, devices, every disk)\n  \
                  cove snapshot ls NAME      list its snapshots and their clones\n  \
                  cove snapshot rm NAME TAG  remove one\n\
                  Restore with `cove start NAME --from TAG`; clone with `cove clone NAME@TAG NEW...`."
)]
pub struct Args {
    /// NAME [TAG], or `ls NAME`, or `rm NAME TAG`.
    #[arg(required = true, num_args = 1..=3, add = crate::complete::snapshot_words())]
    pub words: Vec<String>,
    /// End the VM after saving instead of resuming it.
    #[arg(long)]
    pub stop: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["ls", name] => list(ctx, name),
        ["rm", name, tag] => {
            snapshot::remove(&ctx.paths, name, tag)?;
            if ctx.json {
                output::print_json(&serde_json::json!({"name": name, "removed": tag}))?;
            } else {
                println!("removed snapshot {name}@{tag}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["ls" | "rm", ..] => bail!("usage: `cove snapshot ls NAME` or `cove snapshot rm NAME TAG`"),
        [name] | [name, _] => {
            let tag = words.get(1).copied().unwrap_or(DEFAULT_TAG);
            let detail = snapshot::take(&ctx.paths, name, tag, !args.stop)?;
            if ctx.json {
                output::print_json(
                    &serde_json::json!({"name": name, "tag": tag, "detail": detail}),
                )?;
            } else {
                println!(
                    "{detail}; restore with `cove start {name} --from {tag}`, clone with `cove clone {name}@{tag} NEW`"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("usage: `cove snapshot NAME [TAG]`"),
    }
}

fn list(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let snaps = snapshot::list(&ctx.paths, name)?;
    if ctx.json {
        output::print_json(&snaps)?;
        return Ok(ExitCode::SUCCESS);
    }
    if snaps.is_empty() {
        println!("`{name}` has no snapshots; take one with `cove snapshot {name} [TAG]`");
    }
    for s in snaps {
        println!(
            "{name}@{}  {:.1} MiB on disk ({:.1} MiB apparent){}",
            s.tag,
            s.disk_bytes as f64 / 1048576.0,
            s.bytes as f64 / 1048576.0,
            if s.clones.is_empty() {
                String::new()
            } else {
                format!("  clones: {}", s.clones.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
