//! Benchmark 15: what an idle VM costs the host. A VM that runs nothing should cost close to
//! nothing, or a host full of them saturates on CPU long before memory (issue 12).

use crate::boot;
use crate::cove::{Cove, json_u64};
use crate::report::Section;
use anyhow::{Context, Result, bail};
use std::process::Child;
use std::time::{Duration, Instant};

/// The goal: a hundred idle VMs together under half a core.
const GOAL_PERCENT_PER_VM: f64 = 0.5;
/// How long the VMs sit after their boot before the window opens (late boot work, first
/// keepalives).
const SETTLE: Duration = Duration::from_secs(10);

/// CPU time a process has used (user + system), in clock ticks.
fn cpu_ticks(pid: u64) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after `(comm)`: state is the 3rd field of the line, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')').context("no comm in stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {i} of /proc/{pid}/stat"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Children of `parent` whose command name is `comm`.
fn children_named(parent: u64, comm: &str) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let name = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(n, _)| n);
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u64>().ok());
            name == Some(comm) && ppid == Some(parent)
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

struct Measured {
    label: String,
    pids: Vec<u64>,
    before: u64,
}

pub fn run(cove: &Cove, window: Duration, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!(
            "Three guests of image `{}` (256 MiB, 1 vCPU, TCG) idle side by side: a VM started with `cove start` (its QEMU, its supervisor and its passt), cove's exact QEMU argv run bare (as in section 1: no supervisor, QEMU's own user network instead of passt, no agent connected), and the same bare argv untuned as a QEMU user would write it (`-cpu qemu64` without `+arat`, and microvm's PIT left on).",
            boot::IMAGE
        ),
        format!(
            "Each is booted to its ready line, left {SETTLE:?}, then the CPU time (utime + stime from /proc/PID/stat) of each process is read at the start and end of one {window:?} window, all three in the same window. Guest wakeups: the cove VM's local timer interrupts (LOC in its /proc/interrupts) read through the agent before and after the window (two `cove exec`s, both outside it)."
        ),
    ];
    let name = "idle";
    cove.create(name, &["--image", boot::IMAGE])?;
    cove.run(&["start", name])?;
    let show = cove.show(name)?;
    let qemu = json_u64(&show, "pid")?;
    let supervisor = json_u64(&show, "supervisor_pid")?;
    let passt = children_named(supervisor, "passt");

    let argv = boot::proc_cmdline(qemu)?;
    let (backing, fmt) = boot::backing_of(&cove.vm_dir(name).join("root.qcow2"))?;
    let work = cove.root().join("idle");
    std::fs::create_dir_all(&work)?;
    let mut bare: Vec<(String, Child)> = Vec::new();
    let result = (|| -> Result<()> {
        for (label, tuned) in [
            ("bare QEMU, cove's argv", true),
            ("bare QEMU, untuned", false),
        ] {
            let dir = work.join(if tuned { "tuned" } else { "untuned" });
            std::fs::create_dir_all(&dir)?;
            let overlay = dir.join("root.qcow2");
            boot::qemu_img_overlay(&backing, &fmt, &overlay)?;
            let mut argv = boot::adapt(&argv, &overlay, &dir.join("agent.sock"))?;
            if !tuned {
                untune(&mut argv)?;
            }
            let (child, _) = boot::spawn_bare(&argv, &dir.join("qemu.stderr"))?;
            bare.push((label.to_owned(), child));
        }
        std::thread::sleep(SETTLE);
        let loc_before = guest_timer_interrupts(cove, name)?;
        let mut measured = vec![
            Measured {
                label: "cove VM: QEMU".into(),
                pids: vec![qemu],
                before: 0,
            },
            Measured {
                label: "cove VM: supervisor".into(),
                pids: vec![supervisor],
                before: 0,
            },
            Measured {
                label: "cove VM: passt".into(),
                pids: passt.clone(),
                before: 0,
            },
        ];
        for (label, child) in &bare {
            measured.push(Measured {
                label: label.clone(),
                pids: vec![child.id().into()],
                before: 0,
            });
        }
        let ticks = |m: &Measured| -> Result<u64> {
            m.pids.iter().map(|p| cpu_ticks(*p)).sum::<Result<u64>>()
        };
        for m in &mut measured {
            m.before = ticks(m)?;
        }
        let began = Instant::now();
        std::thread::sleep(window);
        let mut percent = Vec::new();
        let secs = began.elapsed().as_secs_f64();
        let hz = clock_ticks_per_second() as f64;
        for m in &measured {
            let used = ticks(m)?.saturating_sub(m.before) as f64 / hz;
            percent.push((m.label.clone(), used / secs * 100.0));
        }
        let loc_after = guest_timer_interrupts(cove, name)?;
        let wakeups = loc_after.saturating_sub(loc_before) as f64 / secs;

        s.headers = ["process", "CPU, % of one core", "100 such VMs, cores"]
            .map(String::from)
            .to_vec();
        let total: f64 = percent[..3].iter().map(|(_, p)| p).sum();
        let row =
            |label: &str, p: f64| vec![label.to_owned(), format!("{p:.2} %"), format!("{:.2}", p)];
        for (label, p) in &percent {
            s.rows.push(row(label, *p));
        }
        s.rows.push(row("**cove VM, all three**", total));
        let (tuned, untuned) = (percent[3].1, percent[4].1);
        s.notes.push(format!(
            "The cove VM's guest took {wakeups:.1} local timer interrupts a second while idle (this includes the `cove exec` that read the second count)."
        ));
        s.notes.push(format!(
            "Side by side: the cove VM costs {:.1}× what its QEMU alone costs run bare with the same argv, and the untuned bare QEMU {:.1}× the tuned one (what `+arat` and `pit=off` save, BENCHMARKS' idle notes).",
            total / tuned.max(0.001),
            untuned / tuned.max(0.001)
        ));
        s.goal(
            "idle VM (QEMU + supervisor + passt), % of a core",
            &format!("≤ {GOAL_PERCENT_PER_VM} % (100 VMs ≤ half a core)"),
            format!("{total:.2} %"),
            total <= GOAL_PERCENT_PER_VM,
        );
        Ok(())
    })();
    for (_, child) in &mut bare {
        boot::kill(child);
    }
    cove.delete(name)?;
    result
}

