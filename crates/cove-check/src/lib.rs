//! Health checks for cove VMs: what `cove test NAME` runs.
//!
//! * [`Check`]: a declared check, the same serde type for a spec's check tables (`[[vm.check]]`
//!   in a `cove up` spec, `[[check]]` for [`from_toml`]) and for
//!   the JSON file `cove up` stores ([`save`], [`load`]):
//!
//!   ```toml
//!   [[check]]
//!   process = "postgres"            # a process with this program name runs in the guest
//!
//!   [[check]]
//!   name = "PostgreSQL responding"
//!   tcp = 5432                      # guest port, reached from the host through its forward
//!   wait = "30s"                    # poll until it passes or 30 s have passed
//!
//!   [[check]]
//!   command = "pg_isready -q"       # exits 0 in the guest (a string runs with /bin/sh -c,
//!   timeout = "5s"                  #   an array runs directly)
//!
//!   [[check]]
//!   command = ["cat", "/etc/os-release"]
//!   stdout_matches = "bookworm|trixie"   # or stdout_contains = "..."
//!
//!   [[check]]
//!   name = "Can execute query"
//!   sql = "select 1"                # psql -X -A -t -c QUERY
//!   expect = "1"                    # rows as psql -A -t prints them; a list for several
//!   database = "postgres"           # optional
//!   user = "postgres"               # the default; in the guest psql runs as this user
//!   via = "host"                    # "guest" (default) or "host" (host psql, forwarded port)
//!   ```
//!
//! * [`run`]: the two implicit checks every VM gets (VM running: the store's state and a live
//!   VMM process; agent ready: a ping), then the declared ones, over a [`Guest`]: the CLI
//!   implements it with the agent link, [`LocalGuest`] runs on this machine.
//! * [`Report`]: PASS/FAIL/SKIP per check with durations, the evidence of each failure and its
//!   likely cause; [`Report::to_text`], [`Report::to_json`], [`to_junit`].

// A check's failure carries its evidence by value; failures are few and the size of a
// `Result` holding one costs nothing that matters here.
#![allow(clippy::result_large_err)]

pub mod cause;
mod file;
mod guest;
mod junit;
pub mod probe;
mod report;
mod run;
mod spec;

pub use file::{FileError, from_toml, load, save};
pub use guest::{ExecOutput, Guest, GuestError, GuestExec, LocalGuest, Proc};
pub use junit::to_junit;
pub use report::{CheckResult, Failure, Report, Status, excerpt, human_duration};
pub use run::{AGENT_TIMEOUT, VmFacts, run};
pub use spec::{Check, CheckKind, CommandLine, OutputMatch, SpecError, SqlCheck, Via};
