//! The `cove` command. Arguments live in `cli.rs`, one handler per verb in
//! `commands/`, human/JSON output in `output.rs`. Only this crate uses
//! `anyhow`; the libraries return typed errors.

mod cli;
mod commands;
mod context;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The KVM probe runs in a child copy of this binary, so a vCPU that
    // never returns can be killed; it must not go through argument parsing.
    cove_qemu::accel::run_probe_child_if_asked();
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
