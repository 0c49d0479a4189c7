//! What a check declares: the same serde type reads a spec's `[[check]]` tables and the
//! `checks.json` that `cove up` stores for `cove test`.
//!
//! The wire shape is flat (`tcp = 5432`, `sql = "select 1"` + `expect = "1"`) because that reads
//! well in TOML; it is validated into the typed [`Check`] on load, so a check that mixes kinds
//! or names an unknown field is refused with a message saying what to write instead.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One declared health check.
///
/// ```
/// let checks: Vec<cove_check::Check> = serde_json::from_str(
///     r#"[{"tcp": 5432, "wait": "30s"}, {"sql": "select 1", "expect": "1"}]"#,
/// ).unwrap();
/// assert_eq!(checks[0].display_name(), "port 5432 answering");
/// assert_eq!(checks[0].wait, Some(std::time::Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCheck", into = "RawCheck")]
pub struct Check {
    /// Shown in reports; derived from the kind when absent (see [`Check::display_name`]).
    pub name: Option<String>,
    pub kind: CheckKind,
    /// How long one attempt may take (default [`Check::DEFAULT_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Retry failed attempts until this much time has passed since the check began (for a
    /// service that may still be starting). Without it the check makes one attempt.
    pub wait: Option<Duration>,
}

/// What a check verifies.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// A process with this program name runs in the guest.
    Process { name: String },
    /// A guest TCP port accepts connections, reached from the host through the VM's port
    /// forward for it (`tcp = 5432`), or on another VM reached by its name on a cove network
    /// (`tcp = "db:5432"`, connected to from the host at that VM's network address).
    Tcp {
        guest_port: u16,
        peer: Option<String>,
    },
    /// A command exits 0 in the guest, and its stdout matches when asked.
    Command {
        command: CommandLine,
        /// Guest user to run it as (the agent's default otherwise).
        user: Option<String>,
        stdout: Option<OutputMatch>,
    },
    /// A SQL query succeeds and, when `expect` is given, returns exactly those rows.
    Sql(SqlCheck),
}

/// A command as a shell line (`command = "pg_isready -q"`, run by `/bin/sh -c`) or as an
/// argument vector (`command = ["pg_isready", "-q"]`, run directly, for guests without a shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandLine {
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            CommandLine::Argv(argv) => argv.clone(),
        }
    }

    /// The program that runs (for "not installed" hints).
    pub fn program(&self) -> String {
        match self {
            CommandLine::Shell(line) => line.split_whitespace().next().unwrap_or("").to_owned(),
            CommandLine::Argv(argv) => argv.first().cloned().unwrap_or_default(),
        }
    }
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandLine::Shell(line) => f.write_str(line),
            CommandLine::Argv(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

/// How a command's stdout must look.
#[derive(Debug, Clone)]
pub enum OutputMatch {
    Contains(String),
    Matches(Regex),
}

impl PartialEq for OutputMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (OutputMatch::Contains(a), OutputMatch::Contains(b)) => a == b,
            (OutputMatch::Matches(a), OutputMatch::Matches(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl OutputMatch {
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            OutputMatch::Contains(s) => text.contains(s.as_str()),
            OutputMatch::Matches(re) => re.is_match(text),
        }
    }
}

impl fmt::Display for OutputMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputMatch::Contains(s) => write!(f, "stdout containing {s:?}"),
            OutputMatch::Matches(re) => write!(f, "stdout matching /{}/", re.as_str()),
        }
    }
}

/// Where `psql` runs for a SQL check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `psql` in the guest over the local socket, as the guest user named like the role
    /// (peer authentication, Debian's default).
    #[default]
    Guest,
    /// The host's `psql` against the VM's forward of the server port (what clients see).
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlCheck {
    pub query: String,
    /// Expected rows as `psql -A -t` prints them (columns joined by `|`); `None` only
    /// requires the query to succeed.
    pub expect: Option<Vec<String>>,
    pub database: Option<String>,
    /// Database role, and for `via = "guest"` also the guest user psql runs as.
    pub user: String,
    /// The server's guest port (for `via = "host"`, mapped through the forwards).
    pub port: u16,
    pub via: Via,
}

impl SqlCheck {
    pub const DEFAULT_USER: &'static str = "postgres";
    pub const DEFAULT_PORT: u16 = 5432;
}

