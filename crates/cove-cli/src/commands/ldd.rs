//! `cove ldd NAME:/path/to/binary`: the binary's shared libraries as the guest's loader would
//! find them (its ld.so.conf, RPATH/RUNPATH, architecture directories), read by the agent from
//! the ELF files, so it works in a guest with no `ldd`. Exits 1 when a library is missing.

use super::agent_client;
use crate::context::Ctx;
use crate::output;
use anyhow::{Context as _, Result, bail};
use cove_vm::console_log::clean_line;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `NAME:/path/in/guest`
    pub target: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let Some((name, path)) = args
        .target
        .split_once(':')
        .filter(|(n, p)| !n.is_empty() && p.starts_with('/'))
    else {
        bail!(
            "`{}` is not NAME:/path: name the VM and an absolute path in it, e.g. `cove ldd web:/usr/bin/getent`",
            args.target
        );
    };
    let opener = agent_client::opener(ctx, name)?;
    let report = crate::rt::block_on(cove_agent_link::ldd(&opener, path))?
        .map_err(|e| super::trace::old_agent_hint(e, "ldd"))
        .with_context(|| format!("reading {path} in `{name}`"))?;
    let missing = report.libraries.iter().filter(|l| l.path.is_none()).count();
    if ctx.json {
        output::print_json(&report)?;
    } else {
        let interp = match (&report.interpreter, report.interpreter_found) {
            (None, _) => "static, no interpreter".to_string(),
            (Some(i), true) => format!("interpreter {}", clean_line(i)),
            (Some(i), false) => format!("interpreter {} NOT FOUND", clean_line(i)),
        };
        println!(
            "{} ({}, {interp})",
            clean_line(&report.path),
            report.machine
        );
        for l in &report.libraries {
            match &l.path {
                Some(p) => println!("  {} => {}", clean_line(&l.name), clean_line(p)),
                None => {
                    println!(
                        "  {} => not found (needed by {}); searched:",
                        clean_line(&l.name),
                        clean_line(&l.needed_by)
                    );
                    for d in &l.searched {
                        println!("      {}", clean_line(d));
                    }
                }
            }
        }
        if missing > 0 {
            eprintln!(
                "{missing} librar{} not found",
                if missing == 1 { "y" } else { "ies" }
            );
        }
    }
    let broken = missing > 0 || (report.interpreter.is_some() && !report.interpreter_found);
    Ok(if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
