//! `cove why`: name the cause of a failed VM from its console log and what the supervisor
//! recorded. A pure function: [`analyze`] reads text and facts, touches nothing.

mod log;
mod rules;
#[cfg(test)]
mod tests;

use cove_untrusted::terminal;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernel::KernelConfig;

/// How the VMM process ended, as the supervisor saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The end of the VMM's stderr, if kept.
    pub stderr_tail: Option<String>,
}

/// What the supervisor recorded about the VM (everything optional: use what is known).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmFacts {
    /// The VM's name, used in suggested commands.
    pub name: Option<String>,
    /// The VM's memory, used to suggest a larger size.
    pub memory_mib: Option<u64>,
    /// `None` while the VMM still runs.
    pub vmm_exit: Option<VmmExit>,
    /// Whether the guest agent ever completed a handshake.
    pub agent_answered: bool,
    /// The image's kernel config, if known.
    #[serde(skip)]
    pub kernel_config: Option<KernelConfig>,
    /// Module names in the image's initramfs, if known.
    pub initramfs_modules: Option<Vec<String>>,
    /// The VM state (`running`, `stopped`, `crashed`, …).
    pub state: Option<String>,
    /// Machine type (`microvm`, `q35`), if known.
    pub machine: Option<String>,
    /// The kernel command line used, if known.
    pub cmdline: Option<String>,
}

/// One console line that supports a finding (1-based line number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub line: usize,
    pub text: String,
}

/// The causes `why` can name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// Boot stalled calibrating the TSC (microvm without `tsc_early_khz=`).
    TscCalibrationStall,
    /// A syscall returned ENOSYS; the option that provides it.
    MissingSyscall {
        syscall: String,
        options: Vec<String>,
    },
    /// A module failed to load.
    ModuleLoadFailed { module: String, reason: String },
    /// The root filesystem was not mounted; `missing` names the driver(s) when known.
    RootNotMounted { missing: Vec<String> },
    /// cove's init stopped with `cove-init: FATAL: <reason>`.
    InitFatal { reason: String },
    /// No init could be executed.
    NoWorkingInit,
    /// PID 1 exited (`Attempted to kill init!`).
    InitExited {
        exit_status: Option<i32>,
        signal: Option<i32>,
    },
    /// The OOM killer ran.
    OutOfMemory { victim: Option<String> },
    /// A kernel panic not explained by a more specific cause.
    KernelPanic { reason: String },
    /// The guest agent never answered.
    AgentNeverAnswered {
        option: Option<String>,
        module: Option<String>,
    },
    /// The VMM exited with an error before the guest got far.
    VmmFailed {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// One named cause with its evidence and fix.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub cause: Cause,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// What to do (commands, config lines, command-line options).
    pub fix: Vec<String>,
}

/// How far boot got, from kernel messages and cove's init/agent markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    NoOutput,
    Kernel,
    Initramfs,
    LoadingModules,
    MountingRoot,
    InitReady,
    AgentReady,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::NoOutput => "no console output",
            Stage::Kernel => "kernel started",
            Stage::Initramfs => "initramfs /init started",
            Stage::LoadingModules => "init loading modules",
            Stage::MountingRoot => "init mounting the root filesystem",
            Stage::InitReady => "init ready",
            Stage::AgentReady => "agent ready",
        })
    }
}

/// The outcome of [`analyze`]: most fundamental cause first.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub stage: Stage,
    /// The line that got the boot to `stage`.
    pub stage_evidence: Option<Evidence>,
    pub findings: Vec<Finding>,
    /// The kernel panicked ("Kernel panic - not syncing"): the guest is dead even if its VMM
    /// still runs or exited cleanly.
    pub panicked: bool,
    /// The last non-empty console line.
    pub last_line: Option<Evidence>,
}

impl Diagnosis {
    /// The most likely root cause, if any was found.
    pub fn primary(&self) -> Option<&Finding> {
        self.findings.first()
    }
}

/// Analyze a console log with the supervisor's facts.
pub fn analyze(console_log: &str, facts: &VmFacts) -> Diagnosis {
    let lines: Vec<&str> = console_log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    let log = log::Log::new(&lines);
    let (stage, stage_evidence) = log.stage();
    let mut findings = Vec::new();
    rules::tsc_stall(&log, facts, &mut findings);
    rules::missing_syscalls(&log, &mut findings);
    rules::module_failures(&log, &mut findings);
    rules::root_not_mounted(&log, facts, &mut findings);
    rules::init_fatal(&log, &mut findings);
    rules::no_working_init(&log, &mut findings);
    rules::out_of_memory(&log, facts, &mut findings);
    rules::init_exited(&log, &mut findings);
    rules::other_panic(&log, &mut findings);
    rules::vmm_failed(facts, stage, &mut findings);
    rules::agent(&log, facts, stage, &mut findings);
    Diagnosis {
        stage,
        stage_evidence,
        findings,
        panicked: !log.find(rules::PANIC).is_empty(),
        last_line: log.last_line(),
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boot reached: {}", self.stage)?;
        if let Some(e) = &self.stage_evidence {
            write!(f, " (line {}: {})", e.line, e.text.trim())?;
        }
        writeln!(f)?;
        if self.findings.is_empty() {
            write!(f, "no known failure pattern found")?;
            if let Some(l) = &self.last_line {
                write!(
                    f,
                    "; the last console line was {}: {}",
                    l.line,
                    l.text.trim()
                )?;
            }
            return writeln!(f);
        }
        for (i, finding) in self.findings.iter().enumerate() {
            let label = if i == 0 { "cause" } else { "also" };
            // Summaries and fixes quote guest text (module names, paths from the log).
            writeln!(f, "{label}: {}", terminal(&finding.summary))?;
            for e in &finding.evidence {
                writeln!(f, "  {:>6} | {}", e.line, e.text.trim())?;
            }
            for fix in &finding.fix {
                writeln!(f, "  fix: {}", terminal(fix))?;
            }
        }
        Ok(())
    }
}
