//! The CLI's one async runtime: built on first use, shared by every command's async work (agent
//! streams, the console), never rebuilt per call. Current-thread: a CLI waits on one thing at a
//! time, and a worker pool would only cost threads at start. `cove serve` builds its own
//! multi-threaded runtime instead (it serves many clients at once).

use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Runs `work` to completion on the process's runtime.
pub fn block_on<F: Future>(work: F) -> std::io::Result<F::Output> {
    let runtime = match RUNTIME.get() {
        Some(r) => r,
        None => {
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            RUNTIME.get_or_init(|| built)
        }
    };
    Ok(runtime.block_on(work))
}
