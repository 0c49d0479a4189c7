//! `cove __supervise NAME`: become the VM's supervisor (started by `cove start`).

use crate::context::Ctx;
use anyhow::Result;
use cove_vm::supervisor::{self, SuperviseOptions};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    #[arg(
        long,
        default_value_t = cove_api::DEFAULT_BOOT_TIMEOUT_SECS,
        value_parser = super::timeout_secs()
    )]
    pub boot_timeout: u64,
    #[arg(long)]
    pub lock_fd: Option<i32>,
    /// Take over the running VMM of a supervisor that died.
    #[arg(long)]
    pub adopt: bool,
    /// Restore from this snapshot (`OWNER@TAG`) instead of booting.
    #[arg(long)]
    pub restore: Option<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    supervisor::run(
        ctx.paths.clone(),
        SuperviseOptions {
            name: args.name,
            boot_timeout: Duration::from_secs(args.boot_timeout),
            lock_fd: args.lock_fd,
            adopt: args.adopt,
            restore: args.restore,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