/// cove's tuned argv back to what a QEMU user writes: the CPU without `+arat` (so the guest
/// keeps a periodic tick) and microvm's PIT on.
fn untune(argv: &mut [String]) -> Result<()> {
    let mut changed = 0;
    for a in argv.iter_mut() {
        if a.starts_with("qemu64") && a.contains("+arat") {
            *a = a.replace(",+arat", "");
            changed += 1;
        } else if a.starts_with("microvm") && a.contains("pit=off") {
            *a = a.replace(",pit=off", "");
            changed += 1;
        }
    }
    if changed != 2 {
        bail!(
            "cove's argv no longer has `-cpu qemu64,+arat` and `-M microvm,...,pit=off`: {argv:?}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_cove_bench_has_no_passt_child() {
        let me = std::process::id().into();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_ticks(me).unwrap() > 0);
        assert!(children_named(me, "passt").is_empty());
    }

    #[test]
    fn untuning_removes_arat_and_the_pit_switch() {
        let mut argv: Vec<String> = [
            "qemu",
            "-M",
            "microvm,acpi=on,pit=off",
            "-cpu",
            "qemu64,+arat",
        ]
        .map(String::from)
        .to_vec();
        untune(&mut argv).unwrap();
        assert_eq!(argv[2], "microvm,acpi=on");
        assert_eq!(argv[4], "qemu64");
        assert!(untune(&mut argv).is_err(), "nothing left to untune");
    }
}
