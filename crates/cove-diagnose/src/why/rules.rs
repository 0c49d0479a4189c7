//! The individual failure patterns. Each rule appends findings; wording matched is the
//! kernel's, busybox's, kmod's and cove-init's own.

use super::log::{Log, message, used};
use super::{Cause, Evidence, Finding, Stage, VmFacts};
use crate::kernel::explain::{explain_syscall, syscall_in_text};
use crate::kernel::{KernelConfig, Value};
use cove_guest::{AGENT_PORT_NAME, marker};

pub(super) fn tsc_stall(log: &Log, facts: &VmFacts, out: &mut Vec<Finding>) {
    let needle = "Marking TSC unstable due to could not calculate TSC khz";
    let Some(&idx) = log.find(needle).last() else {
        return;
    };
    let tail = log.non_empty();
    let near_end = tail.iter().rev().take(3).any(|i| *i == idx);
    if !near_end {
        return;
    }
    let has_khz = facts
        .cmdline
        .as_deref()
        .is_some_and(|c| c.contains("tsc_early_khz="));
    let mut summary = "boot stalled calibrating the TSC: microvm has no HPET or PM timer to calibrate against, so the kernel hangs".to_string();
    if has_khz {
        summary.push_str(" (the command line already has tsc_early_khz=; check its value)");
    }
    out.push(Finding {
        cause: Cause::TscCalibrationStall,
        summary,
        evidence: vec![log.ev(idx)],
        fix: vec![
            "add tsc_early_khz=<host TSC kHz> to the kernel command line (cove does this for microvm when it can read the host TSC frequency)".into(),
            "or use the q35 machine type, which has an HPET".into(),
        ],
    });
}

pub(super) fn missing_syscalls(log: &Log, out: &mut Vec<Finding>) {
    let mut seen: Vec<String> = Vec::new();
    for i in 0..log.lines.len() {
        let line = log.lines[i];
        if !(line.contains("Function not implemented") || line.contains("ENOSYS")) {
            continue;
        }
        // The syscall is named on the same line or close by (PostgreSQL: the next line says
        // `DETAIL:  Failed system call was shmget(...)`).
        let lo = i.saturating_sub(2);
        let hi = (i + 3).min(log.lines.len());
        let Some((j, syscall)) = std::iter::once(i)
            .chain(lo..hi)
            .find_map(|j| syscall_in_text(log.lines[j]).map(|s| (j, s)))
        else {
            continue;
        };
        if seen.contains(&syscall) {
            continue;
        }
        let Some(ex) = explain_syscall(&syscall) else {
            continue;
        };
        seen.push(syscall.clone());
        let mut evidence = vec![log.ev(i)];
        if j != i {
            evidence.push(log.ev(j));
        }
        evidence.sort_by_key(|e| e.line);
        let opts: Vec<String> = ex.options.iter().map(|o| o.to_string()).collect();
        out.push(Finding {
            cause: Cause::MissingSyscall {
                syscall: syscall.clone(),
                options: opts.clone(),
            },
            summary: format!(
                "`{syscall}` is not implemented by the guest kernel ({}): it was built without CONFIG_{}",
                ex.feature,
                opts.join(" / CONFIG_")
            ),
            evidence,
            fix: ex.fragment(),
        });
    }
}

/// The module name in an insmod/modprobe message.
fn module_token(line: &str) -> Option<String> {
    let word = line
        .split(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == ':')
        .find(|w| w.contains(".ko"))?;
    let file = word.rsplit('/').next().unwrap_or(word);
    Some(file.split(".ko").next()?.replace('-', "_"))
}

