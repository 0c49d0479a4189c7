//! `cove serve --socket PATH`: cove's VM verbs as HTTP+JSON on a unix
//! socket (mode 0600), for programs that would otherwise parse `--json`
//! from subprocesses. The answers are the same types `--json` prints
//! (`views.rs`); `docs/openapi.json` describes them.

use crate::context::Ctx;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The unix socket to listen on (created mode 0600).
    #[arg(long, required_unless_present = "openapi")]
    pub socket: Option<PathBuf>,
    /// Print the OpenAPI description and exit.
    #[arg(long)]
    pub openapi: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    if args.openapi {
        println!("{}", crate::serve::openapi_json());
        return Ok(ExitCode::SUCCESS);
    }
    let socket = args.socket.context("--socket is required")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(crate::serve::serve(ctx.paths.clone(), &socket))?;
    Ok(ExitCode::SUCCESS)
}
