//! Results of a run and their rendering for people (`1. VM running: ✓ PASS (2 ms)`) and as JSON.

use serde::{Serialize, Serializer};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not run because a check it depends on failed (the VM is down, the agent is silent).
    Skip,
}

/// The evidence of a failed check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What went wrong, in one line.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub got: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of the command's stdout/stderr (see [`excerpt`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The likely cause and the next step, when the evidence points to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Whether trying again can help (a missing port forward or host tool will not appear by
    /// waiting, so such failures end a `wait` at once).
    #[serde(skip)]
    pub retryable: bool,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retryable: true,
            ..Failure::default()
        }
    }

    pub fn permanent(mut self) -> Failure {
        self.retryable = false;
        self
    }

    pub fn cause(mut self, cause: Option<String>) -> Failure {
        self.cause = cause;
        self
    }

    /// The evidence as indented lines (used by the text report and JUnit).
    pub fn evidence_lines(&self) -> Vec<String> {
        let mut out = vec![self.message.clone()];
        if let Some(e) = &self.expected {
            out.push(format!("expected: {e}"));
        }
        if let Some(g) = &self.got {
            out.push(format!("got: {g}"));
        }
        if let Some(c) = self.exit_code {
            out.push(format!("exit code: {c}"));
        }
        for (what, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) {
                out.push(format!("{what}:"));
                out.extend(text.lines().map(|l| format!("  | {l}")));
            }
        }
        if let Some(c) = &self.cause {
            out.push(format!("likely cause: {c}"));
        }
        out
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// 1-based position in the report.
    pub number: usize,
    pub name: String,
    /// `vm`, `agent`, `process`, `tcp`, `command` or `sql`.
    pub kind: &'static str,
    pub status: Status,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Attempts made (more than one when the check waits).
    pub attempts: u32,
    /// What was seen on a pass (e.g. `pid 231`), or why a check was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub vm: String,
    pub passed: bool,
    pub total: usize,
    pub failed: usize,
    pub skipped: usize,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    pub checks: Vec<CheckResult>,
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Report {
    pub fn new(vm: &str, checks: Vec<CheckResult>, duration: Duration) -> Report {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        let (failed, skipped) = (count(Status::Fail), count(Status::Skip));
        Report {
            vm: vm.to_owned(),
            passed: failed == 0 && skipped == 0,
            total: checks.len(),
            failed,
            skipped,
            duration,
            checks,
        }
    }

    /// The closing line: `=== ALL 5 CHECKS PASSED ===` or `=== 1 OF 5 CHECKS FAILED ===`.
    pub fn summary(&self) -> String {
        let plural = if self.total == 1 { "CHECK" } else { "CHECKS" };
        if self.passed {
            return format!("=== ALL {} {plural} PASSED ===", self.total);
        }
        let skipped = if self.skipped > 0 {
            format!(", {} SKIPPED", self.skipped)
        } else {
            String::new()
        };
        format!(
            "=== {} OF {} {plural} FAILED{skipped} ===",
            self.failed, self.total
        )
    }

    /// The numbered report for people.
    pub fn to_text(&self) -> String {
        let mut out = format!("=== Testing VM `{}` ===\n", self.vm);
        for c in &self.checks {
            let mut timing = human_duration(c.duration);
            if c.attempts > 1 {
                let _ = write!(timing, ", {} attempts", c.attempts);
            }
            let _ = match c.status {
                Status::Pass => {
                    let detail = c
                        .detail
                        .as_deref()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default();
                    writeln!(out, "{}. {}: ✓ PASS ({timing}){detail}", c.number, c.name)
                }
                Status::Fail => writeln!(out, "{}. {}: ✗ FAIL ({timing})", c.number, c.name),
                Status::Skip => writeln!(
                    out,
                    "{}. {}: - SKIP ({})",
                    c.number,
                    c.name,
                    c.detail.as_deref().unwrap_or("not run")
                ),
            };
            if let Some(f) = &c.failure {
                for line in f.evidence_lines() {
                    let _ = writeln!(out, "   {line}");
                }
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// `2 ms`, `340 ms`, `1.2 s`.
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The end of a command's output: the last 20 lines and at most 2000 bytes, which is where
/// the error usually is. `None` for empty output.
pub fn excerpt(text: &str) -> Option<String> {
    const LINES: usize = 20;
    const BYTES: usize = 2000;
    let text = text.trim_end();
    if text.trim().is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = lines[lines.len().saturating_sub(LINES)..].join("\n");
    if kept.len() > BYTES {
        let mut cut = kept.len() - BYTES;
        while !kept.is_char_boundary(cut) {
            cut += 1;
        }
        kept = kept[cut..].to_owned();
    }
    if kept.len() < text.len() {
        kept = format!("…\n{kept}");
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(number: usize, status: Status) -> CheckResult {
        CheckResult {
            number,
            name: format!("check {number}"),
            kind: "command",
            status,
            duration: Duration::from_millis(2),
            attempts: 1,
            detail: None,
            failure: (status == Status::Fail).then(|| Failure {
                exit_code: Some(1),
                stderr: Some("boom".into()),
                ..Failure::new("exited 1")
            }),
        }
    }

    #[test]
    fn summary_lines_match_the_seed_shape() {
        let all = Report::new(
            "pg",
            (1..=5).map(|n| result(n, Status::Pass)).collect(),
            Duration::ZERO,
        );
        assert_eq!(all.summary(), "=== ALL 5 CHECKS PASSED ===");
        let text = all.to_text();
        assert!(text.contains("1. check 1: ✓ PASS (2 ms)\n"), "{text}");
        let mut checks: Vec<_> = (1..=4).map(|n| result(n, Status::Pass)).collect();
        checks.push(result(5, Status::Fail));
        let one = Report::new("pg", checks, Duration::ZERO);
        assert!(!one.passed);
        assert_eq!(one.summary(), "=== 1 OF 5 CHECKS FAILED ===");
        let text = one.to_text();
        assert!(
            text.contains(
                "5. check 5: ✗ FAIL (2 ms)\n   exited 1\n   exit code: 1\n   stderr:\n     | boom\n"
            ),
            "{text}"
        );
        let skip = Report::new(
            "pg",
            vec![result(1, Status::Fail), result(2, Status::Skip)],
            Duration::ZERO,
        );
        assert_eq!(skip.summary(), "=== 1 OF 2 CHECKS FAILED, 1 SKIPPED ===");
    }

    #[test]
    fn excerpts_keep_the_end() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let e = excerpt(&long).unwrap();
        assert!(e.starts_with("…\nline 80\n"), "{e}");
        assert!(e.ends_with("line 99"));
        assert_eq!(excerpt("  \n"), None);
        let wide = "é".repeat(3000);
        assert!(excerpt(&wide).unwrap().len() <= 2010);
    }
}