pub(super) fn module_failures(log: &Log, out: &mut Vec<Finding>) {
    let mut found: Vec<Finding> = Vec::new();
    for i in 0..log.lines.len() {
        let line = log.lines[i];
        let msg = message(line);
        let (module, reason) = if (msg.contains("insmod") || msg.contains("modprobe"))
            && (msg.contains("can't insert")
                || msg.contains("could not insert")
                || msg.contains("failed")
                || msg.contains("not found"))
        {
            let module = module_token(msg).or_else(|| {
                // `modprobe: FATAL: Module virtio_blk not found in directory …`
                msg.split_once("Module ")
                    .and_then(|(_, r)| r.split_whitespace().next())
                    .map(str::to_string)
            });
            let Some(module) = module else { continue };
            let reason = msg.rsplit(": ").next().unwrap_or(msg).trim().to_string();
            (module, reason)
        } else if let Some((module, rest)) = msg.split_once(": Unknown symbol ") {
            if module.contains(' ') {
                continue;
            }
            (
                module.to_string(),
                format!("unknown symbol {}", rest.trim()),
            )
        } else {
            continue;
        };
        if let Some(f) = found
            .iter_mut()
            .find(|f| matches!(&f.cause, Cause::ModuleLoadFailed { module: m, .. } if *m == module))
        {
            f.evidence.push(log.ev(i));
            continue;
        }
        let unknown_symbol = reason.to_ascii_lowercase().contains("unknown symbol");
        let fix = if unknown_symbol {
            vec![format!(
                "load the modules {module} depends on first (modinfo -F depends {module}.ko), and make sure every module comes from the same kernel build as the kernel image"
            )]
        } else {
            vec![format!(
                "put {module}.ko (from the same kernel build) and its dependencies in the initramfs, or build the option in (=y)"
            )]
        };
        found.push(Finding {
            cause: Cause::ModuleLoadFailed {
                module: module.clone(),
                reason: reason.clone(),
            },
            summary: format!("kernel module {module} failed to load: {reason}"),
            evidence: vec![log.ev(i)],
            fix,
        });
    }
    out.extend(found);
}

