//! What the host offers any backend: whether KVM really runs vCPUs
//! ([`accel`]), the TSC frequency ([`tsc`]), both cached per host boot.

pub mod accel;
mod cache;
pub mod tsc;

use std::path::Path;

pub use accel::{AccelChoice, PROBE_ARG, run_probe_child_if_asked};

use crate::{Accel, BackendError};

/// What a backend found on this host (see [`crate::Backend::probe_host`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// The accelerator this backend would use, and why.
    pub accel: AccelChoice,
    /// The host's TSC frequency, for guests that cannot calibrate their own.
    pub tsc_khz: Option<u64>,
    /// Why this backend cannot boot any VM here; `None` when it can.
    pub cannot_boot: Option<String>,
}

impl HostProbe {
    /// The accelerator and TSC facts, cached per host boot under `cache_dir`
    /// (or measured afresh); backends add their own verdict.
    pub fn measure(cache_dir: &Path, fresh: bool) -> Self {
        let accel = if fresh {
            match std::env::current_exe() {
                Ok(exe) => accel::probe_uncached(&exe),
                Err(_) => accel::probe(cache_dir),
            }
        } else {
            accel::probe(cache_dir)
        };
        Self {
            accel,
            tsc_khz: tsc::host_tsc_khz_cached(cache_dir),
            cannot_boot: None,
        }
    }

    /// True when the probe found a KVM whose vCPUs really run.
    pub fn kvm(&self) -> bool {
        self.accel.accel == Accel::Kvm
    }

    /// Refuses, with the reason, when the backend cannot boot here.
    pub fn require_bootable(&self, backend: &'static str) -> Result<(), BackendError> {
        match &self.cannot_boot {
            None => Ok(()),
            Some(reason) => Err(BackendError::CannotBoot {
                backend,
                reason: reason.clone(),
                hint: "use the qemu backend (the default), or a host with working KVM \
                       (`cove doctor` checks)"
                    .into(),
            }),
        }
    }
}
