//! Seed 000's goal, end to end: build → deploy → start → test, all green,
//! for a VM that runs PostgreSQL, with its data surviving a restart.

use cove_e2e::{Cove, psql};
use std::path::Path;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))
}

#[test]
#[ignore = "boots VMs; builds a Debian image"]
fn postgres_example_comes_up_passes_its_checks_and_keeps_its_data() {
    let cove = Cove::new();
    // The example forwards 5432; a test must not collide with a real server
    // on this host, so it runs a copy of the example on another port.
    let spec = std::fs::read_to_string(examples().join("postgres.toml"))
        .unwrap()
        .replace("\"15432:5432\"", "\"25432:5432\"")
        // Data disks live in the shared data directory: a name of its own.
        .replace(
            "name = \"pgdata\"",
            &format!("name = \"e2e{}\"", std::process::id() % 1_000_000),
        );
    let spec_path = cove.root().join("postgres.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let spec_path = spec_path.to_str().unwrap();

    let up = cove.ok(&["up", spec_path]);
    assert!(up.contains("ALL 5 CHECKS PASSED"), "{up}");
    let out = psql(25432, "select 1");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");

    // A second `up` with nothing changed changes nothing.
    let again = cove.ok(&["up", "--no-test", spec_path]);
    assert!(again.contains("up to date"), "{again}");

    let write = psql(
        25432,
        "create table kept(v text); insert into kept values ('survives restarts')",
    );
    assert!(write.status.success(), "{write:?}");
    cove.ok(&["stop", "pg"]);
    cove.ok(&["start", "pg"]);
    let report = cove.ok(&[
        "test",
        "pg",
        "--junit",
        cove.root().join("junit.xml").to_str().unwrap(),
    ]);
    assert!(report.contains("ALL 5 CHECKS PASSED"), "{report}");
    let junit = std::fs::read_to_string(cove.root().join("junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuite") && junit.contains("failures=\"0\""),
        "{junit}"
    );
    let read = psql(25432, "select v from kept");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "survives restarts"
    );

    // `down` removes the VM but keeps the data disk; a new `up` finds the data.
    cove.ok(&["down", spec_path]);
    cove.ok(&["up", "--no-test", spec_path]);
    cove.ok(&["test", "pg"]);
    let read = psql(25432, "select v from kept");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "survives restarts"
    );
    cove.ok(&["down", "--purge", spec_path]);

    // A fresh `pg` (its data disk purged) restores the snapshot the first `up` kept once the
    // checks passed: PostgreSQL answers at once, with none of the data written since.
    let up = cove.ok(&["up", spec_path]);
    assert!(up.contains("restored from its `up` snapshot"), "{up}");
    assert!(up.contains("ALL 5 CHECKS PASSED"), "{up}");
    let read = psql(25432, "select v from kept");
    assert!(!read.status.success(), "a purged table came back: {read:?}");
    cove.ok(&["down", "--purge", spec_path]);
}
