//! The system calls the tracer watches, per architecture, and errno names.
//!
//! Only calls that name a path (or an address) are watched: those are what a program "asked the
//! kernel for and did not get". Numbers come from each architecture's unistd table; arm64 has
//! only the `*at` forms (no `open`, `stat`, `access`), so its table is shorter.

/// How a watched call names what it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A NUL-terminated path in argument `n`.
    Path(usize),
    /// A path in argument `path`, relative to the directory descriptor in argument `dirfd`.
    PathAt { dirfd: usize, path: usize },
    /// A `struct sockaddr` in argument 1 of length argument 2 (connect, bind).
    SockAddr,
}

/// A watched system call.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    pub name: &'static str,
    pub arg: Arg,
}

const fn w(name: &'static str, arg: Arg) -> Watched {
    Watched { name, arg }
}

const AT: Arg = Arg::PathAt { dirfd: 0, path: 1 };

#[cfg(target_arch = "x86_64")]
const TABLE: &[(u64, Watched)] = &[
    (2, w("open", Arg::Path(0))),
    (4, w("stat", Arg::Path(0))),
    (6, w("lstat", Arg::Path(0))),
    (21, w("access", Arg::Path(0))),
    (42, w("connect", Arg::SockAddr)),
    (49, w("bind", Arg::SockAddr)),
    (59, w("execve", Arg::Path(0))),
    (80, w("chdir", Arg::Path(0))),
    (83, w("mkdir", Arg::Path(0))),
    (84, w("rmdir", Arg::Path(0))),
    (85, w("creat", Arg::Path(0))),
    (87, w("unlink", Arg::Path(0))),
    (89, w("readlink", Arg::Path(0))),
    (137, w("statfs", Arg::Path(0))),
    (257, w("openat", AT)),
    (258, w("mkdirat", AT)),
    (262, w("newfstatat", AT)),
    (263, w("unlinkat", AT)),
    (267, w("readlinkat", AT)),
    (269, w("faccessat", AT)),
    (322, w("execveat", AT)),
    (332, w("statx", AT)),
    (437, w("openat2", AT)),
    (439, w("faccessat2", AT)),
];

#[cfg(target_arch = "aarch64")]
const TABLE: &[(u64, Watched)] = &[
    (34, w("mkdirat", AT)),
    (35, w("unlinkat", AT)),
    (43, w("statfs", Arg::Path(0))),
    (48, w("faccessat", AT)),
    (49, w("chdir", Arg::Path(0))),
    (56, w("openat", AT)),
    (78, w("readlinkat", AT)),
    (79, w("newfstatat", AT)),
    (200, w("bind", Arg::SockAddr)),
    (203, w("connect", Arg::SockAddr)),
    (221, w("execve", Arg::Path(0))),
    (281, w("execveat", AT)),
    (291, w("statx", AT)),
    (437, w("openat2", AT)),
    (439, w("faccessat2", AT)),
];

/// The watched call with this number on this architecture.
pub fn lookup(nr: u64) -> Option<Watched> {
    TABLE.iter().find(|(n, _)| *n == nr).map(|(_, w)| *w)
}

/// Whether a call of this name opens a file (so a success means the file was found).
pub fn is_open(name: &str) -> bool {
    matches!(name, "open" | "openat" | "openat2" | "creat")
}

/// errno's symbolic name (the same numbers on every Linux architecture cove targets).
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::EISCONN => "EISCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("E{e}"),
    };
    name.to_string()
}

/// Renders a `struct sockaddr` read from a tracee: a unix path, `ip:port`, or the family.
pub fn sockaddr_text(b: &[u8]) -> Option<String> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as i32;
    match family {
        libc::AF_UNIX => {
            let path = b.get(2..)?;
            if path.first() == Some(&0) {
                // Abstract socket: a leading NUL, then a name that is not NUL-terminated.
                let name = &path[1..];
                return Some(format!("@{}", String::from_utf8_lossy(name)));
            }
            let end = path.iter().position(|c| *c == 0).unwrap_or(path.len());
            Some(String::from_utf8_lossy(&path[..end]).into_owned())
        }
        libc::AF_INET => {
            let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
            let ip = std::net::Ipv4Addr::new(*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?);
            Some(format!("{ip}:{port}"))
        }
        libc::AF_INET6 => {
            let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
            let octets: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(octets)))
        }
        f => Some(format!("(address family {f})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_the_loader_calls() {
        // The dynamic loader opens libraries with openat on every architecture.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(lookup(257).map(|w| w.name), Some("openat"));
        assert!(lookup(u64::MAX).is_none());
        assert!(is_open("openat") && !is_open("newfstatat"));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(4000), "E4000");
    }

    #[test]
    fn sockaddrs() {
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/x.sock\0\0\0");
        assert_eq!(sockaddr_text(&un).unwrap(), "/run/x.sock");
        let mut v4 = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v4.extend_from_slice(&[0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sockaddr_text(&v4).unwrap(), "127.0.0.1:8080");
        assert!(sockaddr_text(&[1]).is_none());
    }
}
