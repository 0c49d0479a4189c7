//! `cove doctor`: can this host run cove's VMs, and how to fix what is missing.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_backend::Accel;
use cove_diagnose::doctor::{
    self, HostFacts, KvmFact, Level, MetadataGuard, NetworkFacts, NetworkHealth,
};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use the KVM probe result cached for this boot instead of probing again.
    #[arg(long)]
    pub cached: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    // The probe runs a vCPU in a child process (cove-backend); doctor only reports it.
    let choice = if args.cached {
        cove_backend::host::accel::probe(&ctx.paths.cache)
    } else {
        match std::env::current_exe() {
            Ok(exe) => cove_backend::host::accel::probe_uncached(&exe),
            Err(_) => cove_backend::host::accel::probe(&ctx.paths.cache),
        }
    };
    let qemu_runs_as = cove_vm::backends::vmm_identity(cove_backend::Backend::capabilities(
        &cove_qemu::QemuBackend,
    ));
    let facts = HostFacts {
        kvm: Some(KvmFact {
            usable: choice.accel == Accel::Kvm,
            reason: choice.reason,
        }),
        state_dir: ctx.paths.state.clone(),
        cache_dir: ctx.paths.cache.clone(),
        ram_dir: ctx.paths.ram.clone(),
        qemu_sandbox: cove_qemu::argv::sandbox(qemu_runs_as.is_some()).to_owned(),
        metadata_guard: metadata_guard(qemu_runs_as.is_some()),
        qemu_runs_as,
        backends: cove_vm::backends::all()
            .map(|b| {
                let verdict = b.probe_host(&ctx.paths.cache, false).cannot_boot;
                (b.kind().to_string(), verdict)
            })
            .collect(),
        network: network_facts(ctx),
    };
    let report = doctor::doctor(&facts);
    if ctx.json {
        output::print_json(&report)?;
    } else {
        println!("{report}");
    }
    Ok(if report.worst() == Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The link-local guard as cove-net finds it; it exists only where QEMU and passt drop to
/// identities of their own (under root).
fn metadata_guard(vmm_drops: bool) -> MetadataGuard {
    if !vmm_drops {
        return MetadataGuard::NotRoot;
    }
    if !cove_net::caps::has_net_admin() {
        return MetadataGuard::CannotApply("no CAP_NET_ADMIN".into());
    }
    match cove_net::guard::present() {
        Some(true) => MetadataGuard::Present,
        Some(false) => MetadataGuard::Absent,
        None => MetadataGuard::CannotApply("nft is not installed".into()),
    }
}

/// cove networks as the host has them (cove-net finds, cove-diagnose judges).
fn network_facts(ctx: &Ctx) -> NetworkFacts {
    let missing = cove_net::caps::missing();
    let mut facts = NetworkFacts {
        missing: (!missing.is_empty()).then(|| missing.to_string()),
        ..Default::default()
    };
    match cove_net::health(&ctx.paths) {
        Ok(networks) => {
            facts.networks = networks
                .into_iter()
                .map(|h| NetworkHealth {
                    bridge: h.record.bridge(),
                    table: h.record.nft_table(),
                    name: h.record.name,
                    bridge_up: h.bridge_up,
                    dnsmasq: h.dnsmasq,
                    table_present: h.table_present,
                    vms: h.vms,
                })
                .collect()
        }
        Err(e) => facts.unreadable = Some(format!("{:#}", anyhow::Error::from(e))),
    }
    facts
}
