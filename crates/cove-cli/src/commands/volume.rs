//! `cove volume ls|create|resize|rm`: persistent data disks, which outlive
//! VMs and image rebuilds. Attach one with `cove create --disk NAME[:SIZE][:/mount]`.

use crate::commands::create::parse_size;
use crate::context::Ctx;
use crate::output;
use anyhow::{Result, bail};
use cove_state::Store;
use cove_vm::{data_disk, lifecycle};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// List data disks and the VMs that use them.
    #[command(alias = "list")]
    Ls,
    /// Create an empty data disk (ext4).
    Create {
        name: String,
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
    },
    /// Grow a data disk; the guest grows its filesystem at the next boot.
    Resize {
        #[arg(add = crate::complete::volume())]
        name: String,
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Delete a data disk and its data (refused while a VM uses it).
    Rm {
        #[arg(add = crate::complete::volume())]
        name: String,
    },
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match args.command {
        VolumeCommand::Ls => list(ctx),
        VolumeCommand::Create { name, size } => {
            if !data_disk::ensure(&ctx.paths, &name, size)? {
                bail!("a data disk named `{name}` already exists");
            }
            println!(
                "created data disk {name} ({})",
                cove_util::ByteSize::from_bytes(size)
            );
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Resize { name, size } => {
            refuse_running_users(ctx, &name)?;
            data_disk::resize(&ctx.paths, &name, size)?;
            println!(
                "data disk {name} is now {}",
                cove_util::ByteSize::from_bytes(size)
            );
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Rm { name } => {
            let users = users(ctx, &name)?;
            if !users.is_empty() {
                bail!(
                    "data disk `{name}` is attached to {}; delete those VMs first (`cove delete --purge` does both)",
                    users.join(", ")
                );
            }
            data_disk::remove(&ctx.paths, &name)?;
            println!("deleted data disk {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The VMs a data disk is attached to.
fn users(ctx: &Ctx, name: &str) -> Result<Vec<String>> {
    Ok(Store::open(&ctx.paths)?
        .list_vms()?
        .into_iter()
        .filter(|vm| data_disk::uses_shared(vm, name))
        .map(|vm| vm.name.to_string())
        .collect())
}

fn refuse_running_users(ctx: &Ctx, name: &str) -> Result<()> {
    for vm in users(ctx, name)? {
        let state = lifecycle::show(&ctx.paths, &vm)?.state;
        if state.is_active() {
            bail!("data disk `{name}` is in use by `{vm}`, which is {state}; stop it first");
        }
    }
    Ok(())
}

fn list(ctx: &Ctx) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for (name, path) in data_disk::list(&ctx.paths)? {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let users = users(ctx, &name)?;
        rows.push(vec![
            name.clone(),
            output::mib(bytes / (1024 * 1024)),
            if users.is_empty() {
                "-".into()
            } else {
                users.join(",")
            },
        ]);
        json.push(serde_json::json!({"name": name, "path": path, "allocated_bytes": bytes, "used_by": users}));
    }
    if ctx.json {
        output::print_json(&json)?;
    } else if rows.is_empty() {
        println!("no data disks; attach one with `cove create NAME --disk DISK:1G:/data`");
    } else {
        output::print_table(&["NAME", "ALLOCATED", "USED BY"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
