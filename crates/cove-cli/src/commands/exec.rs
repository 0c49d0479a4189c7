//! `cove exec NAME [-i] [-t] [-e K=V] [-w DIR] [-u USER] -- CMD ARGS...`

use super::agent_client;
use crate::context::Ctx;
use anyhow::{Result, bail};
use cove_agent_link::{ExecIo, ExecRequest, Input};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Pass this terminal's stdin to the command.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Run the command on a terminal (stdout and stderr merged, Ctrl-C and
    /// resizes go to the guest).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable (`KEY=VALUE`), repeatable.
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    #[arg(long = "workdir", short = 'w')]
    pub cwd: Option<String>,
    /// Run as this guest user (name or uid, optionally `:group`).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub(crate) fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    if args.command.is_empty() {
        bail!("no command given: `cove exec {} -- CMD ARGS...`", args.name);
    }
    let opener = agent_client::opener(ctx, &args.name)?;
    let req = ExecRequest {
        argv: args.command,
        env: args.env,
        cwd: args.cwd,
        user: args.user,
        tty: None,
    };
    let status = crate::rt::block_on(async {
        if args.tty {
            cove_agent_link::exec_tty(&opener, req).await
        } else {
            let mut io = ExecIo::process_stdio();
            if !args.interactive {
                io.stdin = Input::None;
            }
            cove_agent_link::exec(&opener, req, io).await
        }
    })??;
    Ok(ExitCode::from(status.shell_code().clamp(0, 255) as u8))
}
