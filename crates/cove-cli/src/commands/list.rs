//! `cove list`: every VM and its true state.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_vm::lifecycle;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: Args) -> Result<ExitCode> {
    let vms = lifecycle::list(&ctx.paths)?;
    if ctx.json {
        let rows: Vec<_> = vms.iter().map(super::show::summary).collect();
        output::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if vms.is_empty() {
        println!("no VMs; create one with `cove create NAME --image minimal`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                r.state.to_string(),
                r.cpus.to_string(),
                output::mib(r.memory_mib),
                r.image_name.clone(),
                r.arch.to_string(),
                r.accel.map_or_else(|| "-".into(), |a| a.to_string()),
                super::show::ports_text(&r.ports),
            ]
        })
        .collect();
    output::print_table(
        &[
            "NAME", "STATE", "CPUS", "MEMORY", "IMAGE", "ARCH", "ACCEL", "PORTS",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
