//! `ps` from /proc, without any external tool (a minimal guest may have none).

use std::collections::HashMap;

use cove_proto::{ProcInfo, StreamMsg};

use crate::mux::AgentStream;

fn uid_names() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// Parses /proc/PID/stat; `comm` may contain spaces and parentheses, so split at the last ')'.
fn parse_stat(text: &str) -> Option<(String, String, u32, u64, u64, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // Fields after comm, 0-based: 0 state, 1 ppid, 11 utime, 12 stime, 19 starttime, 21 rss.
    let state = rest.first()?.to_string();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let start: u64 = rest.get(19)?.parse().ok()?;
    let rss: u64 = rest.get(21)?.parse().ok()?;
    Some((comm, state, ppid, utime + stime, start, rss, 0))
}

pub fn list() -> Vec<ProcInfo> {
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let names = uid_names();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let base = e.path();
        // A process may exit while we read it: skip it quietly.
        let Some((comm, state, ppid, ticks, start, rss, _)) =
            std::fs::read_to_string(base.join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
        else {
            continue;
        };
        let uid = std::fs::read_to_string(base.join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            });
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let command = if cmdline.is_empty() {
            format!("[{comm}]")
        } else {
            let parts: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            parts.join(" ")
        };
        let elapsed = uptime - start as f64 / hz;
        let cpu_percent = if elapsed > 0.0 {
            (ticks as f64 / hz / elapsed * 100.0) as f32
        } else {
            0.0
        };
        out.push(ProcInfo {
            pid,
            ppid,
            user: uid
                .map(|u| names.get(&u).cloned().unwrap_or_else(|| u.to_string()))
                .unwrap_or_default(),
            cpu_percent,
            rss_bytes: rss * page,
            state,
            command,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

pub fn ps(stream: AgentStream) {
    let s = stream.sender();
    if s.msg(&StreamMsg::Started { pid: None }).is_err() {
        return;
    }
    for p in list() {
        if s.msg(&StreamMsg::Proc(p)).is_err() {
            return;
        }
    }
    if s.msg(&StreamMsg::Done).is_ok() {
        stream.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 500 1000 250 18446744073709551615";
        let (comm, state, ppid, ticks, start, rss, _) = parse_stat(line).unwrap();
        assert_eq!(
            (comm.as_str(), state.as_str(), ppid, ticks, start, rss),
            ("a) b (c)", "S", 1, 10, 500, 250)
        );
    }

    #[test]
    fn lists_this_process() {
        let me = std::process::id();
        let procs = list();
        let p = procs
            .iter()
            .find(|p| p.pid == me)
            .expect("own pid in /proc");
        assert!(p.rss_bytes > 0);
        assert!(
            p.command.contains("cove_agent") || p.command.contains("cove-agent"),
            "{}",
            p.command
        );
    }
}