impl Check {
    /// One attempt's limit when the check does not set `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new(kind: CheckKind) -> Check {
        Check {
            name: None,
            kind,
            timeout: None,
            wait: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Check::DEFAULT_TIMEOUT)
    }

    /// The declared name, or one derived from what the check does.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.kind {
            CheckKind::Process { name } => format!("process `{name}` running"),
            CheckKind::Tcp {
                guest_port,
                peer: None,
            } => format!("port {guest_port} answering"),
            CheckKind::Tcp {
                guest_port,
                peer: Some(peer),
            } => format!("{peer}:{guest_port} answering"),
            CheckKind::Command {
                command, stdout, ..
            } => match stdout {
                None => format!("`{}` succeeds", short(&command.to_string())),
                Some(m) => format!("`{}` prints {m}", short(&command.to_string())),
            },
            CheckKind::Sql(sql) => {
                let via = match sql.via {
                    Via::Guest => "",
                    Via::Host => " (from the host)",
                };
                match &sql.expect {
                    None => format!("query `{}` succeeds{via}", short(&sql.query)),
                    Some(rows) => format!(
                        "query `{}` returns {}{via}",
                        short(&sql.query),
                        short(&rows.join(", "))
                    ),
                }
            }
        }
    }

    /// A short word for the kind (JSON `kind`, JUnit failure `type`).
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            CheckKind::Process { .. } => "process",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Command { .. } => "command",
            CheckKind::Sql(_) => "sql",
        }
    }

    /// Whether running the check needs the guest agent (host-side checks do not).
    pub fn needs_agent(&self) -> bool {
        match &self.kind {
            CheckKind::Tcp { .. } => false,
            CheckKind::Sql(sql) => sql.via == Via::Guest,
            CheckKind::Process { .. } | CheckKind::Command { .. } => true,
        }
    }
}

fn short(text: &str) -> String {
    const MAX: usize = 40;
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > MAX || line.len() < text.len() {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// A duration as `"30s"`, `"500ms"`, `"2m"` (or a bare number of seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum DurationText {
    Secs(u64),
    Text(String),
}

/// `expect = "1"` (one row, or rows separated by newlines) or `expect = ["1|a", "2|b"]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Rows {
    Text(String),
    List(Vec<String>),
}

/// `tcp = 5432` (this VM, through its forward) or `tcp = "db:5432"` (a VM by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum TcpTarget {
    Port(u16),
    Peer(String),
}

/// The flat wire form, validated into [`Check`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<TcpTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<CommandLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect: Option<Rows>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    via: Option<Via>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<DurationText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait: Option<DurationText>,
}

/// Why a declared check is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No kind, or several.
    #[error(
        "a check needs exactly one of `process`, `tcp`, `command` or `sql`{}",
        if .0.is_empty() { "; this one has none".to_owned() } else { format!("; this one has {}", .0.join(" and ")) }
    )]
    Kind(Vec<&'static str>),
    /// A field that belongs to another kind.
    #[error("`{field}` does not go with `{kind}`; it belongs to {belongs}")]
    Misplaced {
        field: &'static str,
        kind: &'static str,
        belongs: &'static str,
    },
    #[error(
        "`tcp = \"{0}\"` is not `\"VM:PORT\"` (e.g. `tcp = \"db:5432\"`, a VM on a cove network) or a port number"
    )]
    TcpPeer(String),
    #[error("a check has both `stdout_contains` and `stdout_matches`; keep one")]
    TwoMatchers,
    #[error("`stdout_matches` is not a valid regular expression: {0}")]
    Regex(String),
    #[error(
        "`{field}` = {value:?} is not a duration from 1ms to 1 day; write it like \"30s\", \"500ms\" or \"2m\""
    )]
    Duration { field: &'static str, value: String },
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("port 0 is not a port; give the guest port the service listens on (1-65535)")]
    PortZero,
}

fn duration(field: &'static str, d: Option<DurationText>) -> Result<Option<Duration>, SpecError> {
    let bad = |value: String| SpecError::Duration { field, value };
    // At most a day: the runner adds it to `Instant::now()`, which panics
    // on overflow for values near `u64::MAX` seconds.
    const MAX: Duration = Duration::from_secs(86_400);
    match d {
        None => Ok(None),
        Some(DurationText::Secs(s)) if s == 0 || s > MAX.as_secs() => Err(bad(s.to_string())),
        Some(DurationText::Secs(s)) => Ok(Some(Duration::from_secs(s))),
        Some(DurationText::Text(t)) => match humantime::parse_duration(t.trim()) {
            Ok(d) if !d.is_zero() && d <= MAX => Ok(Some(d)),
            _ => Err(bad(t)),
        },
    }
}

impl TryFrom<RawCheck> for Check {
    type Error = SpecError;

