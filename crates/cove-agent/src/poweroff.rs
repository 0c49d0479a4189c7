//! An orderly stop before power-off: services get SIGTERM and time to exit
//! (a database flushes and closes its files), then data filesystems are
//! unmounted and the root made read-only, so the next boot needs no
//! journal recovery. The agent does this itself because the init may be a
//! small shell script that cannot wait for orphaned processes reliably.
//! Under systemd, PID 1 is asked to do it (it knows the service order).

use std::time::{Duration, Instant};

/// How long processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);
/// When processes still running after SIGTERM also get SIGHUP.
const HUP_AFTER: Duration = Duration::from_secs(1);
/// How long systemd gets for its own shutdown.
const SYSTEMD_GRACE: Duration = Duration::from_secs(30);

pub fn stop_everything() {
    if pid1_is_systemd() {
        crate::log("asking systemd to power off");
        // SAFETY: kill takes no pointers. SIGRTMIN+4 is systemd's "poweroff".
        unsafe { libc::kill(1, libc::SIGRTMIN() + 4) };
        std::thread::sleep(SYSTEMD_GRACE);
        crate::log("systemd did not power off in time; forcing it");
    }
    // Wait for the processes that were told to stop, not for ones the
    // init's loops start meanwhile (they die in the final SIGKILL).
    let told = user_processes();
    signal_all(libc::SIGTERM);
    signal_all(libc::SIGCONT);
    let started = Instant::now();
    let mut hung_up = false;
    let still_running = || {
        let now = user_processes();
        told.iter()
            .copied()
            .filter(|pid| now.contains(pid))
            .collect::<Vec<_>>()
    };
    while !still_running().is_empty() && started.elapsed() < TERM_GRACE {
        // Interactive shells (the serial console's) ignore SIGTERM but end on SIGHUP.
        if !hung_up && started.elapsed() > HUP_AFTER {
            signal_all(libc::SIGHUP);
            hung_up = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = still_running();
    if !left.is_empty() {
        let names: Vec<String> = left.iter().map(|&pid| process_name(pid)).collect();
        crate::log(&format!(
            "still running {}s after SIGTERM, killed: {}",
            TERM_GRACE.as_secs(),
            names.join(", ")
        ));
    }
    signal_all(libc::SIGKILL);
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    unmount_data_filesystems();
    remount_root_read_only();
}

fn pid1_is_systemd() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// Every process except PID 1, the agent itself and kernel threads.
fn user_processes() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 1 && pid != me && !is_kernel_thread(pid) && !is_zombie(pid))
        .collect()
}

/// Kernel threads have no command line (and cannot be signalled anyway).
fn is_kernel_thread(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty())
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].trim_start().chars().next())
            .is_some_and(|state| state == 'Z')
    })
}

fn process_name(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("{} ({pid})", comm.trim())
}

fn signal_all(signal: i32) {
    for pid in user_processes() {
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Unmounts block-device filesystems other than the root, deepest first.
fn unmount_data_filesystems() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (source, target) = (f.next()?, f.next()?);
            (source.starts_with("/dev/") && target != "/").then_some(target)
        })
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let Ok(path) = std::ffi::CString::new(target) else {
            continue;
        };
        // SAFETY: path is a valid NUL-terminated string for the call's duration.
        if unsafe { libc::umount(path.as_ptr()) } != 0 {
            crate::log(&format!(
                "could not unmount {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
}

fn remount_root_read_only() {
    let root = c"/";
    // SAFETY: all pointers are valid NUL-terminated strings or null, as
    // mount(2) allows for a remount.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        crate::log(&format!(
            "could not remount / read-only: {}",
            std::io::Error::last_os_error()
        ));
    }
}
