//! A stand-in for cove's `main` in tests: runs the KVM probe child when
//! asked; else chooses an accelerator as `cove` would and prints the choice
//! as JSON. With a directory argument, uses it as the cache directory
//! (`accel::probe`); without, probes afresh (`accel::probe_uncached`).

fn main() {
    cove_backend::host::run_probe_child_if_asked();
    let choice = match std::env::args_os().nth(1) {
        Some(cache_dir) => cove_backend::host::accel::probe(cache_dir.as_ref()),
        None => {
            let exe = std::env::current_exe().expect("the running program has a path");
            cove_backend::host::accel::probe_uncached(&exe)
        }
    };
    println!(
        "{}",
        serde_json::to_string(&choice).expect("AccelChoice serializes")
    );
}
