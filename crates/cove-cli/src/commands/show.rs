//! `cove show NAME`: one VM in detail.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use cove_state::{PortForward, VmRecord};
use cove_vm::{console_log, lifecycle};
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
}

/// The stable JSON shape of a VM for `show --json` and `list --json`: the
/// API's [`crate::views::VmView`], so the two cannot drift.
pub fn summary(r: &VmRecord) -> Value {
    serde_json::to_value(crate::views::VmView::from(r)).unwrap_or_default()
}

pub fn ports_text(ports: &[PortForward]) -> String {
    if ports.is_empty() {
        return "-".into();
    }
    ports
        .iter()
        .map(|p| format!("{}:{}->{}", p.host_addr, p.host_port, p.guest_port))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    // One store for the record and its image: opening it is most of what `show` costs.
    let mut store = cove_state::Store::open(&ctx.paths)?;
    let r = lifecycle::reconcile(&mut store, &ctx.paths, &args.name)?;
    let vm = ctx.paths.vm(&args.name);
    if ctx.json {
        let mut value = summary(&r);
        value["console_log"] = json!(vm.console_log());
        if let Ok(m) = cove_image::resolve(&store, &r.image_id) {
            value["kernel"] = json!({
                "version": m.kernel_version,
                "sha256": m.kernel_sha256,
                "origin": m.kernel_origin,
                "file": m.vmlinux.as_ref().unwrap_or(&m.kernel),
                "initramfs": m.initrd.is_some(),
            });
        }
        output::print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let field = |k: &str, v: String| println!("{k:<12} {v}");
    field("name", r.name.to_string());
    field("state", r.state.to_string());
    field(
        "image",
        format!(
            "{} ({})",
            r.image_name,
            &r.image_id[..r.image_id.len().min(12)]
        ),
    );
    if let Some(k) = kernel_summary(&store, &r.image_id) {
        field("kernel", k);
    }
    field("cpus", r.cpus.to_string());
    field("memory", output::mib(r.memory_mib));
    field("arch", r.arch.to_string());
    field("machine", r.machine.to_string());
    field(
        "accel",
        r.accel.map_or_else(|| "-".into(), |a| a.to_string()),
    );
    field(
        "pid",
        r.vmm_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    field("ports", ports_text(&r.ports));
    if r.host_loopback {
        field(
            "host",
            "the guest reaches the host's 127.0.0.1 as 10.0.2.2".into(),
        );
    }
    field("console", vm.console_log().display().to_string());
    if let Some(exit) = &r.last_exit {
        field("last exit", exit.clone());
    }
    if let Some(err) = &r.last_error {
        field("last error", err.clone());
        let tail = console_log::tail_lines(&vm.console_log(), 8);
        if !tail.is_empty() {
            println!("last console lines:");
            for line in tail {
                println!("  | {line}");
            }
        }
        println!("next: `cove why {}`", r.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// The kernel the VM boots: version, bzImage hash and where it came from (the
/// stale-kernel case of seed 001 shows here).
fn kernel_summary(store: &cove_state::Store, image_id: &str) -> Option<String> {
    let m = cove_image::resolve(store, image_id).ok()?;
    let hash = m
        .kernel_sha256
        .as_deref()
        .map(|h| format!(" sha256:{}", &h[..h.len().min(16)]))
        .unwrap_or_default();
    let origin = m
        .kernel_origin
        .as_deref()
        .map(|o| format!(" from {o}"))
        .unwrap_or_default();
    let initramfs = if m.initrd.is_some() {
        ""
    } else {
        ", no initramfs"
    };
    Some(format!("{}{hash}{origin}{initramfs}", m.kernel_version))
}
