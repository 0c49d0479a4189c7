//! The individual probes and the judging of their evidence.

use crate::cause::{self, Context};
use crate::guest::{ExecOutput, Guest};
use crate::report::{Failure, excerpt, human_duration};
use crate::run::VmFacts;
use crate::spec::{OutputMatch, SqlCheck};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// After the host end of a forward accepts, how long to watch for the VMM closing it again.
///
/// QEMU's user-mode forwards accept on the host first and only then connect to the guest;
/// when nothing listens in the guest, the host socket is closed right away instead of the
/// connect being refused. A silent, open connection after this window means the guest
/// accepted (servers such as PostgreSQL wait for the client to speak first). Measured here
/// under TCG: the close arrives 10-11 ms after the connect, so the window has a wide margin.
pub const GUEST_REFUSAL_WINDOW: Duration = Duration::from_millis(300);

pub use cove_util::process::{alive as pid_alive, state as pid_state};

/// The program name of a process's command line: `/usr/lib/postgresql/15/bin/postgres -D …`
/// and the retitled `postgres: checkpointer` both give `postgres`; kernel threads give `None`.
pub fn program_name(command: &str) -> Option<&str> {
    if command.starts_with('[') {
        return None;
    }
    let first = command.split_whitespace().next()?.trim_end_matches(':');
    first.rsplit('/').next().filter(|s| !s.is_empty())
}

fn process_matches(wanted: &str, command: &str) -> bool {
    if wanted.contains(char::is_whitespace) || wanted.contains('/') {
        command.contains(wanted)
    } else {
        program_name(command) == Some(wanted)
    }
}

pub async fn process<G: Guest>(
    vm: &VmFacts,
    guest: &G,
    wanted: &str,
) -> Result<Option<String>, Failure> {
    let procs = guest
        .processes()
        .await
        .map_err(|e| Failure::new(format!("cannot list the guest's processes: {e}")))?;
    let found: Vec<_> = procs
        .iter()
        .filter(|p| process_matches(wanted, &p.command))
        .collect();
    if let Some(first) = found.first() {
        let more = match found.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return Ok(Some(format!("pid {}{more}", first.pid)));
    }
    let mut names: Vec<&str> = procs
        .iter()
        .filter_map(|p| program_name(&p.command))
        .collect();
    names.sort_unstable();
    names.dedup();
    Err(Failure {
        expected: Some(format!("a process named `{wanted}`")),
        got: Some(format!("{} processes: {}", procs.len(), names.join(", "))),
        ..Failure::new(format!("no process named `{wanted}` runs in the guest"))
    }
    .cause(Some(format!(
        "`{wanted}` did not start or has exited; see `cove ps {vm}`, the service's log in the \
         guest, or `cove why {vm}`",
        vm = vm.name
    ))))
}

/// The address to connect to for a forward bound to `host_addr` (a wildcard bind is reached
/// on loopback).
pub fn connect_host(host_addr: &str) -> &str {
    match host_addr {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        other => other,
    }
}

pub async fn tcp(
    vm: &VmFacts,
    guest_port: u16,
    limit: Duration,
) -> Result<Option<String>, Failure> {
    let fwd = vm.forward(guest_port).ok_or_else(|| {
        let have = if vm.ports.is_empty() {
            "none".to_owned()
        } else {
            vm.ports
                .iter()
                .map(|p| format!("{}→{}", p.host_port, p.guest_port))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Failure {
            got: Some(format!("forwards (host→guest): {have}")),
            ..Failure::new(format!("guest port {guest_port} has no host forward"))
        }
        .cause(Some(cause::no_forward(&vm.name, guest_port)))
        .permanent()
    })?;
    let host = connect_host(&fwd.host_addr);
    let endpoint = if host.contains(':') {
        format!("[{host}]:{}", fwd.host_port)
    } else {
        format!("{host}:{}", fwd.host_port)
    };
    let mut stream = match tokio::time::timeout(limit, TcpStream::connect(&endpoint)).await {
        Err(_) => {
            return Err(Failure::new(format!(
                "connecting to {endpoint} (guest port {guest_port}) took over {}",
                human_duration(limit)
            ))
            .cause(Some(format!(
                "the VM may be hung or overloaded; `cove why {}`",
                vm.name
            ))));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Failure::new(format!(
                "connection to {endpoint} (forward to guest port {guest_port}) refused"
            ))
            .cause(Some(cause::refused_on_forward(&vm.name, guest_port))));
        }
        Ok(Err(e)) => {
            return Err(Failure::new(format!("cannot connect to {endpoint}: {e}")));
        }
        Ok(Ok(s)) => s,
    };
    let mut byte = [0u8; 1];
    let window = GUEST_REFUSAL_WINDOW.min(limit);
    match tokio::time::timeout(window, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(Failure::new(format!(
            "{endpoint} accepted the connection and closed it at once: the forward could not \
             reach guest port {guest_port}"
        ))
        .cause(Some(cause::nothing_listens(&vm.name, guest_port)))),
        Ok(Ok(_)) => Ok(Some(format!("via {endpoint}; the service spoke first"))),
        Err(_) => Ok(Some(format!("via {endpoint}"))),
    }
}

