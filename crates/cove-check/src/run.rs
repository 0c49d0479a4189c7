//! Running checks: the two implicit ones every VM gets (VM running, agent ready), then the
//! declared ones, each bounded by its timeout and retried until its `wait` runs out.

use crate::cause::{self, Context};
use crate::guest::{Guest, GuestError, GuestExec};
use crate::probe;
use crate::report::{CheckResult, Failure, Report, Status, human_duration};
use crate::spec::{Check, CheckKind, SqlCheck, Via};
use cove_state::{PortForward, VmRecord, VmState};
use std::time::{Duration, Instant};

/// What cove's store says about the VM under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFacts {
    pub name: String,
    pub state: VmState,
    pub vmm_pid: Option<u32>,
    pub ports: Vec<PortForward>,
    /// Addresses of the VMs a `tcp = "NAME:PORT"` check may name (on cove networks).
    pub peers: Vec<(String, std::net::IpAddr)>,
}

impl From<&VmRecord> for VmFacts {
    fn from(r: &VmRecord) -> VmFacts {
        VmFacts {
            name: r.name.as_str().to_owned(),
            state: r.state,
            vmm_pid: r.vmm_pid,
            ports: r.ports.clone(),
            peers: Vec::new(),
        }
    }
}

impl VmFacts {
    /// The forward that reaches `guest_port`, if the VM has one.
    pub fn forward(&self, guest_port: u16) -> Option<&PortForward> {
        self.ports.iter().find(|p| p.guest_port == guest_port)
    }
}

/// How long the agent may take to answer the readiness ping.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause between attempts of a waiting check; doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(2);
/// The shortest attempt a waiting check makes, even right at its deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
/// How much longer than a check's timeout the runner waits for the guest to report it.
const GUEST_GRACE: Duration = Duration::from_secs(1);

fn slow_cause() -> String {
    "the guest is slow or the command hangs; raise `timeout`, or add `wait` if the service is \
     still starting"
        .into()
}

/// Runs the implicit checks, then `checks`, and reports every result.
pub async fn run<G: Guest>(vm: &VmFacts, guest: &G, checks: &[Check]) -> Report {
    let started = Instant::now();
    let mut results = Vec::with_capacity(checks.len() + 2);
    let mut push = |name: String, kind, outcome: Attempted| {
        results.push(CheckResult {
            number: results.len() + 1,
            name,
            kind,
            status: outcome.status,
            duration: outcome.duration,
            attempts: outcome.attempts,
            detail: outcome.detail,
            failure: outcome.failure,
        });
        outcome.status == Status::Pass
    };

    let t = Instant::now();
    let vm_ok = push(
        "VM running".into(),
        "vm",
        Attempted::once(vm_running(vm), t),
    );
    let agent_ok = if vm_ok {
        let t = Instant::now();
        let ping = match tokio::time::timeout(AGENT_TIMEOUT, guest.ping()).await {
            Ok(Ok(rtt)) => Ok(Some(format!("answered in {}", human_duration(rtt)))),
            Ok(Err(e)) => Err(agent_failure(vm, &e)),
            Err(_) => Err(Failure::new(format!(
                "the guest agent did not answer within {}",
                human_duration(AGENT_TIMEOUT)
            ))
            .cause(Some(format!(
                "the guest may be hung or overloaded; `cove why {}` reads its console",
                vm.name
            )))),
        };
        push("agent ready".into(), "agent", Attempted::once(ping, t))
    } else {
        push(
            "agent ready".into(),
            "agent",
            Attempted::skip("needs a running VM, see check 1"),
        )
    };

    for check in checks {
        let outcome = if !vm_ok {
            Attempted::skip("needs a running VM, see check 1")
        } else if check.needs_agent() && !agent_ok {
            Attempted::skip("needs the guest agent, which did not answer")
        } else {
            run_one(vm, guest, check).await
        };
        push(check.display_name(), check.kind_label(), outcome);
    }
    Report::new(&vm.name, results, started.elapsed())
}

/// How one check went.
struct Attempted {
    status: Status,
    duration: Duration,
    attempts: u32,
    detail: Option<String>,
    failure: Option<Failure>,
}

impl Attempted {
    fn once(result: Result<Option<String>, Failure>, started: Instant) -> Attempted {
        Attempted::of(result, started, 1)
    }

