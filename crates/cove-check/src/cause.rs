//! Turning a failure's evidence into the likely cause and the next step, for the failures
//! people actually hit (seed 000: `shmget: Function not implemented` behind a dead PostgreSQL).

use cove_diagnose::kernel::explain::{explain, syscall_in_text};

/// What the cause finder knows about the failed check.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub vm: &'a str,
    /// The program that ran, for "not installed" hints.
    pub program: Option<&'a str>,
    /// The guest port involved, if any.
    pub guest_port: Option<u16>,
    /// The guest user a command ran as.
    pub user: Option<&'a str>,
    /// Whether psql ran on the host (so "connection refused" is about the forward).
    pub from_host: bool,
}

/// The likely cause of a failed command, from its exit code and output.
pub fn of_output(ctx: &Context<'_>, code: Option<i32>, output: &str) -> Option<String> {
    let lower = output.to_ascii_lowercase();
    if let Some(c) = missing_syscall(output) {
        return Some(c);
    }
    if lower.contains("peer authentication failed") {
        return Some(format!(
            "PostgreSQL's peer authentication wants a guest user named like the role{}; set \
             `user` to such a role, or use `via = \"host\"` with a password (PGPASSWORD)",
            ctx.user.map(|u| format!(" (`{u}`)")).unwrap_or_default()
        ));
    }
    if lower.contains("password authentication failed") || lower.contains("no password supplied") {
        return Some(
            "the server wants a password: export PGPASSWORD before `cove test`, or check \
             pg_hba.conf in the guest"
                .into(),
        );
    }
    if let Some(what) = ["role", "database"]
        .into_iter()
        .find(|w| lower.contains(&format!("{w} \"")) && lower.contains("does not exist"))
    {
        return Some(format!(
            "the {what} does not exist on the server: create it in the image, or set `{}` in \
             the check",
            if what == "role" { "user" } else { "database" }
        ));
    }
    if lower.contains("connection refused") {
        return Some(match (ctx.from_host, ctx.guest_port) {
            (true, Some(port)) => refused_on_forward(ctx.vm, port),
            (_, Some(port)) => nothing_listens(ctx.vm, port),
            _ => format!(
                "the server is not accepting connections; is the service running? (`cove ps {}`)",
                ctx.vm
            ),
        });
    }
    if (lower.contains("no such file or directory") && lower.contains("socket"))
        || lower.contains("is the server running locally")
    {
        return Some(format!(
            "PostgreSQL is not running in the guest (its socket is missing); see `cove ps {vm}` \
             and the server's log, or `cove why {vm}`",
            vm = ctx.vm
        ));
    }
    if lower.contains("server closed the connection unexpectedly") {
        if let (true, Some(port)) = (ctx.from_host, ctx.guest_port) {
            // QEMU's user-mode forward accepts on the host, then closes the connection when
            // the guest refuses it: to psql that looks like a server that hung up.
            return Some(format!(
                "nothing listens on guest port {port} (the VM's forward accepted, then the guest \
                 refused), or the server crashed; is it running? (`cove ps {vm}`, `cove logs {vm}`)",
                vm = ctx.vm
            ));
        }
        return Some(format!(
            "the server accepted and then dropped the connection: it may be starting up or \
             crashing (add `wait = \"30s\"`, see `cove logs {}`)",
            ctx.vm
        ));
    }
    if code == Some(127) || lower.contains("command not found") || lower.contains(": not found") {
        return Some(not_installed(ctx));
    }
    if code == Some(126) || lower.contains("permission denied") {
        return Some(format!(
            "permission denied{}; check the file's mode and owner in the image",
            ctx.user
                .map(|u| format!(" for guest user `{u}`"))
                .unwrap_or_default()
        ));
    }
    None
}

/// The likely cause when the guest could not start the program at all.
pub fn of_spawn(ctx: &Context<'_>, message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    if lower.contains("no user")
        || (lower.contains("user") && (lower.contains("unknown") || lower.contains("no such")))
    {
        return format!(
            "the guest has no user `{}`; is the software that creates it installed in the image?",
            ctx.user.unwrap_or("?")
        );
    }
    if lower.contains("permission denied") {
        return format!(
            "`{}` is not executable in the guest; check its mode in the image",
            ctx.program.unwrap_or("?")
        );
    }
    not_installed(ctx)
}

fn not_installed(ctx: &Context<'_>) -> String {
    let program = ctx.program.unwrap_or("the program");
    format!(
        "`{program}` is not installed in the guest (or not on PATH); add the package that \
         provides it to the image spec and rebuild (`cove image build`)"
    )
}

