//! `cove kill NAME`: end the VMM at once.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_vm::lifecycle::{self, StopOutcome};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let outcome = lifecycle::kill(&ctx.paths, &args.name)?;
    let record = lifecycle::show(&ctx.paths, &args.name)?;
    if ctx.json {
        output::print_json(&serde_json::json!({"name": record.name, "state": record.state}))?;
    } else if outcome == StopOutcome::AlreadyStopped {
        println!("{} is already {}", record.name, record.state);
    } else {
        println!("{} killed; it is {}", record.name, record.state);
    }
    Ok(ExitCode::SUCCESS)
}