    fn of(result: Result<Option<String>, Failure>, started: Instant, attempts: u32) -> Attempted {
        let (status, detail, failure) = match result {
            Ok(detail) => (Status::Pass, detail, None),
            Err(f) => (Status::Fail, None, Some(f)),
        };
        Attempted {
            status,
            duration: started.elapsed(),
            attempts,
            detail,
            failure,
        }
    }

    fn skip(why: &str) -> Attempted {
        Attempted {
            status: Status::Skip,
            duration: Duration::ZERO,
            attempts: 0,
            detail: Some(why.to_owned()),
            failure: None,
        }
    }
}

/// Runs one declared check: one attempt, or attempts until it passes, fails for good, or its
/// `wait` runs out.
async fn run_one<G: Guest>(vm: &VmFacts, guest: &G, check: &Check) -> Attempted {
    let started = Instant::now();
    let deadline = check.wait.map(|w| started + w);
    let mut pause = FIRST_POLL;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let limit = match deadline {
            Some(d) => check
                .timeout()
                .min(d.saturating_duration_since(Instant::now()))
                .max(MIN_ATTEMPT),
            None => check.timeout(),
        };
        // The guest side enforces `limit` (and says what it ended); this bound, a little
        // later, holds even if it does not.
        let bound = limit + GUEST_GRACE;
        let result = match tokio::time::timeout(bound, attempt(vm, guest, check, limit)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(format!(
                "no answer within {} (the check's timeout)",
                human_duration(limit)
            ))
            .cause(Some(slow_cause()))),
        };
        let failure = match result {
            Ok(detail) => return Attempted::of(Ok(detail), started, attempts),
            Err(f) => f,
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match remaining {
            Some(left) if failure.retryable && !left.is_zero() => {
                // Waiting for the condition: poll again soon, backing off while it stays false.
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(MAX_POLL);
            }
            _ => {
                let mut failure = failure;
                if let (Some(wait), true) = (check.wait, attempts > 1) {
                    failure.message = format!(
                        "{} (still failing after {attempts} attempts over {})",
                        failure.message,
                        human_duration(wait)
                    );
                }
                return Attempted::of(Err(failure), started, attempts);
            }
        }
    }
}

async fn attempt<G: Guest>(
    vm: &VmFacts,
    guest: &G,
    check: &Check,
    limit: Duration,
) -> Result<Option<String>, Failure> {
    match &check.kind {
        CheckKind::Process { name } => probe::process(vm, guest, name).await,
        CheckKind::Tcp {
            guest_port,
            peer: None,
        } => probe::tcp(vm, *guest_port, limit).await,
        CheckKind::Tcp {
            guest_port,
            peer: Some(peer),
        } => probe::tcp_peer(vm, peer, *guest_port, limit).await,
        CheckKind::Command {
            command,
            user,
            stdout,
        } => {
            let req = GuestExec {
                argv: command.argv(),
                user: user.clone(),
                timeout: limit,
            };
            let ctx = Context {
                vm: &vm.name,
                program: Some(&command.program()),
                user: user.as_deref(),
                ..Context::default()
            };
            let out = guest
                .exec(req)
                .await
                .map_err(|e| exec_failure(vm, &ctx, e))?;
            probe::judge_command(&ctx, &command.to_string(), &out, stdout.as_ref())
        }
        CheckKind::Sql(sql) => sql_check(vm, guest, sql, limit).await,
    }
}