/// Why an option does not work in this image, if the facts can tell.
fn option_gap(facts: &VmFacts, option: &str, module: &str) -> Option<String> {
    let cfg: &KernelConfig = facts.kernel_config.as_ref()?;
    match cfg.value(option) {
        Value::No => Some(format!("the kernel has CONFIG_{option} not set")),
        Value::Module => match &facts.initramfs_modules {
            Some(mods) if !mods.iter().any(|m| m.replace('-', "_") == module) => Some(format!(
                "CONFIG_{option}=m but {module}.ko is not in the initramfs"
            )),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn root_not_mounted(log: &Log, facts: &VmFacts, out: &mut Vec<Finding>) {
    let symptoms = [
        "VFS: Unable to mount root fs",
        "VFS: Cannot open root device",
        "Please append a correct \"root=\" boot option",
        "unknown filesystem type 'ext4'",
        "Can't find ext4 filesystem",
    ];
    let fatal = |what: &str| format!("{} {what}", marker::FATAL);
    let init_symptoms = [fatal("cannot mount"), fatal("root"), fatal("no root")];
    let mut evidence: Vec<Evidence> = (0..log.lines.len())
        .filter(|i| {
            let l = log.lines[*i];
            symptoms.iter().any(|s| l.contains(s)) || init_symptoms.iter().any(|s| l.contains(s))
        })
        .map(|i| log.ev(i))
        .collect();
    // A `mount ... failed` from busybox right after cove-init said it was mounting root.
    if let Some(m) = log.find(marker::MOUNTING_ROOT).last() {
        for i in *m + 1..log.lines.len() {
            let l = log.lines[i];
            if l.contains("mount") && (l.contains("failed") || l.contains("No such")) {
                evidence.push(log.ev(i));
            }
        }
    }
    if evidence.is_empty() {
        return;
    }
    evidence.sort_by_key(|e| e.line);
    evidence.dedup();
    let mut missing = Vec::new();
    let mut why = Vec::new();
    let mut fix = Vec::new();
    let disk_seen = log.any("virtio_blk virtio") || log.any("[vda]");
    for (option, module, seen) in [
        ("VIRTIO_BLK", "virtio_blk", disk_seen),
        (
            "EXT4_FS",
            "ext4",
            !log.any("unknown filesystem type 'ext4'"),
        ),
    ] {
        if let Some(gap) = option_gap(facts, option, module) {
            missing.push(module.to_string());
            why.push(gap);
            fix.push(format!(
                "CONFIG_{option}=y (or add {module}.ko and its dependencies to the initramfs)"
            ));
        } else if !seen {
            missing.push(module.to_string());
            why.push(format!("no sign of {module} in the log"));
            fix.push(format!(
                "make sure {module} is built in (CONFIG_{option}=y) or loaded from the initramfs"
            ));
        }
    }
    if log.any("Cannot open root device \"(null)\"") {
        why.insert(
            0,
            "the kernel command line has no root= and no initramfs /init took over".into(),
        );
        fix.insert(
            0,
            "boot with cove's initramfs, or pass root=/dev/vda".into(),
        );
    }
    if missing.is_empty() && !disk_seen {
        why.push("no virtio disk appeared (no `virtio_blk virtioN: [vda]` line): the transport (virtio_pci on q35, virtio_mmio on microvm) may be missing, or no disk was attached".into());
        fix.push("check the transport: CONFIG_VIRTIO_PCI / CONFIG_VIRTIO_MMIO, and for microvm acpi=on or CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES".into());
    }
    let summary = if why.is_empty() {
        "the root filesystem was not mounted".to_string()
    } else {
        format!("the root filesystem was not mounted: {}", why.join("; "))
    };
    out.push(Finding {
        cause: Cause::RootNotMounted { missing },
        summary,
        evidence,
        fix,
    });
}

pub(super) fn init_fatal(log: &Log, out: &mut Vec<Finding>) {
    for i in log.find(marker::FATAL) {
        if used(out, i + 1) {
            continue;
        }
        let reason = log.lines[i]
            .split_once(marker::FATAL)
            .map(|(_, r)| r.trim().to_string())
            .unwrap_or_default();
        out.push(Finding {
            cause: Cause::InitFatal {
                reason: reason.clone(),
            },
            summary: format!("cove's init gave up: {reason}"),
            evidence: vec![log.ev(i)],
            fix: Vec::new(),
        });
    }
}

pub(super) fn no_working_init(log: &Log, out: &mut Vec<Finding>) {
    let idx: Vec<usize> = (0..log.lines.len())
        .filter(|i| {
            let l = log.lines[*i];
            l.contains("No working init found")
                || (l.contains("Failed to execute") && l.contains("error -"))
                || (l.contains("Requested init") && l.contains("failed"))
        })
        .collect();
    if idx.is_empty() {
        return;
    }
    let enoent = idx.iter().any(|i| log.lines[*i].contains("error -2"));
    let enoexec = idx.iter().any(|i| log.lines[*i].contains("error -8"));
    let mut fix = vec![
        "check that /init (or the init= path) exists in the initramfs and is executable"
            .to_string(),
    ];
    if enoent {
        fix.push("error -2 (ENOENT) on an existing file means its interpreter is missing: a dynamically linked init needs its ld.so and libraries; use a static binary".into());
    }
    if enoexec {
        fix.push("error -8 (ENOEXEC): wrong architecture or not an executable (a script without #! or a missing CONFIG_BINFMT_SCRIPT)".into());
    }
    out.push(Finding {
        cause: Cause::NoWorkingInit,
        summary: "the kernel found no init it could execute".into(),
        evidence: idx.iter().map(|i| log.ev(*i)).collect(),
        fix,
    });
}

pub(super) fn init_exited(log: &Log, out: &mut Vec<Finding>) {
    let Some(&i) = log.find("Attempted to kill init!").first() else {
        return;
    };
    let code = log.lines[i].split_once("exitcode=").and_then(|(_, r)| {
        let hex = r.trim().trim_start_matches("0x");
        let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
        i32::from_str_radix(&hex, 16).ok()
    });
    let (exit_status, signal) = match code {
        Some(c) if c & 0x7f == 0 => (Some((c >> 8) & 0xff), None),
        Some(c) => (None, Some(c & 0x7f)),
        None => (None, None),
    };
    // What init said last, just before the panic (non-kernel lines).
    let mut evidence: Vec<Evidence> = (i.saturating_sub(8)..i)
        .filter(|j| {
            let t = log.lines[*j].trim_start();
            !t.is_empty() && !t.starts_with('[')
        })
        .map(|j| log.ev(j))
        .collect();
    evidence.push(log.ev(i));
    let how = match (exit_status, signal) {
        (Some(s), _) => format!("exited with status {s}"),
        (_, Some(s)) => format!("was killed by signal {s}"),
        _ => "exited".to_string(),
    };
    let explained = out.iter().any(|f| {
        matches!(
            f.cause,
            Cause::InitFatal { .. }
                | Cause::RootNotMounted { .. }
                | Cause::NoWorkingInit
                | Cause::OutOfMemory { .. }
                | Cause::MissingSyscall { .. }
        )
    });
    let summary = if explained {
        format!("init (PID 1) {how}, which panics the kernel (see the cause above)")
    } else {
        format!(
            "init (PID 1) {how}, which panics the kernel; the lines before the panic are its last words"
        )
    };
    out.push(Finding {
        cause: Cause::InitExited {
            exit_status,
            signal,
        },
        summary,
        evidence,
        fix: vec!["read the init's output above the panic; `cove disk cat NAME:/var/log/...` reads logs from the stopped VM's disk".into()],
    });
}

pub(super) fn out_of_memory(log: &Log, facts: &VmFacts, out: &mut Vec<Finding>) {
    let idx: Vec<usize> = (0..log.lines.len())
        .filter(|i| {
            let l = log.lines[*i];
            l.contains("Out of memory")
                || l.contains("invoked oom-killer")
                || l.contains("oom-kill:")
        })
        .collect();
    if idx.is_empty() {
        return;
    }
    let victim = idx.iter().find_map(|i| {
        let l = log.lines[*i];
        let rest = l.split_once("Killed process ")?.1;
        let name = rest.split_once('(')?.1.split_once(')')?.0;
        Some(name.to_string())
    });
    let summary = match &victim {
        Some(v) => format!("the guest ran out of memory; the OOM killer killed {v}"),
        None => "the guest ran out of memory".to_string(),
    };
    out.push(Finding {
        cause: Cause::OutOfMemory { victim },
        summary,
        evidence: idx.iter().map(|i| log.ev(*i)).collect(),
        fix: vec![format!(
            "give the VM more memory: `cove set {} --memory {}` (then restart it)",
            facts.name.as_deref().unwrap_or("NAME"),
            facts
                .memory_mib
                .map(|m| format!("{}M", (m * 2).max(256)))
                .unwrap_or_else(|| "1G".into())
        )],
    });
}

/// The line a panicking Linux kernel prints.
pub(super) const PANIC: &str = marker::KERNEL_PANIC;

pub(super) fn other_panic(log: &Log, out: &mut Vec<Finding>) {
    for i in log.find(PANIC) {
        if used(out, i + 1) {
            continue;
        }
        let reason = log.lines[i]
            .split_once("not syncing:")
            .map(|(_, r)| r.trim().to_string())
            .unwrap_or_default();
        // Attach the panic to the finding it belongs to when one explains it.
        let owner = out.iter_mut().find(|f| match &f.cause {
            Cause::RootNotMounted { .. } => reason.contains("mount root"),
            Cause::InitExited { .. } => reason.contains("kill init"),
            Cause::NoWorkingInit => reason.contains("No working init"),
            Cause::OutOfMemory { .. } => {
                reason.contains("Out of memory") || reason.contains("deadlocked on memory")
            }
            _ => false,
        });
        if let Some(f) = owner {
            f.evidence.push(log.ev(i));
            f.evidence.sort_by_key(|e| e.line);
            continue;
        }
        out.push(Finding {
            cause: Cause::KernelPanic {
                reason: reason.clone(),
            },
            summary: format!("kernel panic: {reason}"),
            evidence: vec![log.ev(i)],
            fix: Vec::new(),
        });
    }
}

pub(super) fn agent(log: &Log, facts: &VmFacts, stage: Stage, out: &mut Vec<Finding>) {
    if facts.agent_answered {
        return;
    }
    if stage == Stage::AgentReady {
        let ev = log
            .find("cove-agent: ready")
            .into_iter()
            .map(|i| log.ev(i))
            .collect();
        out.push(Finding {
            cause: Cause::AgentNeverAnswered { option: None, module: None },
            summary: "the agent says it is ready but the host never got an answer: the host end of the channel (its socket or vsock CID) is the problem, not the guest".into(),
            evidence: ev,
            fix: vec!["check the supervisor log for the agent connection errors".into()],
        });
        return;
    }
    // Earlier failures already explain a silent agent: anything before init was ready, or
    // anything that ended the guest.
    let fatal = out.iter().any(|f| {
        matches!(
            f.cause,
            Cause::TscCalibrationStall
                | Cause::RootNotMounted { .. }
                | Cause::InitFatal { .. }
                | Cause::NoWorkingInit
                | Cause::InitExited { .. }
                | Cause::KernelPanic { .. }
        )
    });
    if (!out.is_empty() && stage < Stage::InitReady) || fatal {
        return;
    }
    let evidence: Vec<Evidence> = (0..log.lines.len())
        .filter(|i| {
            let l = log.lines[*i];
            l.contains("virtio_console") || l.contains(AGENT_PORT_NAME) || l.contains("cove-agent")
        })
        .map(|i| log.ev(i))
        .collect();
    let gap = option_gap(facts, "VIRTIO_CONSOLE", "virtio_console");
    let (option, module, summary) = match (&gap, facts.kernel_config.as_ref()) {
        (Some(g), Some(cfg)) if cfg.value("VIRTIO_CONSOLE") == Value::No => (
            Some("VIRTIO_CONSOLE".to_string()),
            None,
            format!(
                "the agent never answered: {g}, so the virtio-serial port {AGENT_PORT_NAME} never appears"
            ),
        ),
        (Some(g), _) => (
            None,
            Some("virtio_console".to_string()),
            format!(
                "the agent never answered: {g}, so the virtio-serial port {AGENT_PORT_NAME} never appears"
            ),
        ),
        _ if evidence.is_empty() => (
            Some("VIRTIO_CONSOLE".to_string()),
            Some("virtio_console".to_string()),
            format!(
                "the agent never answered and the log has no virtio_console or {AGENT_PORT_NAME} line: the port likely never appeared (CONFIG_VIRTIO_CONSOLE missing, or module virtio_console not loaded)"
            ),
        ),
        _ => (
            None,
            None,
            "the agent never answered; see its last lines".into(),
        ),
    };
    let mut fix = Vec::new();
    if option.is_some() {
        fix.push("CONFIG_VIRTIO_CONSOLE=y".into());
    }
    if module.is_some() {
        fix.push("or put virtio_console.ko (and virtio, virtio_ring if modules) in the initramfs and load it before the agent starts".into());
    }
    out.push(Finding {
        cause: Cause::AgentNeverAnswered { option, module },
        summary,
        evidence,
        fix,
    });
}

pub(super) fn vmm_failed(facts: &VmFacts, stage: Stage, out: &mut Vec<Finding>) {
    let Some(exit) = &facts.vmm_exit else { return };
    let failed = exit.signal.is_some() || exit.code.is_some_and(|c| c != 0);
    if !failed || stage > Stage::Kernel || !out.is_empty() {
        return;
    }
    let how = match (exit.code, exit.signal) {
        (_, Some(s)) => format!("was killed by signal {s}"),
        (Some(c), _) => format!("exited with status {c}"),
        _ => "exited".into(),
    };
    let mut summary = format!("the VMM {how} before the guest booted");
    if let Some(tail) = exit.stderr_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        summary.push_str(&format!("; its stderr ends with: {}", tail.trim()));
    }
    out.push(Finding {
        cause: Cause::VmmFailed {
            code: exit.code,
            signal: exit.signal,
        },
        summary,
        evidence: Vec::new(),
        fix: vec![
            "run `cove doctor`, and check the VM's QEMU arguments with `cove show NAME`".into(),
        ],
    });
}
