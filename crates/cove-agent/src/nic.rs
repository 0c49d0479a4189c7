//! After a restore from another VM's snapshot: each NIC on a cove network still has that VM's
//! MAC and address, and takes the clone's own (the host holds the clone's TAPs until this has
//! answered). The equivalent of a DHCP renewal with the new MAC: the host sends exactly what
//! the network's dnsmasq has reserved for the clone, so there is no client to run (the
//! initramfs' udhcpc has long exited) and no exchange that could time out.
//!
//! Plain ioctls on an `AF_INET` socket, not netlink: four one-shot changes, no dependency, and
//! nothing in the guest (no `ip`, no DHCP client) needed.

use cove_proto::{ErrorKind, ErrorMsg, NicMove};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::mux::AgentStream;

pub fn run(stream: AgentStream, nics: Vec<NicMove>) {
    stream.answer(move_all(&nics));
}

fn invalid(what: impl Into<String>) -> ErrorMsg {
    ErrorMsg::new(ErrorKind::InvalidRequest, what)
}

fn move_all(nics: &[NicMove]) -> Result<(), ErrorMsg> {
    if nics.len() > NicMove::MAX {
        return Err(invalid(format!("over {} NICs to move", NicMove::MAX)));
    }
    // Everything checked and found before anything changes.
    let mut found = Vec::new();
    for n in nics {
        let mac = parse_mac(&n.mac).ok_or_else(|| invalid(format!("bad MAC {:?}", n.mac)))?;
        if parse_mac(&n.from_mac).is_none() || !(1..=30).contains(&n.prefix) {
            return Err(invalid(format!(
                "bad NIC move {:?} -> {:?} /{}",
                n.from_mac, n.mac, n.prefix
            )));
        }
        let name = nic_by_mac(&n.from_mac)
            .or_else(|| nic_by_mac(&n.mac))
            .ok_or_else(|| {
                ErrorMsg::new(
                    ErrorKind::NotFound,
                    format!("no NIC with MAC {} (nor {})", n.from_mac, n.mac),
                )
            })?;
        found.push((name, mac, n));
    }
    let sock = socket()?;
    for (name, mac, n) in &found {
        // A live change (virtio-net tells the device through its control queue): taking
        // the link down would drop its routes for nothing.
        set_hwaddr(&sock, name, mac)?;
        // Replacing the address drops the routes through the NIC; the default route, when
        // this network carries it, is put back below.
        set_addr(&sock, name, libc::SIOCSIFADDR, n.address)?;
        set_addr(&sock, name, libc::SIOCSIFNETMASK, netmask(n.prefix))?;
    }
    // As the initramfs' DHCP script does: the first network with a router carries the
    // default route. One already there (on the user-mode NIC, or kept) stays.
    if let Some((name, _, n)) = found.iter().find(|(_, _, n)| n.router.is_some()) {
        add_default_route(&sock, name, n.router.expect("found by it"))?;
    }
    Ok(())
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix)))
}

/// The interface whose MAC is `mac` (case-insensitive), from sysfs.
fn nic_by_mac(mac: &str) -> Option<String> {
    for entry in std::fs::read_dir("/sys/class/net").ok()?.flatten() {
        let address = std::fs::read_to_string(entry.path().join("address")).unwrap_or_default();
        if address.trim().eq_ignore_ascii_case(mac) {
            return entry.file_name().into_string().ok();
        }
    }
    None
}

fn os_err(what: String) -> ErrorMsg {
    ErrorMsg::from_io(&what, &std::io::Error::last_os_error())
}

fn socket() -> Result<OwnedFd, ErrorMsg> {
    // SAFETY: no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket(AF_INET)".into()));
    }
    // SAFETY: a descriptor just returned to us and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> Result<libc::ifreq, ErrorMsg> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(invalid(format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain data (names, integers, sockaddrs); all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; sockaddr is what the ioctls take.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is the structure `request` takes, alive and exclusive for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg as *mut T) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_hwaddr(sock: &OwnedFd, name: &str, mac: &[u8; 6]) -> Result<(), ErrorMsg> {
    let mut req = ifreq(name)?;
    // SAFETY: writing the union's sockaddr member, which SIOCSIFHWADDR reads.
    let hw = unsafe { &mut req.ifr_ifru.ifru_hwaddr };
    hw.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in hw.sa_data.iter_mut().zip(mac) {
        *d = *s as libc::c_char;
    }
    ioctl(sock, libc::SIOCSIFHWADDR, &mut req)
        .map_err(|e| ErrorMsg::from_io(&format!("setting the MAC of {name}"), &e))
}

fn set_addr(
    sock: &OwnedFd,
    name: &str,
    request: libc::c_ulong,
    ip: Ipv4Addr,
) -> Result<(), ErrorMsg> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(ip);
    ioctl(sock, request, &mut req)
        .map_err(|e| ErrorMsg::from_io(&format!("setting {ip} on {name}"), &e))
}

fn add_default_route(sock: &OwnedFd, name: &str, router: Ipv4Addr) -> Result<(), ErrorMsg> {
    let mut dev: Vec<u8> = name.bytes().chain([0]).collect();
    // SAFETY: rtentry is plain data and pointers; all zeroes is valid (a null device).
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(router);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_mut_ptr().cast();
    match ioctl(sock, libc::SIOCADDRT, &mut rt) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => {
            other.map_err(|e| ErrorMsg::from_io(&format!("routing out via {router} on {name}"), &e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_masks_are_read_strictly() {
        assert_eq!(
            parse_mac("52:56:01:75:01:03"),
            Some([0x52, 0x56, 1, 0x75, 1, 3])
        );
        for bad in [
            "52:56:01:75:01",
            "52:56:01:75:01:03:04",
            "52-56-01-75-01-03",
            "5:56:01:75:01:03",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(29), Ipv4Addr::new(255, 255, 255, 248));
    }
}
