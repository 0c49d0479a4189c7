//! `cove start NAME`: boot and wait until the guest is ready.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_vm::lifecycle::{self, StartOptions};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Restore this snapshot (`TAG`, or `OWNER@TAG` for a clone) instead of booting.
    #[arg(long, add = crate::complete::snapshot_tag())]
    pub from: Option<String>,
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
            from: None,
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let opts = StartOptions {
        from: args.from,
        ..args.boot.options()
    };
    let started = lifecycle::start(&ctx.paths, &args.name, &opts)?;
    report(ctx, &started)
}

pub fn report(ctx: &Ctx, started: &lifecycle::Started) -> Result<ExitCode> {
    let r = &started.record;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "name": r.name,
            "state": r.state,
            "boot_ms": started.boot_ms,
            "restored_from": started.restored,
            "accel": r.accel,
            "machine": r.machine,
        }))?;
    } else {
        let how = match &started.restored {
            Some(origin) => format!("restored from snapshot {origin}"),
            None => "booted".to_owned(),
        };
        println!(
            "{} is {} ({how}; {}, {}, ready in {:.2}s)",
            r.name,
            r.state,
            r.accel.map_or("?", |a| a.as_str()),
            r.machine,
            started.boot_ms as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
