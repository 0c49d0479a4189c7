//! The `cove` command. Arguments live in `cli.rs`, one handler per verb in
//! `commands/`, human/JSON output in `output.rs`. Only this crate uses
//! `anyhow`; the libraries return typed errors.

mod cli;
mod commands;
mod complete;
mod context;
mod full_disk;
mod image_check;
mod output;
mod rt;
mod serve;
mod up_spec;
mod views;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The KVM probe runs in a child copy of this binary, so a vCPU that
    // never returns can be killed; it must not go through argument parsing.
    cove_backend::host::run_probe_child_if_asked();
    // `cove list | head` must end quietly like any Unix tool, not panic on
    // a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any other
    // thread exists has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A Tab in the user's shell: answer with candidates and exit.
    complete::answer_if_asked();
    let cli = cli::Cli::parse();
    // The supervisor writes to its VM's supervisor.log, which is read after the fact: there its
    // own milestones (the VMM started, on which accelerator and why; a restore's phases; ready)
    // are worth a line each per start. On a terminal only warnings.
    let default_filter = match cli.command {
        cli::Command::Supervise(_) => "warn,cove_vm::supervisor=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: supervisor.log is a file people open when told to.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err);
            if let Some(hint) = full_disk::hint(&err) {
                eprintln!("  hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
