//! `cove delete NAME`: remove a VM and all its files.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_vm::lifecycle;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true, add = crate::complete::vm())]
    pub names: Vec<String>,
    /// Kill a running VM first instead of refusing.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Also delete the VM's data disks (kept otherwise, for the next VM).
    #[arg(long)]
    pub purge: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    for name in &args.names {
        lifecycle::delete(&ctx.paths, name, args.force, args.purge)?;
        if ctx.json {
            output::print_json(&serde_json::json!({"name": name, "deleted": true}))?;
        } else {
            println!("deleted {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
