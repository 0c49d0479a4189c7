//! What the figures were measured on: they mean little without it.

use crate::cove::Cove;
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub qemu: String,
    /// The accelerator cove's VMs ran under, with doctor's reason.
    pub accel: String,
    pub cove: String,
    /// /proc/loadavg when the run began and ended: other work on the
    /// machine shows here (the alternation makes it hit both sides alike).
    pub load_start: String,
    pub load_end: String,
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

impl Machine {
    pub fn detect(cove: &Cove) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu,
            memory,
            kernel: first_line("uname", &["-r"]),
            qemu: first_line("qemu-system-x86_64", &["--version"]),
            accel: accel(cove),
            cove: cove
                .run(&["--version"])
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|e| format!("unknown ({e})")),
            load_start: loadavg(),
            load_end: String::new(),
        }
    }

    pub fn lines(&self) -> Vec<(String, String)> {
        vec![
            ("CPUs (nproc)".into(), self.nproc.to_string()),
            ("CPU model".into(), self.cpu.clone()),
            ("memory".into(), self.memory.clone()),
            ("host kernel".into(), self.kernel.clone()),
            ("QEMU".into(), self.qemu.clone()),
            ("accelerator".into(), self.accel.clone()),
            ("cove".into(), self.cove.clone()),
            (
                "load average (1, 5, 15 min)".into(),
                format!(
                    "{} at the start, {} at the end",
                    self.load_start, self.load_end
                ),
            ),
        ]
    }
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{cmd}: not found"))
}

/// TCG or KVM as `cove doctor` decides it (cove uses KVM only when a probe
/// shows a vCPU really runs).
fn accel(cove: &Cove) -> String {
    let Ok(v) = cove.json(&["doctor"]) else {
        return "unknown (cove doctor failed)".into();
    };
    let kvm = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "kvm"))
        .cloned();
    match kvm {
        Some(c) if c["status"] == "ok" => format!("KVM ({})", c["detail"].as_str().unwrap_or("")),
        Some(c) => format!("TCG ({})", c["detail"].as_str().unwrap_or("")),
        None => "unknown".into(),
    }
}
