//! The console log as lines, with the helpers every rule uses.

use super::{Evidence, Finding, Stage};
use cove_guest::marker;

pub(crate) struct Log<'a> {
    pub(super) lines: &'a [&'a str],
}

impl<'a> Log<'a> {
    pub(crate) fn new(lines: &'a [&'a str]) -> Self {
        Log { lines }
    }

    pub(super) fn ev(&self, idx: usize) -> Evidence {
        Evidence {
            line: idx + 1,
            text: printable(self.lines[idx]),
        }
    }

    /// Indices of lines containing `needle`.
    pub(super) fn find(&self, needle: &str) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|i| self.lines[*i].contains(needle))
            .collect()
    }

    pub(super) fn any(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    pub(super) fn non_empty(&self) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|i| !self.lines[*i].trim().is_empty())
            .collect()
    }

    pub(crate) fn last_line(&self) -> Option<Evidence> {
        self.non_empty().last().map(|i| self.ev(*i))
    }

    pub(crate) fn stage(&self) -> (Stage, Option<Evidence>) {
        let markers: &[(&str, Stage)] = &[
            (marker::AGENT_READY, Stage::AgentReady),
            (marker::READY, Stage::InitReady),
            (marker::MOUNTING_ROOT, Stage::MountingRoot),
            (marker::LOADING_MODULES, Stage::LoadingModules),
            (marker::KERNEL_RUN_INIT, Stage::Initramfs),
            (marker::PREFIX, Stage::Initramfs),
            ("Linux version", Stage::Kernel),
        ];
        for (needle, stage) in markers {
            if let Some(i) = self.find(needle).last() {
                return (*stage, Some(self.ev(*i)));
            }
        }
        match self.non_empty().first() {
            Some(i) => (Stage::Kernel, Some(self.ev(*i))),
            None => (Stage::NoOutput, None),
        }
    }
}

/// A console line as evidence: escape sequences and control characters made visible (the
/// firmware's screen clear shows as `\x1b[2J`), never passed to the user's terminal.
pub(super) fn printable(line: &str) -> String {
    cove_untrusted::terminal_line(line.trim_end_matches('\r')).into_owned()
}

/// Strip a `[    1.234567] ` kernel timestamp.
pub(super) fn message(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with('[')
        && let Some(end) = t.find("] ")
    {
        return &t[end + 2..];
    }
    t
}

pub(super) fn used(findings: &[Finding], line: usize) -> bool {
    findings
        .iter()
        .any(|f| f.evidence.iter().any(|e| e.line == line))
}
