//! `cove stop NAME`: graceful shutdown, forced after a timeout.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_vm::lifecycle::{self, StopOutcome};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Seconds to wait for the guest to shut down before forcing it.
    #[arg(long, short = 't', default_value_t = 20, value_parser = super::timeout_secs())]
    pub timeout: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let current = lifecycle::show(&ctx.paths, &args.name)?;
    if !ctx.json && current.state.is_active() {
        eprintln!(
            "stopping {} (graceful, forced after {}s)",
            args.name, args.timeout
        );
    }
    let (outcome, detail) =
        lifecycle::stop(&ctx.paths, &args.name, Duration::from_secs(args.timeout))?;
    let record = lifecycle::show(&ctx.paths, &args.name)?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "name": record.name, "state": record.state, "detail": detail,
        }))?;
    } else if outcome == StopOutcome::AlreadyStopped {
        println!("{} is already {}", record.name, record.state);
    } else {
        println!("{} is {}: {detail}", record.name, record.state);
    }
    Ok(ExitCode::SUCCESS)
}