/// A syscall that returned ENOSYS, mapped to the kernel option behind it.
pub fn missing_syscall(output: &str) -> Option<String> {
    // Only lines that report ENOSYS, so a known syscall name elsewhere is not blamed.
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| {
            l.contains("Function not implemented")
                || l.contains("ENOSYS")
                || l.contains("Failed system call")
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    let text = lines.join("\n");
    if let Some(e) = explain(&text) {
        let options = e
            .options
            .iter()
            .map(|o| format!("CONFIG_{o}"))
            .collect::<Vec<_>>()
            .join(" and ");
        return Some(format!(
            "the guest kernel lacks {options} (`{sys}` is {feature}, and it returned ENOSYS); \
             build the kernel with it (see `cove kernel explain {sys}`, check with `cove kernel check`)",
            sys = e.syscall,
            feature = e.feature,
        ));
    }
    let sys = syscall_in_text(&text)
        .map(|s| format!("`{s}`"))
        .unwrap_or_else(|| "a system call".into());
    Some(format!(
        "{sys} is missing from the guest kernel (ENOSYS); `cove kernel explain SYSCALL` names \
         the option to enable"
    ))
}

/// A guest port with no host forward.
pub fn no_forward(vm: &str, port: u16) -> String {
    let host = if port < 10000 {
        format!("1{port:04}")
    } else {
        "HOST".into()
    };
    format!(
        "VM `{vm}` forwards no host port to guest port {port}; create it with `-p HOST:{port}` \
         (e.g. `cove create {vm} -p {host}:{port} …`) or add the port to the spec used with \
         `cove up`"
    )
}

/// The forward accepted the connection but the guest refused it.
pub fn nothing_listens(vm: &str, port: u16) -> String {
    format!("nothing listens on guest port {port}; is the service running? (`cove ps {vm}`)")
}

/// The host end of a forward refused: QEMU is not listening there.
pub fn refused_on_forward(vm: &str, port: u16) -> String {
    format!(
        "nothing listens on the host end of the forward for guest port {port}: the VM is not \
         running with that forward (`cove show {vm}`; a forward added after start needs \
         `cove restart {vm}`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            vm: "pg",
            program: Some("initdb"),
            guest_port: Some(5432),
            user: Some("postgres"),
            from_host: false,
        }
    }

    #[test]
    fn seed_000_shmget_enosys_names_sysvipc() {
        let log = "FATAL:  could not create shared memory segment: Function not implemented\n\
                   DETAIL:  Failed system call was shmget(key=2, size=56, 03600).";
        let cause = of_output(&ctx(), Some(1), log).unwrap();
        assert!(cause.contains("CONFIG_SYSVIPC"), "{cause}");
        assert!(cause.contains("cove kernel explain shmget"), "{cause}");
    }

    #[test]
    fn a_syscall_name_on_an_unrelated_line_is_not_blamed() {
        assert_eq!(missing_syscall("shmget is used here\nall fine"), None);
        let c = missing_syscall("frobnicate: Function not implemented").unwrap();
        assert!(c.contains("ENOSYS"), "{c}");
    }

    #[test]
    fn psql_failures_get_their_causes() {
        let c = ctx();
        let refused = "psql: error: connection to server at \"127.0.0.1\", port 15432 failed: \
                       Connection refused";
        assert!(
            of_output(&c, Some(2), refused)
                .unwrap()
                .contains("guest port 5432")
        );
        let host = Context {
            from_host: true,
            ..ctx()
        };
        assert!(
            of_output(&host, Some(2), refused)
                .unwrap()
                .contains("cove restart pg")
        );
        let socket = "psql: error: connection to server on socket \
                      \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory";
        assert!(
            of_output(&c, Some(2), socket)
                .unwrap()
                .contains("not running")
        );
        let role = "psql: error: FATAL:  role \"app\" does not exist";
        assert!(of_output(&c, Some(2), role).unwrap().contains("set `user`"));
        let missing = "sh: 1: pg_isready: not found";
        assert!(
            of_output(&c, Some(127), missing)
                .unwrap()
                .contains("not installed")
        );
        let hung_up = "psql: error: connection to server at \"127.0.0.1\", port 25432 failed: \
                       server closed the connection unexpectedly";
        assert!(
            of_output(&host, Some(2), hung_up)
                .unwrap()
                .contains("nothing listens on guest port 5432")
        );
        assert!(
            of_output(&c, Some(2), hung_up)
                .unwrap()
                .contains("starting up or crashing")
        );
        assert_eq!(of_output(&c, Some(1), "no rows"), None);
        // What cove-agent says for a user missing from the guest's /etc/passwd.
        let spawn = of_spawn(&c, "no user \"postgres\" in /etc/passwd of the guest");
        assert!(
            spawn.contains("the guest has no user `postgres`"),
            "{spawn}"
        );
    }
}
