//! `cove trace NAME [--all] [--pid PID] [-e K=V] [-w DIR] [-u USER] -- CMD ARGS...`: a guest
//! command under the agent's own tracer (nothing installed in the guest), reporting every call
//! that asked for a file, library or address and did not get it, then the missing libraries and
//! the exit status. Reports go to stderr (like strace), so the command's stdout stays its own;
//! with `--json`, one JSON object per line on stdout and the command's output on stderr.

use super::agent_client;
use crate::context::Ctx;
use anyhow::{Context as _, Result, bail};
use cove_agent_link::{
    ExecRequest, ExitStatus, LinkError, TraceEvent, TraceIo, TraceOutcome, TraceRequest,
};
use cove_vm::console_log::clean_line;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    /// Report every file access, not only the failed ones.
    #[arg(long)]
    pub all: bool,
    /// Attach to this running guest process (and the children it starts) instead of starting
    /// a command; Ctrl-C detaches and leaves it running.
    #[arg(long, conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Set an environment variable (`KEY=VALUE`), repeatable.
    #[arg(long = "env", short = 'e', value_parser = super::exec::parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    #[arg(long = "workdir", short = 'w')]
    pub cwd: Option<String>,
    /// Run as this guest user (name or uid, optionally `:group`).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The command and its arguments (from the first word that is not an option, or after
    /// `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Guest text on this terminal: the guest chooses file names, so no escape sequence passes.
fn shown(text: &str) -> String {
    clean_line(text)
}

fn errno_text(e: &TraceEvent) -> String {
    let name = e.errno.as_deref().unwrap_or("");
    let msg = std::io::Error::from_raw_os_error((-e.result) as i32).to_string();
    // "No such file or directory (os error 2)" → "No such file or directory"
    let msg = msg.split(" (os error").next().unwrap_or(&msg).to_string();
    format!("{name} ({msg})")
}

fn print_event(e: &TraceEvent, json: bool) {
    if json {
        println!("{}", json!({ "type": "call", "call": e }));
        return;
    }
    let path = e.path.as_deref().map(shown).unwrap_or_default();
    let outcome = if e.errno.is_some() {
        errno_text(e)
    } else {
        format!("= {}", e.result)
    };
    eprintln!(
        "trace: [pid {}] {} {path}: {outcome}",
        e.pid,
        shown(&e.syscall)
    );
}

fn print_outcome(o: &TraceOutcome, json: bool) {
    let s = &o.summary;
    if json {
        println!(
            "{}",
            json!({ "type": "summary", "summary": s, "exit": exit_json(o.exit) })
        );
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "trace: {} failed of {} system calls, {} process{}",
        s.failures,
        s.syscalls,
        s.processes,
        if s.processes == 1 { "" } else { "es" }
    );
    if !s.missing_libraries.is_empty() {
        let _ = writeln!(err, "trace: libraries searched for and not found:");
        for l in &s.missing_libraries {
            let _ = writeln!(err, "  {} (searched:)", shown(&l.name));
            for p in &l.searched {
                let _ = writeln!(err, "    {}", shown(p));
            }
        }
    }
    let _ = match o.exit {
        ExitStatus::Code(c) => writeln!(err, "trace: exited with status {c}"),
        ExitStatus::Signal(sig) => writeln!(err, "trace: killed by signal {sig}"),
    };
}

fn exit_json(e: ExitStatus) -> serde_json::Value {
    match e {
        ExitStatus::Code(c) => json!({ "code": c }),
        ExitStatus::Signal(s) => json!({ "signal": s }),
    }
}

/// An agent built before `cove trace`/`cove ldd` cannot parse the request: say what to do.
pub(super) fn old_agent_hint(e: LinkError, what: &str) -> anyhow::Error {
    let old = matches!(&e, LinkError::Remote(m) if m.message.contains("malformed open"));
    let err = anyhow::Error::new(e);
    if old {
        err.context(format!(
            "the guest's agent does not know `{what}`: rebuild the image (`cove image build`) so \
             it carries this cove's agent, then recreate the VM"
        ))
    } else {
        err
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let req = match (args.pid, args.command.is_empty()) {
        (Some(pid), _) => TraceRequest {
            exec: None,
            pid: Some(pid),
            all: args.all,
        },
        (None, false) => TraceRequest {
            exec: Some(ExecRequest {
                argv: args.command,
                env: args.env,
                cwd: args.cwd,
                user: args.user,
                tty: None,
            }),
            pid: None,
            all: args.all,
        },
        (None, true) => bail!(
            "nothing to trace: `cove trace {} -- CMD ARGS...`, or `--pid PID` for a running process",
            args.name
        ),
    };
    let attach = req.pid.is_some();
    let opener = agent_client::opener(ctx, &args.name)?;
    let json = ctx.json;
    let outcome = crate::rt::block_on(async {
        let io = TraceIo {
            stdout: if json {
                Box::new(tokio::io::stderr())
            } else {
                Box::new(tokio::io::stdout())
            },
            stderr: Box::new(tokio::io::stderr()),
            on_event: Box::new(move |e| print_event(&e, json)),
            // Ctrl-C interrupts a started command; an attached one is only let go.
            control: (!attach).then(cove_agent_link::forward_signals),
        };
        cove_agent_link::trace(&opener, req, io).await
    })?
    .map_err(|e| old_agent_hint(e, "trace"))
    .with_context(|| format!("tracing in `{}`", args.name))?;
    print_outcome(&outcome, json);
    Ok(ExitCode::from(outcome.exit.shell_code().clamp(0, 255) as u8))
}
