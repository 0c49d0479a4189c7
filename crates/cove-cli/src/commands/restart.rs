//! `cove restart NAME`: stop (graceful), then start.

use crate::commands::start::{self, BootArgs};
use crate::context::Ctx;
use anyhow::Result;
use cove_vm::lifecycle;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Seconds to wait for the guest to shut down before forcing it.
    #[arg(long = "stop-timeout", default_value_t = 20, value_parser = super::timeout_secs())]
    pub stop_timeout: u64,
    #[command(flatten)]
    pub boot: BootArgs,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    lifecycle::stop(
        &ctx.paths,
        &args.name,
        Duration::from_secs(args.stop_timeout),
    )?;
    let started = lifecycle::start(&ctx.paths, &args.name, &args.boot.options())?;
    start::report(ctx, &started)
}
