//! Benchmark 15: what an idle VM costs the host. A VM that runs nothing should cost close to
//! nothing, or a host full of them saturates on CPU long before memory (issue 12).

use crate::boot;
use crate::cove::{Cove, json_u64};
use crate::report::Section;
use anyhow::{Context, Result};
use cove_qemu::EXTRA_ARGS_ENV;
use std::time::{Duration, Instant};

/// The goal: a hundred idle VMs together under half a core.
const GOAL_PERCENT_PER_VM: f64 = 0.5;
/// How long the VMs sit after their boot before the window opens (late boot work, first
/// keepalives).
const SETTLE: Duration = Duration::from_secs(10);

/// A process's `/proc/PID/stat`: its command name and the fields after it (the first of which,
/// the state, is field 3 of the line). The name is in parentheses and may itself hold spaces or
/// `)`, hence the last `)`.
fn stat(pid: u64) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let (_, comm) = head.split_once('(')?;
    Some((
        comm.to_owned(),
        rest.split_whitespace().map(str::to_owned).collect(),
    ))
}

/// Field `n` (numbered as in proc(5), from 1) of a stat line whose fields from 3 on are `after`.
fn field(after: &[String], n: usize) -> Option<u64> {
    after.get(n - 3)?.parse().ok()
}

/// CPU time a process has used (user + system: fields 14 and 15), in clock ticks.
fn cpu_ticks(pid: u64) -> Result<u64> {
    let (_, after) = stat(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = field(&after, 14).zip(field(&after, 15));
    let (user, system) = ticks.with_context(|| format!("utime/stime in /proc/{pid}/stat"))?;
    Ok(user + system)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Children (field 4, the parent's pid) of `parent` whose command name is `comm`.
fn children_named(parent: u64, comm: &str) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            stat(*pid).is_some_and(|(name, after)| name == comm && field(&after, 4) == Some(parent))
        })
        .collect()
}

