//! `cove exec NAME [-i] [-t] [-e K=V] [-w DIR] [-u USER] [--] CMD ARGS...`

use super::agent_client;
use crate::context::Ctx;
use anyhow::{Result, bail};
use cove_agent_link::{ExecIo, ExecRequest};
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
    /// The command and its arguments: everything from the first word that is not one of the
    /// options above (as `docker exec`), or after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
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
            let io = if args.interactive {
                ExecIo::process_stdio()
            } else {
                ExecIo::without_stdin()
            };
            cove_agent_link::exec(&opener, req, io).await
        }
    })??;
    Ok(ExitCode::from(status.shell_code().clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn command_of(argv: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Exec(args) => args.command,
            other => panic!("not exec: {other:?}"),
        }
    }

    #[test]
    fn the_command_starts_at_its_first_word_with_or_without_a_separator() {
        let want = ["ls", "-la", "/"];
        assert_eq!(command_of(&["cove", "exec", "vm", "ls", "-la", "/"]), want);
        assert_eq!(
            command_of(&["cove", "exec", "vm", "--", "ls", "-la", "/"]),
            want
        );
        // Options before the command are cove's; after it, the command's own.
        match Cli::try_parse_from(["cove", "exec", "vm", "-e", "A=1", "env", "-u"])
            .expect("parses")
            .command
        {
            Command::Exec(args) => {
                assert_eq!(args.env, [("A".to_owned(), "1".to_owned())]);
                assert_eq!(args.user, None);
                assert_eq!(args.command, ["env", "-u"]);
            }
            other => panic!("not exec: {other:?}"),
        }
        assert!(Cli::try_parse_from(["cove", "exec", "vm"]).is_err());
    }
}