async fn sql_check<G: Guest>(
    vm: &VmFacts,
    guest: &G,
    sql: &SqlCheck,
    limit: Duration,
) -> Result<Option<String>, Failure> {
    let mut argv: Vec<String> = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        .map(String::from)
        .to_vec();
    let ctx = Context {
        vm: &vm.name,
        program: Some("psql"),
        guest_port: Some(sql.port),
        user: Some(&sql.user),
        from_host: sql.via == Via::Host,
    };
    let out = match sql.via {
        Via::Guest => {
            argv.extend(["-p".into(), sql.port.to_string()]);
            argv.extend(probe::psql_target(sql));
            let req = GuestExec {
                argv,
                user: Some(sql.user.clone()),
                timeout: limit,
            };
            guest
                .exec(req)
                .await
                .map_err(|e| exec_failure(vm, &ctx, e))?
        }
        Via::Host => {
            let fwd = vm.forward(sql.port).ok_or_else(|| {
                Failure::new(format!("guest port {} has no host forward", sql.port))
                    .cause(Some(cause::no_forward(&vm.name, sql.port)))
                    .permanent()
            })?;
            let host = probe::connect_host(&fwd.host_addr);
            // -w: never prompt for a password (stdin is not a terminal; PGPASSWORD works).
            argv.extend(["-w".into(), "-h".into(), host.to_string()]);
            argv.extend(["-p".into(), fwd.host_port.to_string()]);
            argv.extend(probe::psql_target(sql));
            let connect_secs = limit.as_secs().max(1).to_string();
            crate::guest::host_exec(&argv, &[("PGCONNECT_TIMEOUT", connect_secs)], limit)
                .await
                .map_err(|e| match e {
                    GuestError::Spawn { message, .. } => {
                        Failure::new(format!("cannot run the host's psql: {message}"))
                            .cause(Some(
                                "install the PostgreSQL client on this host (Debian: \
                                 `apt-get install postgresql-client`) or use `via = \"guest\"`"
                                    .into(),
                            ))
                            .permanent()
                    }
                    other => Failure::new(other.to_string()),
                })?
        }
    };
    probe::judge_sql(&ctx, sql, &out)
}

fn exec_failure(vm: &VmFacts, ctx: &Context<'_>, e: GuestError) -> Failure {
    match &e {
        GuestError::Spawn { message, .. } => Failure::new(e.to_string())
            .cause(Some(cause::of_spawn(ctx, message)))
            .permanent(),
        GuestError::Unreachable(_) => agent_failure(vm, &e),
        GuestError::Timeout { waited, .. } => Failure::new(format!(
            "`{}` did not finish within {}",
            ctx.program.unwrap_or("the command"),
            human_duration(*waited)
        ))
        .cause(Some(slow_cause())),
        GuestError::Other(_) => Failure::new(e.to_string()),
    }
}

fn agent_failure(vm: &VmFacts, e: &GuestError) -> Failure {
    Failure::new(e.to_string()).cause(Some(format!(
        "the agent did not answer; `cove why {vm}` explains a guest that hung or whose agent \
         never started",
        vm = vm.name
    )))
}

/// The implicit first check: the store says running and the VMM process is alive.
fn vm_running(vm: &VmFacts) -> Result<Option<String>, Failure> {
    let name = &vm.name;
    if vm.state != VmState::Running {
        let next = match vm.state {
            VmState::Created | VmState::Stopped => format!("start it with `cove start {name}`"),
            VmState::Crashed => {
                format!("it crashed: `cove why {name}` explains, then `cove start {name}`")
            }
            VmState::Starting => format!("it is still booting; wait for `cove start {name}`"),
            VmState::Stopping | VmState::Running => "it is shutting down".into(),
        };
        return Err(
            Failure::new(format!("cove's store says `{name}` is {}", vm.state))
                .cause(Some(next))
                .permanent(),
        );
    }
    let Some(pid) = vm.vmm_pid else {
        return Err(Failure::new(format!(
            "cove's store says `{name}` is running but records no VMM process"
        ))
        .cause(Some(format!("see `cove why {name}`")))
        .permanent());
    };
    if !probe::pid_alive(pid) {
        return Err(Failure::new(format!(
            "the VMM process (pid {pid}) is gone although the store says `{name}` is running"
        ))
        .cause(Some(format!(
            "it ended behind cove's back: `cove why {name}` reads its console, then `cove start {name}`"
        )))
        .permanent());
    }
    if let Some(state @ ('T' | 't')) = probe::pid_state(pid) {
        // A stopped VMM still has its sockets, and the host kernel still completes TCP
        // handshakes on its forwards: without this, port checks would pass on a frozen guest.
        return Err(Failure::new(format!(
            "the VMM process (pid {pid}) is stopped (state {state}): the guest is frozen"
        ))
        .cause(Some(format!(
            "something sent it SIGSTOP or a debugger holds it; resume it with `kill -CONT {pid}`"
        ))));
    }
    Ok(Some(format!("VMM pid {pid}")))
}
