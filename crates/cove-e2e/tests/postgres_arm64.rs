//! The PostgreSQL example as an arm64 guest on this x86-64 host (issue 15): the same spec with
//! `arch = "arm64"` in its image, brought up, checked and queried from the host as the amd64
//! example is, so an appliance destined for an arm64 device passes its checks here first.
//!
//! Its Debian root is made by mmdebstrap with every arm64 maintainer script run under
//! qemu-user, cached by content in the shared cache: cold, the image took 193 s on a new
//! machine (README, "arm64 guests"), and `up` to all checks passed 12 s.

use cove_e2e::{Cove, psql};
use std::path::Path;

#[test]
#[ignore = "boots an arm64 Debian guest; builds its image (qemu-user)"]
fn postgres_example_as_an_arm64_guest_comes_up_and_passes_its_checks() {
    let cove = Cove::new();
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/postgres.toml"
    ));
    let spec = std::fs::read_to_string(example)
        .unwrap()
        .replacen(
            "[image]\nname = \"postgres\"\n",
            "[image]\nname = \"postgres-arm64\"\narch = \"arm64\"\n",
            1,
        )
        .replace("\"15432:5432\"", "\"25433:5432\"")
        .replace(
            "name = \"pgdata\"",
            &format!("name = \"arm{}\"", std::process::id() % 1_000_000),
        );
    assert!(
        spec.contains("arch = \"arm64\""),
        "the example's [image] moved"
    );
    let spec_path = cove.root().join("postgres-arm64.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let spec_path = spec_path.to_str().unwrap();

    let up = cove.ok(&["up", spec_path]);
    assert!(up.contains("ALL 5 CHECKS PASSED"), "{up}");
    let shown = cove.json(&["show", "pg"]);
    assert_eq!(shown["arch"], "arm64", "{shown}");
    assert_eq!(cove.ok(&["exec", "pg", "--", "uname", "-m"]), "aarch64\n");
    let out = psql(25433, "select 6 * 7");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
    cove.ok(&["down", "--purge", spec_path]);
}
