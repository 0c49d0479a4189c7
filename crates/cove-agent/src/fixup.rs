//! After a restore from a snapshot: set the clock from the host, reseed the kernel's RNG with
//! the host's entropy, and take the clone's own hostname and machine-id. Every VM restored from
//! one snapshot otherwise shares the snapshot's clock, CRNG state and identity.

use cove_proto::{ErrorKind, ErrorMsg, FixupRequest};

use crate::mux::AgentStream;

/// `_IOW('R', 0x03, int[2])` and `_IO('R', 0x07)` from <linux/random.h>.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

pub fn run(stream: AgentStream, req: FixupRequest) {
    stream.answer(apply(&req));
}

fn apply(req: &FixupRequest) -> Result<(), ErrorMsg> {
    if req.entropy.len() > FixupRequest::MAX_ENTROPY {
        return Err(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            format!("over {} bytes of entropy", FixupRequest::MAX_ENTROPY),
        ));
    }
    set_clock(req.unix_nanos)?;
    reseed(&req.entropy)?;
    if let Some(name) = &req.hostname {
        set_hostname(name)?;
    }
    if let Some(id) = &req.machine_id {
        set_machine_id(id)?;
    }
    Ok(())
}

fn os_err(what: &str) -> ErrorMsg {
    ErrorMsg::from_io(what, &std::io::Error::last_os_error())
}

fn set_clock(unix_nanos: u64) -> Result<(), ErrorMsg> {
    let ts = libc::timespec {
        tv_sec: (unix_nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec by reference.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(os_err("clock_settime"));
    }
    Ok(())
}

fn reseed(entropy: &[u8]) -> Result<(), ErrorMsg> {
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| ErrorMsg::from_io("open /dev/urandom", &e))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // SAFETY: `info` is a complete rand_pool_info of the size it declares, alive for the call.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        return Err(os_err("RNDADDENTROPY"));
    }
    // SAFETY: takes no argument.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(os_err("RNDRESEEDCRNG"));
    }
    Ok(())
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn set_hostname(name: &str) -> Result<(), ErrorMsg> {
    if !valid_hostname(name) {
        return Err(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            "a hostname is 1-63 letters, digits or '-'",
        ));
    }
    // SAFETY: pointer and length of a live buffer.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(os_err("sethostname"));
    }
    // The clone's root disk is its own: its next boot keeps the name.
    std::fs::write("/etc/hostname", format!("{name}\n"))
        .map_err(|e| ErrorMsg::from_io("write /etc/hostname", &e))
}

fn set_machine_id(id: &str) -> Result<(), ErrorMsg> {
    if id.len() != 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            "a machine-id is 32 lowercase hex digits",
        ));
    }
    std::fs::write("/etc/machine-id", format!("{id}\n"))
        .map_err(|e| ErrorMsg::from_io("write /etc/machine-id", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("web-2"));
        assert!(!valid_hostname("a.b"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname(&"a".repeat(64)));
        assert!(!valid_hostname("x\u{1b}[2J"));
    }
}
