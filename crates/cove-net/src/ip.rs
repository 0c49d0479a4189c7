//! Links through iproute2's `ip`. Not rtnetlink: that crate is async (tokio and netlink-proto)
//! while every caller here is a short synchronous command doing a handful of one-shot link
//! changes; `ip` is on every Linux host, and through `cove_util::tool` a failure names the exact
//! command and what it printed, which a user can rerun by hand.

use crate::{NetError, output, run};
use std::net::Ipv4Addr;

pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The link exists and is administratively up (`IFF_UP` in its sysfs flags).
pub fn is_up(name: &str) -> bool {
    std::fs::read_to_string(
        std::path::Path::new("/sys/class/net")
            .join(name)
            .join("flags"),
    )
    .ok()
    .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
    .is_some_and(|flags| flags & libc::IFF_UP as u32 != 0)
}

/// A bridge with a fixed MAC and the host's address on the network, up. Idempotent.
///
/// The MAC is pinned: a bridge otherwise takes the lowest MAC of its ports, so a TAP made
/// again (a VM started after a reboot) could change it under the guests' ARP caches, and
/// their DNS queries to the host would go to a stale address until the entries expired.
pub fn ensure_bridge(name: &str, mac: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
    if !link_exists(name) {
        run("ip", &["link", "add", name, "type", "bridge"])?;
    }
    run("ip", &["link", "set", name, "address", mac])?;
    let cidr = format!("{addr}/{prefix}");
    // `replace` is idempotent where `add` fails on an address already there.
    run("ip", &["addr", "replace", &cidr, "dev", name])?;
    run("ip", &["link", "set", name, "up"])?;
    // No IPv6 on the bridge: the host has no address there a guest could reach.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    Ok(())
}

/// A persistent TAP device owned by this user, enslaved to `bridge`, up. Idempotent. It is
/// made before the VMM starts and attached by name, so the VMM itself needs no privilege.
pub fn ensure_tap(name: &str, bridge: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() }.to_string();
        run(
            "ip",
            &[
                "tuntap", "add", "dev", name, "mode", "tap", "user", &uid, "vnet_hdr",
            ],
        )?;
    }
    run("ip", &["link", "set", name, "master", bridge])?;
    run("ip", &["link", "set", name, "up"])?;
    Ok(())
}

/// Deletes a link; one already gone is success.
pub fn delete_link(name: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        return Ok(());
    }
    let out = output("ip", &["link", "delete", name])?;
    if out.status.success() || !link_exists(name) {
        Ok(())
    } else {
        run("ip", &["link", "delete", name]).map(drop)
    }
}