/// The guest's local timer interrupts so far (its wakeups), read through the agent.
fn guest_timer_interrupts(cove: &Cove, name: &str) -> Result<u64> {
    let out = cove.run(&["exec", name, "--", "cat", "/proc/interrupts"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("LOC:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no LOC line in the guest's /proc/interrupts")
}

/// What an untuned QEMU command line has where cove's has `-cpu qemu64,+arat` and microvm's
/// `pit=off`: QEMU takes the last `-cpu` and merges `-M` options, so appended, these undo them.
const UNTUNED: &str = "-cpu qemu64 -M microvm,pit=on";

/// One idle VM's processes and their CPU ticks when the window opened.
struct Vm {
    name: &'static str,
    qemu: u64,
    supervisor: u64,
    passt: Vec<u64>,
    before: [u64; 3],
}

impl Vm {
    fn start(cove: &Cove, name: &'static str, extra_qemu_args: Option<&str>) -> Result<Self> {
        cove.create(name, &["--image", boot::IMAGE])?;
        let mut cmd = cove.command(&["start", name]);
        if let Some(extra) = extra_qemu_args {
            cmd.env(EXTRA_ARGS_ENV, extra);
        }
        cove.run_cmd(cmd, &["start", name])?;
        let show = cove.show(name)?;
        let supervisor = json_u64(&show, "supervisor_pid")?;
        Ok(Self {
            name,
            qemu: json_u64(&show, "pid")?,
            supervisor,
            passt: children_named(supervisor, "passt"),
            before: [0; 3],
        })
    }

    /// CPU ticks of QEMU, the supervisor and passt.
    fn ticks(&self) -> Result<[u64; 3]> {
        let passt = self
            .passt
            .iter()
            .map(|p| cpu_ticks(*p))
            .sum::<Result<u64>>()?;
        Ok([cpu_ticks(self.qemu)?, cpu_ticks(self.supervisor)?, passt])
    }
}

pub fn run(cove: &Cove, window: Duration, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!(
            "Two VMs of image `{}` (256 MiB, 1 vCPU, TCG), both started with `cove start` and idle side by side: one as cove runs it, one with cove's two idle tunings undone through `{EXTRA_ARGS_ENV}=\"{UNTUNED}\"` (the CPU without `+arat`, so the guest keeps a periodic tick, and microvm's PIT on, which QEMU emulates edge by edge), i.e. the command line a QEMU user would write. Both run the same image, whose init turns the kernel's proactive memory compaction off (`vm.compaction_proactiveness=0`: kcompactd would otherwise wake twice a second).",
            boot::IMAGE
        ),
        format!(
            "Each is booted to ready and left {SETTLE:?}; then the CPU time (utime + stime from /proc/PID/stat) of each VM's QEMU, supervisor and passt is read at the start and end of one {window:?} window, the same window for both. Guest wakeups: each guest's local timer interrupts (LOC in /proc/interrupts) read through the agent before and after the window (`cove exec`s outside it)."
        ),
    ];
    let result = (|| -> Result<()> {
        let mut vms = [
            Vm::start(cove, "idle", None)?,
            Vm::start(cove, "idle-untuned", Some(UNTUNED))?,
        ];
        std::thread::sleep(SETTLE);
        let mut loc = Vec::new();
        for vm in &mut vms {
            loc.push(guest_timer_interrupts(cove, vm.name)?);
            vm.before = vm.ticks()?;
        }
        let began = Instant::now();
        std::thread::sleep(window);
        let secs = began.elapsed().as_secs_f64();
        let hz = clock_ticks_per_second() as f64;
        let mut percent = Vec::new();
        for vm in &vms {
            let after = vm.ticks()?;
            percent.push(
                [0, 1, 2].map(|i| after[i].saturating_sub(vm.before[i]) as f64 / hz / secs * 100.0),
            );
        }
        let wakeups: Vec<f64> = vms
            .iter()
            .zip(&loc)
            .map(|(vm, before)| -> Result<f64> {
                Ok(guest_timer_interrupts(cove, vm.name)?.saturating_sub(*before) as f64 / secs)
            })
            .collect::<Result<_>>()?;

        s.headers = [
            "VM",
            "QEMU",
            "supervisor",
            "passt",
            "all, % of a core",
            "guest timer interrupts/s",
        ]
        .map(String::from)
        .to_vec();
        let labels = [
            "cove's (`+arat`, `pit=off`)",
            "untuned (`-cpu qemu64`, PIT on)",
        ];
        for ((label, p), w) in labels.iter().zip(&percent).zip(&wakeups) {
            s.rows.push(vec![
                (*label).to_owned(),
                format!("{:.2} %", p[0]),
                format!("{:.2} %", p[1]),
                format!("{:.2} %", p[2]),
                format!("{:.2} %", p.iter().sum::<f64>()),
                format!("{w:.1}"),
            ]);
        }
        let (tuned, untuned): (f64, f64) = (percent[0].iter().sum(), percent[1].iter().sum());
        s.notes.push(format!(
            "Side by side: the untuned VM costs {:.1}× cove's. 100 idle VMs as cove runs them: {:.2} of a core. The wakeup counts include the `cove exec` that read the second one.",
            untuned / tuned.max(0.001),
            tuned
        ));
        s.goal(
            "idle VM (QEMU + supervisor + passt), % of a core",
            &format!("≤ {GOAL_PERCENT_PER_VM} % (100 VMs ≤ half a core)"),
            format!("{tuned:.2} %"),
            tuned <= GOAL_PERCENT_PER_VM,
        );
        Ok(())
    })();
    for name in ["idle", "idle-untuned"] {
        let _ = cove.delete(name);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_its_children_are_found_by_name() {
        let me = std::process::id().into();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_ticks(me).unwrap() > 0);
        assert!(children_named(me, "passt").is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = children_named(me, "sleep");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![u64::from(child.id())]);
    }
}
