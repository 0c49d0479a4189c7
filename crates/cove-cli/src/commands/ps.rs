//! `cove ps NAME`: the guest's processes.

use super::agent_client;
use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let opener = agent_client::opener(ctx, &args.name)?;
    let procs = crate::rt::block_on(cove_agent_link::ps(&opener))??;
    if ctx.json {
        output::print_json(&procs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = procs
        .iter()
        .map(|p| {
            vec![
                p.pid.to_string(),
                p.user.clone(),
                format!("{:.1}", p.cpu_percent),
                format!("{}K", p.rss_bytes / 1024),
                p.state.clone(),
                p.command.clone(),
            ]
        })
        .collect();
    output::print_table(&["PID", "USER", "%CPU", "RSS", "STATE", "COMMAND"], &rows);
    Ok(ExitCode::SUCCESS)
}