/// `tcp = "db:5432"`: a VM on a cove network, connected to directly at its address there
/// (no forward in between, so a refusal is the guest's own).
pub async fn tcp_peer(
    vm: &VmFacts,
    peer: &str,
    port: u16,
    limit: Duration,
) -> Result<Option<String>, Failure> {
    let Some((_, addr)) = vm.peers.iter().find(|(name, _)| name == peer) else {
        return Err(Failure::new(format!(
            "`{peer}` is not a VM on a cove network, so `{peer}:{port}` has no address"
        ))
        .cause(Some(format!(
            "put `{peer}` on a network (`cove create {peer} --network NET`, `networks = [...]`              in a spec); `cove network ls` shows the networks and their VMs"
        )))
        .permanent());
    };
    let endpoint = std::net::SocketAddr::new(*addr, port);
    match tokio::time::timeout(limit, TcpStream::connect(endpoint)).await {
        Err(_) => Err(Failure::new(format!(
            "connecting to {peer} at {endpoint} took over {}",
            human_duration(limit)
        ))
        .cause(Some(format!(
            "`{peer}` may be stopped or hung, or the network down; `cove network ls`, `cove why {peer}`"
        )))),
        Ok(Err(e)) => Err(Failure::new(format!(
            "cannot connect to {peer} at {endpoint}: {e}"
        ))),
        Ok(Ok(_)) => Ok(Some(format!("{peer} at {endpoint}"))),
    }
}

/// Judges a finished command: exit 0 and, if asked, matching stdout.
pub fn judge_command(
    ctx: &Context<'_>,
    shown: &str,
    out: &ExecOutput,
    stdout: Option<&OutputMatch>,
) -> Result<Option<String>, Failure> {
    if out.code != 0 {
        return Err(exit_failure(ctx, shown, out));
    }
    match stdout {
        Some(m) if !m.is_match(&out.stdout) => Err(Failure {
            expected: Some(m.to_string()),
            got: Some(excerpt(&out.stdout).unwrap_or_else(|| "(no output)".into())),
            stderr: excerpt(&out.stderr),
            ..Failure::new(format!("`{shown}` exited 0 but its output does not match"))
        }),
        _ => Ok(None),
    }
}

fn exit_failure(ctx: &Context<'_>, shown: &str, out: &ExecOutput) -> Failure {
    let both = format!("{}\n{}", out.stderr, out.stdout);
    Failure {
        exit_code: Some(out.code),
        stdout: excerpt(&out.stdout),
        stderr: excerpt(&out.stderr),
        ..Failure::new(format!("`{shown}` exited with code {}", out.code))
    }
    .cause(cause::of_output(ctx, Some(out.code), &both))
}

/// `-U role [-d db] -c query`.
pub fn psql_target(sql: &SqlCheck) -> Vec<String> {
    let mut v = vec!["-U".to_owned(), sql.user.clone()];
    if let Some(db) = &sql.database {
        v.extend(["-d".to_owned(), db.clone()]);
    }
    v.extend(["-c".to_owned(), sql.query.clone()]);
    v
}

/// Rows as `psql -A -t` prints them, without trailing blank lines.
pub fn rows(stdout: &str) -> Vec<String> {
    let mut rows: Vec<String> = stdout.lines().map(|l| l.trim_end().to_owned()).collect();
    while rows.last().is_some_and(|r| r.is_empty()) {
        rows.pop();
    }
    rows
}

fn show_rows(rows: &[String]) -> String {
    match rows.len() {
        0 => "no rows".into(),
        n => format!(
            "{n} row{}: {}",
            if n == 1 { "" } else { "s" },
            serde_json::to_string(rows).unwrap_or_default()
        ),
    }
}

/// Judges a psql run: exit 0 and, if asked, exactly the expected rows.
pub fn judge_sql(
    ctx: &Context<'_>,
    sql: &SqlCheck,
    out: &ExecOutput,
) -> Result<Option<String>, Failure> {
    let shown = format!("psql -c {:?}", sql.query);
    if out.code != 0 {
        return Err(exit_failure(ctx, &shown, out));
    }
    let got = rows(&out.stdout);
    match &sql.expect {
        Some(want) if *want != got => Err(Failure {
            expected: Some(show_rows(want)),
            got: Some(show_rows(&got)),
            stderr: excerpt(&out.stderr),
            ..Failure::new("the query returned other rows")
        }),
        _ => Ok(Some(show_rows(&got))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_cover_paths_and_retitled_processes() {
        assert_eq!(
            program_name("/usr/lib/postgresql/15/bin/postgres -D /var/lib/pg"),
            Some("postgres")
        );
        assert_eq!(
            program_name("postgres: 15/main: checkpointer "),
            Some("postgres")
        );
        assert_eq!(program_name("[kworker/0:1]"), None);
        assert!(process_matches("postgres", "postgres: walwriter"));
        assert!(!process_matches("postgres", "/usr/bin/postgres_exporter"));
        assert!(process_matches(
            "bin/postgres -D",
            "/usr/lib/postgresql/15/bin/postgres -D x"
        ));
    }

    #[test]
    fn psql_rows_ignore_trailing_blank_lines() {
        assert_eq!(rows("1\n\n"), vec!["1"]);
        assert_eq!(rows("1|a\n2|b\n"), vec!["1|a", "2|b"]);
        assert!(rows("").is_empty());
    }
}
