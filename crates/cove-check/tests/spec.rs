//! Declaring checks: the TOML a spec holds, the JSON `cove up` stores, and the refusals.

use cove_check::{Check, CheckKind, CommandLine, OutputMatch, Via, from_toml, load, save};
use std::time::Duration;

const SPEC: &str = r#"
name = "pg"            # other spec keys are ignored by from_toml

[[check]]
process = "postgres"

[[check]]
name = "PostgreSQL responding"
tcp = 5432
wait = "30s"

[[check]]
command = "pg_isready -q"
timeout = "5s"

[[check]]
command = ["cat", "/etc/os-release"]
stdout_matches = "bookworm|trixie"

[[check]]
command = "id -un"
user = "postgres"
stdout_contains = "postgres"

[[check]]
name = "Can execute query"
sql = "select 1"
expect = "1"

[[check]]
sql = "select n, n * 2 from generate_series(1, 2) n"
expect = ["1|2", "2|4"]
database = "app"
user = "app"
port = 6432
via = "host"
wait = 10
"#;

#[test]
fn every_kind_reads_from_toml_with_defaults_filled() {
    let checks = from_toml(SPEC).unwrap();
    assert_eq!(checks.len(), 7);
    assert_eq!(
        checks[0].kind,
        CheckKind::Process {
            name: "postgres".into()
        }
    );
    assert_eq!(checks[0].display_name(), "process `postgres` running");
    assert_eq!(checks[1].display_name(), "PostgreSQL responding");
    assert_eq!(
        checks[1].kind,
        CheckKind::Tcp {
            guest_port: 5432,
            peer: None
        }
    );
    assert_eq!(checks[1].wait, Some(Duration::from_secs(30)));
    assert_eq!(checks[1].timeout(), Check::DEFAULT_TIMEOUT);
    assert_eq!(checks[2].timeout(), Duration::from_secs(5));
    assert_eq!(checks[2].display_name(), "`pg_isready -q` succeeds");
    let CheckKind::Command {
        command, stdout, ..
    } = &checks[3].kind
    else {
        panic!("{:?}", checks[3]);
    };
    assert_eq!(
        command,
        &CommandLine::Argv(vec!["cat".into(), "/etc/os-release".into()])
    );
    assert!(
        matches!(stdout, Some(OutputMatch::Matches(re)) if re.is_match("VERSION_CODENAME=trixie"))
    );
    assert_eq!(
        checks[4].display_name(),
        "`id -un` prints stdout containing \"postgres\""
    );
    let CheckKind::Sql(sql) = &checks[5].kind else {
        panic!("{:?}", checks[5]);
    };
    assert_eq!(
        (sql.user.as_str(), sql.port, sql.via),
        ("postgres", 5432, Via::Guest)
    );
    assert_eq!(sql.expect, Some(vec!["1".to_owned()]));
    let CheckKind::Sql(sql) = &checks[6].kind else {
        panic!("{:?}", checks[6]);
    };
    assert_eq!(
        sql.expect.as_deref(),
        Some(&["1|2".to_owned(), "2|4".to_owned()][..])
    );
    assert_eq!(
        (sql.database.as_deref(), sql.port, sql.via),
        (Some("app"), 6432, Via::Host)
    );
    assert_eq!(checks[6].wait, Some(Duration::from_secs(10)));
    assert!(checks[6].display_name().ends_with("(from the host)"));
    assert!(!checks[6].needs_agent() && !checks[1].needs_agent() && checks[5].needs_agent());
}

#[test]
fn the_stored_json_round_trips_and_a_missing_file_means_no_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checks.json");
    assert_eq!(load(&path).unwrap(), None);
    let checks = from_toml(SPEC).unwrap();
    save(&path, &checks).unwrap();
    assert_eq!(load(&path).unwrap(), Some(checks.clone()));
    // The stored form is the same flat shape people write.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json[1]["tcp"], 5432);
    assert_eq!(json[1]["wait"], "30s");
    assert_eq!(json[5]["sql"], "select 1");
    // Saving again replaces the file whole, leaving no temporary files behind.
    save(&path, &checks[..1]).unwrap();
    assert_eq!(load(&path).unwrap().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    std::fs::write(&path, "{not json").unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("run `cove up`"), "{e}");
}

fn refusal(toml: &str) -> String {
    from_toml(toml).unwrap_err().to_string()
}

#[test]
fn mistakes_are_refused_with_what_to_write() {
    let e = refusal("[[check]]\ntcp = 5432\nsql = \"select 1\"\n");
    assert!(
        e.contains("exactly one of") && e.contains("tcp and sql"),
        "{e}"
    );
    let e = refusal("[[check]]\nname = \"x\"\n");
    assert!(e.contains("this one has none"), "{e}");
    let e = refusal("[[check]]\ntcp = 5432\nexpect = \"1\"\n");
    assert!(e.contains("`expect` does not go with `tcp`"), "{e}");
    let e = refusal("[[check]]\nprocess = \"x\"\nstdout_contains = \"1\"\n");
    assert!(e.contains("belongs to `command` checks"), "{e}");
    let e = refusal("[[check]]\ntcp = 5432\nretries = 3\n");
    assert!(e.contains("unknown field `retries`"), "{e}");
    let e = refusal("[[check]]\ntcp = 5432\nwait = \"soon\"\n");
    assert!(e.contains("\"30s\""), "{e}");
    // A wait past the clock's range panicked the runner (`now + wait`).
    let e = refusal("[[check]]\ntcp = 5432\nwait = 9223372036854775807\n");
    assert!(e.contains("1 day"), "{e}");
    let e = refusal("[[check]]\ntcp = 5432\ntimeout = \"100000000000y\"\n");
    assert!(e.contains("1 day"), "{e}");
    let e = refusal("[[check]]\ncommand = \"x\"\nstdout_matches = \"(\"\n");
    assert!(e.contains("not a valid regular expression"), "{e}");
    let e =
        refusal("[[check]]\ncommand = \"x\"\nstdout_matches = \"a\"\nstdout_contains = \"a\"\n");
    assert!(e.contains("keep one"), "{e}");
    let e = refusal("[[check]]\nsql = \"select 1\"\nvia = \"ssh\"\n");
    assert!(e.contains("unknown variant `ssh`"), "{e}");
    let e = refusal("[[check]]\ntcp = 0\n");
    assert!(e.contains("port 0"), "{e}");
    let e = refusal("[[check]]\nprocess = \" \"\n");
    assert!(e.contains("must not be empty"), "{e}");
}

#[test]
fn the_checks_in_the_shipped_examples_are_valid() {
    #[derive(serde::Deserialize)]
    struct Vm {
        #[serde(default)]
        check: Vec<Check>,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        vm: Vec<Vm>,
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let spec: Spec =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += spec.vm.iter().map(|v| v.check.len()).sum::<usize>();
        }
    }
    assert!(seen > 0, "no [[vm.check]] found in {}", dir.display());
}
