//! Build progress reporting, and the build log every build keeps.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a builder tells its caller while it works. The CLI renders it (with
/// indicatif); every method has a default so a caller implements only what
/// it shows.
pub trait Progress: Sync {
    /// A named stage (e.g. `download kernel`) began.
    fn stage_started(&self, _stage: &str) {}
    /// The stage finished after `elapsed`.
    fn stage_finished(&self, _stage: &str, _elapsed: Duration) {}
    /// Bytes processed within the current stage (`total` when known).
    fn bytes(&self, _stage: &str, _done: u64, _total: Option<u64>) {}
    /// A line of detail (a command run, a cache hit); also goes to the build log.
    fn message(&self, _line: &str) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Wraps the caller's [`Progress`] and records everything into the build log
/// (written as `build.log` into the image directory).
pub(crate) struct Reporter<'a> {
    inner: &'a dyn Progress,
    start: Instant,
    log: Mutex<String>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(inner: &'a dyn Progress) -> Self {
        Self {
            inner,
            start: Instant::now(),
            log: Mutex::new(String::new()),
        }
    }

    fn record(&self, line: &str) {
        let t = self.start.elapsed().as_secs_f64();
        if let Ok(mut log) = self.log.lock() {
            log.push_str(&format!("[{t:8.3}] {line}\n"));
        }
    }

    /// Runs `f` as the stage `name`, reporting its start and end.
    pub(crate) fn stage<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        self.record(&format!("stage {name}: started"));
        self.inner.stage_started(name);
        let t = Instant::now();
        let out = f();
        let elapsed = t.elapsed();
        self.record(&format!(
            "stage {name}: finished in {:.3} s",
            elapsed.as_secs_f64()
        ));
        self.inner.stage_finished(name, elapsed);
        out
    }

    pub(crate) fn message(&self, line: &str) {
        self.record(line);
        self.inner.message(line);
    }

    pub(crate) fn bytes(&self, stage: &str, done: u64, total: Option<u64>) {
        self.inner.bytes(stage, done, total);
    }

    /// Appends a block of command output to the log only (not the caller).
    pub(crate) fn output(&self, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        if let Ok(mut log) = self.log.lock() {
            for l in text.lines() {
                log.push_str("    | ");
                log.push_str(l);
                log.push('\n');
            }
        }
    }

    pub(crate) fn text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
