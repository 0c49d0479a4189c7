//! `cove clone NAME@TAG NEW...`: new VMs restored from one snapshot, sharing its memory image.

use crate::commands::start::BootArgs;
use crate::context::Ctx;
use anyhow::Result;
use cove_state::VmName;
use cove_vm::{lifecycle, snapshot};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The snapshot, `NAME@TAG`.
    #[arg(add = crate::complete::snapshot_origin())]
    pub origin: String,
    /// Names of the new VMs.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Create them without starting.
    #[arg(long)]
    pub no_start: bool,
    #[command(flatten)]
    pub boot: BootArgs,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let names = args
        .names
        .iter()
        .map(|n| VmName::new(n))
        .collect::<Result<Vec<_>, _>>()?;
    for name in &names {
        snapshot::create_clone(&ctx.paths, &args.origin, name)?;
        if args.no_start {
            if !ctx.json {
                println!(
                    "created {name} from {}; `cove start {name}` restores it",
                    args.origin
                );
            }
            continue;
        }
        let started = lifecycle::start(&ctx.paths, name.as_str(), &args.boot.options())?;
        crate::commands::start::report(ctx, &started)?;
    }
    Ok(ExitCode::SUCCESS)
}
