//! The host's TSC frequency in kHz.
//!
//! Under TCG a guest's TSC ticks at the host's rate (QEMU reads the host TSC),
//! and under KVM it does too unless scaled, so this is what a microvm guest
//! gets as `tsc_early_khz=` (see [`super::HostProbe::tsc_khz`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SYSFS_TSC_KHZ: &str = "/sys/devices/system/cpu/cpu0/tsc_freq_khz";
/// Long enough that clock reading jitter (a few µs) is far below 1 kHz of error
/// at GHz rates, short enough to go unnoticed on a start.
const MEASURE_FOR: Duration = Duration::from_millis(30);

/// Where the measured value is cached, beside the accelerator probe's verdict.
pub fn cache_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("host-tsc-khz.json")
}

/// The host TSC frequency, from the kernel if it publishes it, else measured.
/// `None` on CPUs without a usable TSC.
pub fn host_tsc_khz() -> Option<u64> {
    sysfs_tsc_khz().or_else(measure_tsc_khz)
}

/// Like [`host_tsc_khz`], cached for this boot of the host.
pub fn host_tsc_khz_cached(cache_dir: &Path) -> Option<u64> {
    let path = cache_path(cache_dir);
    if let Some(khz) = super::cache::load::<u64>(&path) {
        return Some(khz);
    }
    let khz = host_tsc_khz()?;
    super::cache::store(&path, khz);
    Some(khz)
}

fn sysfs_tsc_khz() -> Option<u64> {
    std::fs::read_to_string(SYSFS_TSC_KHZ)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&khz| khz > 0)
}

/// Counts TSC ticks against CLOCK_MONOTONIC (what `Instant` reads) for
/// [`MEASURE_FOR`]. Hand-written because no maintained crate does just this.
#[cfg(target_arch = "x86_64")]
pub fn measure_tsc_khz() -> Option<u64> {
    if !invariant_tsc() {
        return None;
    }
    let rdtsc = || {
        // SAFETY: rdtsc has no memory effects; every x86_64 CPU has it, and
        // Linux does not disable it for user space (CR4.TSD is clear).
        unsafe { core::arch::x86_64::_rdtsc() }
    };
    let (t0, c0) = (Instant::now(), rdtsc());
    // Busy-wait on the clock (not sleep): a descheduled thread still counts
    // correctly, but spinning keeps the two reads close together at the end.
    while t0.elapsed() < MEASURE_FOR {
        std::hint::spin_loop();
    }
    let (c1, t1) = (rdtsc(), Instant::now());
    let nanos = t1.duration_since(t0).as_nanos();
    let ticks = u128::from(c1.checked_sub(c0)?);
    // ticks / ns * 1e6 = kHz, rounded to the nearest kHz.
    let khz = (ticks * 1_000_000 + nanos / 2) / nanos;
    u64::try_from(khz).ok().filter(|&k| k > 0)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn measure_tsc_khz() -> Option<u64> {
    None
}

/// A TSC that changes rate with CPU frequency would make the measurement a
/// snapshot of the current clock speed; only trust a constant one.
fn invariant_tsc() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|flags| flags.split_whitespace().any(|f| f == "constant_tsc"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_frequency_is_plausible_and_stable() {
        let a = measure_tsc_khz().expect("this host has a constant TSC");
        let b = measure_tsc_khz().unwrap();
        assert!((500_000..10_000_000).contains(&a), "{a} kHz");
        // Two measurements agree within 0.5 %.
        assert!(a.abs_diff(b) * 200 < a, "{a} vs {b}");
        if let Some(sys) = sysfs_tsc_khz() {
            assert!(sys.abs_diff(a) * 100 < sys, "sysfs {sys} vs measured {a}");
        }
    }

    #[test]
    fn cached_value_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = host_tsc_khz_cached(dir.path()).unwrap();
        assert!(cache_path(dir.path()).exists());
        assert_eq!(host_tsc_khz_cached(dir.path()), Some(first));
    }
}
