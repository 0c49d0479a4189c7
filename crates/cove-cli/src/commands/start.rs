//! `cove start NAME`: boot and wait until the guest is ready.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_supervisor::lifecycle::{self, StartOptions};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    #[command(flatten)]
    pub boot: BootArgs,
}

#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// Seconds the guest may take to become ready before the start fails.
    #[arg(
        long = "timeout",
        default_value_t = cove_api::DEFAULT_BOOT_TIMEOUT_SECS,
        value_parser = super::timeout_secs()
    )]
    pub boot_timeout: u64,
}

impl BootArgs {
    pub fn options(&self) -> StartOptions {
        StartOptions {
            boot_timeout: Duration::from_secs(self.boot_timeout),
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let started = lifecycle::start(&ctx.paths, &args.name, &args.boot.options())?;
    report(ctx, &started)
}

pub fn report(ctx: &Ctx, started: &lifecycle::Started) -> Result<ExitCode> {
    let r = &started.record;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "name": r.name,
            "state": r.state,
            "boot_ms": started.boot_ms,
            "accel": r.accel,
            "machine": r.machine,
        }))?;
    } else {
        println!(
            "{} is {} ({}, {}, ready in {:.1}s)",
            r.name,
            r.state,
            r.accel.as_deref().unwrap_or("?"),
            r.machine,
            started.boot_ms as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
