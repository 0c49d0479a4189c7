//! The guest side of the checks, behind a trait so this crate does not depend on how the
//! guest is reached (the CLI implements it over the agent link; [`LocalGuest`] runs on this
//! machine).

use std::future::Future;
use std::time::Duration;

/// A command to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestExec {
    pub argv: Vec<String>,
    /// Guest user to run as; `None` for the agent's default (root).
    pub user: Option<String>,
    /// How long it may take; the runner gives up after this even if the guest does not.
    pub timeout: Duration,
}

/// How a guest command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Exit code, or 128 + signal (shell convention).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A guest process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// Full command line, or `[comm]` for kernel threads.
    pub command: String,
}

/// Why the guest could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The agent (or the path to it) did not answer.
    #[error("the guest agent could not be reached: {0}")]
    Unreachable(String),
    /// The guest could not start the program (not installed, not executable, unknown user).
    #[error("the guest could not run `{program}`: {message}")]
    Spawn { program: String, message: String },
    /// The command did not finish in time (the guest side ends it).
    #[error("`{program}` did not finish within {}", crate::report::human_duration(*.waited))]
    Timeout { program: String, waited: Duration },
    /// Anything else the guest side reported.
    #[error("{0}")]
    Other(String),
}

/// What the checks need from a guest.
pub trait Guest: Sync {
    /// Runs a command to completion and captures its output.
    fn exec(&self, req: GuestExec) -> impl Future<Output = Result<ExecOutput, GuestError>> + Send;
    /// The guest's processes.
    fn processes(&self) -> impl Future<Output = Result<Vec<Proc>, GuestError>> + Send;
    /// One round trip to the agent; returns how long it took.
    fn ping(&self) -> impl Future<Output = Result<Duration, GuestError>> + Send;
}

/// The machine this process runs on, as a guest: commands run through `std::process` (via
/// tokio), processes come from `/proc`. Used by tests and to try checks without a VM.
#[derive(Debug, Clone, Default)]
pub struct LocalGuest;

impl Guest for LocalGuest {
    fn exec(&self, req: GuestExec) -> impl Future<Output = Result<ExecOutput, GuestError>> + Send {
        local_exec(req)
    }

    async fn processes(&self) -> Result<Vec<Proc>, GuestError> {
        local_processes()
    }

    async fn ping(&self) -> Result<Duration, GuestError> {
        let t = std::time::Instant::now();
        std::fs::metadata("/proc/self")
            .map(|_| t.elapsed())
            .map_err(|e| GuestError::Unreachable(e.to_string()))
    }
}

async fn local_exec(req: GuestExec) -> Result<ExecOutput, GuestError> {
    let mut argv = req.argv.clone();
    if let Some(user) = &req.user {
        if cove_util::process::is_root() {
            argv = [
                vec!["runuser".into(), "-u".into(), user.clone(), "--".into()],
                argv,
            ]
            .concat();
        } else if std::env::var("USER").ok().as_deref() != Some(user.as_str()) {
            return Err(GuestError::Spawn {
                program: argv.first().cloned().unwrap_or_default(),
                message: format!("running as `{user}` needs root on this machine"),
            });
        }
    }
    host_exec(&argv, &[], req.timeout).await
}

/// Runs a program on this machine with output captured, killed if it outlives `timeout`.
pub(crate) async fn host_exec(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<ExecOutput, GuestError> {
    let program = argv.first().cloned().unwrap_or_default();
    let child = tokio::process::Command::new(&program)
        .args(argv.get(1..).unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => {
            return Err(GuestError::Timeout {
                program,
                waited: timeout,
            });
        }
        Ok(Err(e)) => {
            return Err(GuestError::Spawn {
                program,
                message: e.to_string(),
            });
        }
        Ok(Ok(out)) => out,
    };
    use std::os::unix::process::ExitStatusExt;
    let code = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(ExecOutput {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn local_processes() -> Result<Vec<Proc>, GuestError> {
    let dir = std::fs::read_dir("/proc").map_err(|e| GuestError::Other(format!("/proc: {e}")))?;
    let mut procs = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let command = if cmdline.is_empty() {
            match std::fs::read_to_string(entry.path().join("comm")) {
                Ok(comm) => format!("[{}]", comm.trim_end()),
                Err(_) => continue,
            }
        } else {
            String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ")
        };
        procs.push(Proc { pid, command });
    }
    procs.sort_by_key(|p| p.pid);
    Ok(procs)
}
