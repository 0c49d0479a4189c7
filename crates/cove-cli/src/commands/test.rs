//! `cove test NAME [--junit FILE] [--json]`: run a VM's declared health checks.
//!
//! Exit status: 0 when every check passed, 1 when any failed or was skipped, 2 when the
//! checks could not be run at all (no such VM, unreadable checks file).

use super::agent_client;
mod fresh;
use crate::context::Ctx;
use crate::output;
use anyhow::{Context as _, Result};
use cove_agent_link::{ExecIo, ExecRequest, Input, LinkError, StreamOpener};
use cove_check::{ExecOutput, Guest, GuestError, GuestExec, Proc, VmFacts};
use cove_proto::ErrorKind;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Checks are declared as [[vm.check]] tables in the spec used with `cove up`; \
    every VM also gets \"VM running\" and \"agent ready\".\n\
    Exit status: 0 all passed, 1 a check failed or was skipped, 2 the checks could not run."
)]
pub struct Args {
    /// The VM whose checks to run.
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Also write the results as JUnit XML to this file (for CI).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run the checks on a throwaway clone of the VM's newest snapshot (or `--snapshot TAG`),
    /// removed afterwards; the VM itself is not touched.
    #[arg(long)]
    pub fresh: bool,
    /// With `--fresh`: the snapshot to clone.
    #[arg(long, requires = "fresh", value_name = "TAG")]
    pub snapshot: Option<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match test(ctx, &args) {
        Ok(code) => Ok(code),
        Err(err) => {
            output::print_error(&err);
            Ok(ExitCode::from(2))
        }
    }
}

fn test(ctx: &Ctx, args: &Args) -> Result<ExitCode> {
    let throwaway = match args.fresh {
        true => Some(fresh::Throwaway::start(
            ctx,
            &args.name,
            args.snapshot.as_deref(),
        )?),
        false => None,
    };
    let name = throwaway.as_ref().map_or(&args.name, |t| &t.name);
    let record = cove_vm::lifecycle::show(&ctx.paths, name)?;
    let checks_file = ctx.paths.vm(name).checks_file();
    let declared = cove_check::load(&checks_file)?;
    let checks = declared.clone().unwrap_or_default();
    // Only a running VM has an agent to reach; otherwise the runner reports the VM check's
    // failure and skips the rest without touching the guest.
    let guest = AgentGuest {
        opener: agent_client::opener(ctx, name).ok(),
    };
    let mut facts = VmFacts::from(&record);
    // `tcp = "db:5432"`: every VM on a cove network, at its first address there.
    for a in cove_state::Store::open(&ctx.paths)?.attachments(None, None)? {
        if !facts.peers.iter().any(|(n, _)| *n == a.vm) {
            facts.peers.push((a.vm, a.ip.into()));
        }
    }
    let report = crate::rt::block_on(cove_check::run(&facts, &guest, &checks))?;
    if let Some(path) = &args.junit {
        std::fs::write(path, cove_check::to_junit(&report))
            .with_context(|| format!("cannot write the JUnit report to {}", path.display()))?;
    }
    if ctx.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
        if let Some(path) = &args.junit {
            eprintln!("JUnit report written to {}", path.display());
        }
    }
    if declared.is_none() {
        eprintln!(
            "note: `{name}` has no declared checks, so only the two built-in ones ran; declare \
             more as [[vm.check]] tables (e.g. `process = \"postgres\"`, `tcp = 5432`, \
             `sql = \"select 1\"` with `expect = \"1\"`) in the spec used with `cove up`"
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The guest as the checks see it: the VM's agent, reached through its supervisor.
struct AgentGuest<O> {
    opener: Option<O>,
}

impl<O: StreamOpener> AgentGuest<O> {
    fn opener(&self) -> Result<&O, GuestError> {
        self.opener
            .as_ref()
            .ok_or_else(|| GuestError::Unreachable("the VM is not running".into()))
    }
}

/// Output kept per stream: the end of a chatty command is what explains a failure.
const KEEP_BYTES: usize = 256 * 1024;

/// An `AsyncWrite` into a buffer the caller keeps a handle to, keeping the last
/// [`KEEP_BYTES`]. cove-agent-link's `ExecIo` takes owned boxed writers, so capturing
/// output needs a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        let buf = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Ok(mut buf) = self.0.lock() {
            buf.extend_from_slice(data);
            if buf.len() > KEEP_BYTES {
                let extra = buf.len() - KEEP_BYTES;
                buf.drain(..extra);
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn guest_error(program: &str, e: LinkError) -> GuestError {
    match e {
        LinkError::Remote(msg) => match msg.kind {
            ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidRequest => {
                GuestError::Spawn {
                    program: program.to_owned(),
                    message: msg.message,
                }
            }
            _ => GuestError::Other(msg.message),
        },
        LinkError::Protocol(_) | LinkError::Local { .. } => GuestError::Other(e.to_string()),
        other => GuestError::Unreachable(other.to_string()),
    }
}

impl<O: StreamOpener> Guest for AgentGuest<O> {
    async fn exec(&self, req: GuestExec) -> Result<ExecOutput, GuestError> {
        let program = req.argv.first().cloned().unwrap_or_default();
        let opener = self.opener()?;
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let io = ExecIo {
            stdin: Input::None,
            stdout: Box::new(stdout.clone()),
            stderr: Box::new(stderr.clone()),
            control: None,
        };
        let exec = ExecRequest {
            argv: req.argv,
            env: Vec::new(),
            cwd: None,
            user: req.user,
            tty: None,
        };
        let status = tokio::time::timeout(req.timeout, cove_agent_link::exec(opener, exec, io))
            .await
            .map_err(|_| GuestError::Timeout {
                program: program.clone(),
                waited: req.timeout,
            })?
            .map_err(|e| guest_error(&program, e))?;
        Ok(ExecOutput {
            code: status.shell_code(),
            stdout: stdout.text(),
            stderr: stderr.text(),
        })
    }

    async fn processes(&self) -> Result<Vec<Proc>, GuestError> {
        let procs = cove_agent_link::ps(self.opener()?)
            .await
            .map_err(|e| guest_error("ps", e))?;
        Ok(procs
            .into_iter()
            .map(|p| Proc {
                pid: p.pid,
                command: p.command,
            })
            .collect())
    }

    async fn ping(&self) -> Result<Duration, GuestError> {
        // A stat of `/` is a full round trip CLI → supervisor → agent → back.
        let started = Instant::now();
        cove_agent_link::stat(self.opener()?, "/")
            .await
            .map_err(|e| GuestError::Unreachable(e.to_string()))?;
        Ok(started.elapsed())
    }
}
