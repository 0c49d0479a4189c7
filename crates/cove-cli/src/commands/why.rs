//! `cove why NAME`: explain a VM that failed, from its console log and what the supervisor
//! recorded (`cove why --log FILE` analyzes any console log).

use crate::context::Ctx;
use crate::output;
use anyhow::{Context, Result, bail};
use cove_diagnose::kernel;
use cove_diagnose::why::{self, VmFacts, VmmExit};
use cove_state::{Store, VmState};
use cove_vm::lifecycle;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM to explain.
    #[arg(required_unless_present = "log", add = crate::complete::vm())]
    pub name: Option<String>,
    /// Explain the boot before the current one.
    #[arg(long)]
    pub previous: bool,
    /// Analyze this console log instead of a VM's (no VM needed).
    #[arg(long, conflicts_with = "name")]
    pub log: Option<PathBuf>,
    /// With --log: the kernel config (file or kernel image) the guest ran.
    #[arg(long, requires = "log")]
    pub kernel: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let (text, facts) = match (&args.name, &args.log) {
        (_, Some(log)) => {
            let text = cove_vm::console_log::read_bounded(log)
                .with_context(|| format!("reading {}", log.display()))?;
            let kernel_config = match &args.kernel {
                Some(k) => Some(kernel::load_config(k)?.0),
                None => None,
            };
            let facts = VmFacts {
                kernel_config,
                ..VmFacts::default()
            };
            (text, facts)
        }
        (Some(name), None) => vm_facts(ctx, name, args.previous)?,
        (None, None) => bail!("name a VM, or pass --log FILE"),
    };
    let diagnosis = why::analyze(&text, &facts);
    if ctx.json {
        output::print_json(&diagnosis)?;
    } else {
        print!("{diagnosis}");
    }
    Ok(if diagnosis.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Gather what is known about a VM: its console log, the supervisor's record of the last
/// exit, and the image's kernel config and initramfs modules.
fn vm_facts(ctx: &Ctx, name: &str, previous: bool) -> Result<(String, VmFacts)> {
    let record = lifecycle::show(&ctx.paths, name)?;
    let vm = ctx.paths.vm(name);
    let log_path = if previous {
        vm.previous_console_log()
    } else {
        vm.console_log()
    };
    // Bounded: the boot's start and the latest output, whatever the size.
    let text = match cove_vm::console_log::read_bounded(&log_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", log_path.display())),
    };
    let store = Store::open(&ctx.paths)?;
    // The image may have been removed since; diagnose with what is left.
    let manifest = cove_image::resolve(&store, &record.image_id).ok();
    let kernel_config = manifest
        .as_ref()
        .and_then(|m| crate::image_check::booted_config(m).ok().map(|(c, _)| c));
    let running = record.state == VmState::Running;
    // The supervisor records the agent's handshake; an image without an agent has
    // nothing to answer.
    let agent_answered = manifest.as_ref().is_some_and(|m| !m.agent) || record.agent_answered;
    let facts = VmFacts {
        name: Some(name.to_string()),
        memory_mib: Some(record.memory_mib),
        vmm_exit: if running {
            None
        } else {
            record.last_exit.as_deref().and_then(parse_exit)
        },
        agent_answered,
        kernel_config,
        initramfs_modules: manifest.as_ref().map(|m| m.modules.clone()),
        state: Some(record.state.as_str().to_string()),
        machine: Some(record.machine.to_string()),
        cmdline: std::fs::read_to_string(vm.vmm_cmdline()).ok(),
    };
    Ok((text, facts))
}

/// `exit status 1` / `killed by signal 9`, as the supervisor writes them.
fn parse_exit(s: &str) -> Option<VmmExit> {
    let num = |prefix: &str| {
        s.split_once(prefix)
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| {
                n.trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
    };
    let exit = VmmExit {
        code: num("exit status "),
        signal: num("signal "),
        stderr_tail: None,
    };
    (exit.code.is_some() || exit.signal.is_some()).then_some(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_exit_strings_parse() {
        assert_eq!(parse_exit("exit status 1").unwrap().code, Some(1));
        assert_eq!(parse_exit("killed by signal 9").unwrap().signal, Some(9));
        assert!(parse_exit("running").is_none());
    }
}
