//! `cove down FILE.toml`: stop and remove the VMs a spec declares. Their
//! data disks are kept unless `--purge`.

use crate::context::Ctx;
use crate::output;
use crate::up_spec::UpSpec;
use anyhow::Result;
use cove_state::Store;
use cove_vm::lifecycle;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub file: PathBuf,
    /// Also delete the VMs' data disks (their data is lost).
    #[arg(long)]
    pub purge: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let spec = UpSpec::load(&args.file)?;
    for vm in &spec.vms {
        let name = vm.name.as_str();
        let exists = Store::open(&ctx.paths)?.find_vm(name)?.is_some();
        let mut purged = Vec::new();
        if exists {
            lifecycle::stop(&ctx.paths, name, Duration::from_secs(30))?;
            let disks = lifecycle::show(&ctx.paths, name)?.data_disks;
            // Purging refuses (and deletes nothing) while another VM uses a disk.
            lifecycle::delete(&ctx.paths, name, true, args.purge)?;
            if args.purge {
                purged = disks;
            }
        }
        if args.purge {
            for disk in &vm.disks {
                if !purged.contains(&disk.name) {
                    lifecycle::remove_unused_disk(&ctx.paths, &disk.name)?;
                    purged.push(disk.name.clone());
                }
            }
        }
        if ctx.json {
            output::print_json(&serde_json::json!({
                "name": name, "removed": exists, "purged_disks": purged,
            }))?;
        } else {
            let kept: Vec<&str> = vm.disks.iter().map(|d| d.name.as_str()).collect();
            println!(
                "{name}: {}{}",
                if exists {
                    "stopped and removed"
                } else {
                    "not present"
                },
                if args.purge || kept.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; data disks kept: {} (`--purge` deletes them)",
                        kept.join(", ")
                    )
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
