//! File modes from a guest.
//!
//! A copy belongs to the user who made it, not to the guest's owner: run as root, a kept setuid
//! bit would let a guest plant a setuid-root binary on the host, and a kept group/world write
//! bit would let other local users change what the user copied out.

/// Bits a file copied out of a guest never keeps: setuid, setgid, sticky, and write permission
/// for group and others. Used by `cove cp VM:…` and `cove disk get`, and as the unpacker's mask.
pub const STRIPPED_MODE_BITS: u32 = 0o7022;

/// The mode a host copy of a guest file gets.
///
/// ```
/// assert_eq!(cove_untrusted::host_mode(0o104777), 0o755);
/// assert_eq!(cove_untrusted::host_mode(0o640), 0o640);
/// ```
pub fn host_mode(guest_mode: u32) -> u32 {
    guest_mode & 0o7777 & !STRIPPED_MODE_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_bits_and_foreign_write_are_stripped() {
        assert_eq!(host_mode(0o4755), 0o755);
        assert_eq!(host_mode(0o2775), 0o755);
        assert_eq!(host_mode(0o1777), 0o755);
        assert_eq!(host_mode(0o666), 0o644);
        assert_eq!(host_mode(0o600), 0o600);
        assert_eq!(host_mode(0o170_000 | 0o700), 0o700, "file type bits go too");
    }
}