    fn try_from(raw: RawCheck) -> Result<Check, SpecError> {
        let kinds: Vec<&'static str> = [
            ("process", raw.process.is_some()),
            ("tcp", raw.tcp.is_some()),
            ("command", raw.command.is_some()),
            ("sql", raw.sql.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect();
        let [kind] = kinds[..] else {
            return Err(SpecError::Kind(kinds));
        };
        let misplaced = |field: &'static str, present: bool, belongs: &'static str| {
            if present {
                Err(SpecError::Misplaced {
                    field,
                    kind,
                    belongs,
                })
            } else {
                Ok(())
            }
        };
        let sql_fields = [
            ("expect", raw.expect.is_some()),
            ("database", raw.database.is_some()),
            ("port", raw.port.is_some()),
            ("via", raw.via.is_some()),
        ];
        let output_fields = [
            ("stdout_contains", raw.stdout_contains.is_some()),
            ("stdout_matches", raw.stdout_matches.is_some()),
        ];
        if kind != "sql" {
            for (field, present) in sql_fields {
                misplaced(field, present, "`sql` checks")?;
            }
        }
        if kind != "command" {
            for (field, present) in output_fields {
                misplaced(field, present, "`command` checks")?;
            }
        }
        if kind == "process" || kind == "tcp" {
            misplaced("user", raw.user.is_some(), "`command` and `sql` checks")?;
        }
        let non_empty = |field: &'static str, s: &str| {
            if s.trim().is_empty() {
                Err(SpecError::Empty(field))
            } else {
                Ok(())
            }
        };
        let kind = if let Some(name) = raw.process {
            non_empty("process", &name)?;
            CheckKind::Process { name }
        } else if let Some(target) = raw.tcp {
            let (port, peer) = match target {
                TcpTarget::Port(port) => (port, None),
                TcpTarget::Peer(text) => {
                    let bad = || SpecError::TcpPeer(text.clone());
                    let (name, port) = text.rsplit_once(':').ok_or_else(bad)?;
                    cove_state::VmName::new(name).map_err(|_| bad())?;
                    (
                        port.parse::<u16>().map_err(|_| bad())?,
                        Some(name.to_owned()),
                    )
                }
            };
            if port == 0 {
                return Err(SpecError::PortZero);
            }
            CheckKind::Tcp {
                guest_port: port,
                peer,
            }
        } else if let Some(command) = raw.command {
            match &command {
                CommandLine::Shell(s) => non_empty("command", s)?,
                CommandLine::Argv(v) => non_empty("command", v.first().map_or("", |s| s))?,
            }
            let stdout = match (raw.stdout_contains, raw.stdout_matches) {
                (Some(_), Some(_)) => return Err(SpecError::TwoMatchers),
                (Some(s), None) => Some(OutputMatch::Contains(s)),
                (None, Some(re)) => Some(OutputMatch::Matches(
                    Regex::new(&re).map_err(|e| SpecError::Regex(e.to_string()))?,
                )),
                (None, None) => None,
            };
            CheckKind::Command {
                command,
                user: raw.user,
                stdout,
            }
        } else {
            let query = raw.sql.unwrap_or_default();
            non_empty("sql", &query)?;
            if raw.port == Some(0) {
                return Err(SpecError::PortZero);
            }
            CheckKind::Sql(SqlCheck {
                query,
                expect: raw.expect.map(|rows| match rows {
                    Rows::Text(t) => t
                        .trim_end()
                        .lines()
                        .map(|l| l.trim_end().to_owned())
                        .collect(),
                    Rows::List(l) => l,
                }),
                database: raw.database,
                user: raw.user.unwrap_or_else(|| SqlCheck::DEFAULT_USER.into()),
                port: raw.port.unwrap_or(SqlCheck::DEFAULT_PORT),
                via: raw.via.unwrap_or_default(),
            })
        };
        Ok(Check {
            name: raw.name.filter(|n| !n.trim().is_empty()),
            kind,
            timeout: duration("timeout", raw.timeout)?,
            wait: duration("wait", raw.wait)?,
        })
    }
}

impl From<Check> for RawCheck {
    fn from(c: Check) -> RawCheck {
        let text = |d: Duration| DurationText::Text(humantime::format_duration(d).to_string());
        let mut raw = RawCheck {
            name: c.name,
            timeout: c.timeout.map(text),
            wait: c.wait.map(text),
            ..RawCheck::default()
        };
        match c.kind {
            CheckKind::Process { name } => raw.process = Some(name),
            CheckKind::Tcp { guest_port, peer } => {
                raw.tcp = Some(match peer {
                    None => TcpTarget::Port(guest_port),
                    Some(p) => TcpTarget::Peer(format!("{p}:{guest_port}")),
                })
            }
            CheckKind::Command {
                command,
                user,
                stdout,
            } => {
                raw.command = Some(command);
                raw.user = user;
                match stdout {
                    Some(OutputMatch::Contains(s)) => raw.stdout_contains = Some(s),
                    Some(OutputMatch::Matches(re)) => raw.stdout_matches = Some(re.as_str().into()),
                    None => {}
                }
            }
            CheckKind::Sql(sql) => {
                raw.sql = Some(sql.query);
                raw.expect = sql.expect.map(Rows::List);
                raw.database = sql.database;
                raw.user = Some(sql.user);
                raw.port = Some(sql.port);
                raw.via = Some(sql.via);
            }
        }
        raw
    }
}
