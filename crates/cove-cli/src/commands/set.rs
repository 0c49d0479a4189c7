//! `cove set NAME --cpus N --memory SIZE` on a stopped VM.

use crate::commands::create::parse_memory;
use crate::context::Ctx;
use crate::output;
use anyhow::{Result, bail};
use cove_vm::lifecycle;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    #[arg(long)]
    pub cpus: Option<u32>,
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    if args.cpus.is_none() && args.memory.is_none() {
        bail!("nothing to change: pass --cpus N and/or --memory SIZE");
    }
    let r = lifecycle::set(&ctx.paths, &args.name, args.cpus, args.memory)?;
    if ctx.json {
        output::print_json(&super::show::summary(&r))?;
    } else {
        println!("{}: {} CPU, {}", r.name, r.cpus, output::mib(r.memory_mib));
    }
    Ok(ExitCode::SUCCESS)
}
