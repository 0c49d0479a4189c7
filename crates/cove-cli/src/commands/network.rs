//! `cove network create|ls|rm`: cove networks (see `cove-net`). VMs join with
//! `cove create --network NAME` or `networks = [...]` in a spec.

use crate::context::Ctx;
use crate::output;
use anyhow::Result;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: NetworkCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network: a bridge, DHCP and DNS (dnsmasq), NAT out and isolation (nftables).
    Create {
        name: String,
        /// The IPv4 subnet, e.g. `10.117.5.0/24` (the host is its first address); a free
        /// 10.117.N.0/24 otherwise.
        #[arg(long)]
        subnet: Option<cove_state::net::Subnet>,
        /// No way out: guests reach only each other and the host's address on the network.
        #[arg(long)]
        no_nat: bool,
    },
    /// List networks, whether they are up, and their VMs with their addresses.
    #[command(alias = "list")]
    Ls,
    /// Remove a network and everything of it on the host (refused while VMs are on it).
    Rm {
        #[arg(add = crate::complete::network())]
        name: String,
    },
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match args.command {
        NetworkCommand::Create {
            name,
            subnet,
            no_nat,
        } => {
            let net = cove_net::create(&ctx.paths, &name, subnet, !no_nat)?;
            if ctx.json {
                output::print_json(&net)?;
            } else {
                println!(
                    "created network {} ({}, host {} on {}, {}); VMs join with `cove create VM --network {}` \
                     and are VM.{} to each other",
                    net.name,
                    net.subnet,
                    net.subnet.gateway(),
                    net.bridge(),
                    if net.nat { "NAT out" } else { "no NAT" },
                    net.name,
                    net.domain
                );
            }
        }
        NetworkCommand::Ls => list(ctx)?,
        NetworkCommand::Rm { name } => {
            cove_net::remove(&ctx.paths, &name)?;
            if !ctx.json {
                println!("removed network {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Ctx) -> Result<()> {
    let nets = cove_net::list(&ctx.paths)?;
    if ctx.json {
        let json: Vec<_> = nets
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.record.name,
                    "subnet": n.record.subnet,
                    "gateway": n.record.subnet.gateway(),
                    "bridge": n.record.bridge(),
                    "nat": n.record.nat,
                    "domain": n.record.domain,
                    "up": n.up,
                    "vms": n.vms.iter().map(|a| serde_json::json!({
                        "name": a.vm, "ip": a.ip, "mac": a.mac, "tap": a.tap,
                        "fqdn": format!("{}.{}", a.vm, n.record.domain),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return output::print_json(&json);
    }
    if nets.is_empty() {
        println!("no networks; `cove network create NAME` makes one");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            vec![
                n.record.name.clone(),
                n.record.subnet.to_string(),
                n.record.subnet.gateway().to_string(),
                if n.record.nat { "yes" } else { "no" }.into(),
                // Down after a host reboot: the next start of one of its VMs brings it up.
                if n.up { "up" } else { "down" }.into(),
                if n.vms.is_empty() {
                    "-".into()
                } else {
                    n.vms
                        .iter()
                        .map(|a| format!("{}.{}={}", a.vm, n.record.domain, a.ip))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
            ]
        })
        .collect();
    output::print_table(&["NAME", "SUBNET", "HOST", "NAT", "STATE", "VMS"], &rows);
    Ok(())
}
