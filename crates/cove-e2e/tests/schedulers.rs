//! The scheduler examples (`examples/schedulers/`) pass their schedulers'
//! own validators: `systemd-analyze verify`, `kubernetes-validate --strict`,
//! and an HCL2 parse plus the raw_exec structure for Nomad.

use std::process::Command;

#[test]
#[ignore = "installs validators from PyPI into target/validators on first run"]
fn scheduler_examples_validate() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/schedulers/validate"
    );
    let out = Command::new(script)
        .arg(cove_e2e::cove_bin())
        .output()
        .expect("running examples/schedulers/validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validation failed:\n{text}");
    assert!(text.ends_with("PASS\n"), "{text}");
}
