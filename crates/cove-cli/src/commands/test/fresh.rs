//! `cove test --fresh NAME`: the checks run on a throwaway clone of NAME's snapshot, so a test
//! never leaves its traces in the VM a user keeps (as a CI job runs on a fresh machine).

use crate::context::Ctx;
use anyhow::{Context as _, Result, bail};
use cove_state::{PortForward, VmName};
use cove_vm::{lifecycle, snapshot};

/// A clone that exists for one test run; dropping it deletes it, pass or fail.
pub struct Throwaway {
    pub name: String,
    paths: cove_state::Paths,
}

impl Throwaway {
    /// Clones `vm`'s snapshot `tag` (its newest when `None`) with forwards of its own to free
    /// host ports (the checks that reach guest ports go through them), and starts it.
    pub fn start(ctx: &Ctx, vm: &str, tag: Option<&str>) -> Result<Self> {
        let tag = match tag {
            Some(t) => t.to_owned(),
            None => match snapshot::list(&ctx.paths, vm)?.pop() {
                Some(newest) => newest.tag,
                None => bail!(
                    "`{vm}` has no snapshot to test a fresh clone of; take one with \
                     `cove snapshot {vm}` (or run `cove test {vm}` on the VM itself)"
                ),
            },
        };
        let owner = lifecycle::show(&ctx.paths, vm)?;
        let ports = owner
            .ports
            .iter()
            .map(|p| free_forward(p.guest_port))
            .collect::<Result<Vec<_>>>()?;
        let name = clone_name(vm);
        let origin = format!("{vm}@{tag}");
        snapshot::create_clone_with_ports(&ctx.paths, &origin, &name, ports)?;
        let throwaway = Self {
            name: name.to_string(),
            paths: ctx.paths.clone(),
        };
        eprintln!("testing {} (a fresh clone of {origin})", throwaway.name);
        let opts = lifecycle::StartOptions {
            boot_timeout: std::time::Duration::from_secs(cove_api::DEFAULT_BOOT_TIMEOUT_SECS),
            from: None,
        };
        lifecycle::start(&ctx.paths, &throwaway.name, &opts)?;
        Ok(throwaway)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Err(e) = lifecycle::delete(&self.paths, &self.name, true, false) {
            eprintln!(
                "warning: the throwaway clone {} was not deleted: {e}; `cove delete --force {}`",
                self.name, self.name
            );
        }
    }
}

/// `NAME-fresh-PID`, cut so it stays a valid VM name.
fn clone_name(vm: &str) -> VmName {
    let suffix = format!("-fresh-{}", std::process::id());
    let keep = vm.len().min(VmName::MAX_LEN - suffix.len());
    VmName::new(&format!("{}{suffix}", &vm[..keep])).expect("a prefix of a VM name plus -fresh-PID")
}

/// A forward of `guest_port` from a host port that is free now (the kernel picks it). `start`
/// refuses it, naming the port, should something take it in between.
fn free_forward(guest_port: u16) -> Result<PortForward> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("finding a free host port for the fresh clone")?;
    Ok(PortForward {
        host_addr: "127.0.0.1".to_owned(),
        host_port: listener.local_addr()?.port(),
        guest_port,
    })
}
