//! `cove shell NAME`: a login shell on a terminal in the guest.

use super::agent_client;
use crate::context::Ctx;
use anyhow::Result;
use cove_agent_link::ExecRequest;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Guest user to log in as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The shell to run.
    #[arg(long, default_value = "/bin/sh")]
    pub shell: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let opener = agent_client::opener(ctx, &args.name)?;
    let req = ExecRequest {
        // `-l` makes it a login shell: profile files run, as after a login.
        argv: vec![args.shell, "-l".into()],
        env: Vec::new(),
        cwd: None,
        user: args.user,
        tty: None,
    };
    let status = crate::rt::block_on(cove_agent_link::exec_tty(&opener, req))??;
    Ok(ExitCode::from(status.shell_code().clamp(0, 255) as u8))
}
