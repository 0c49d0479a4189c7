//! Which shared libraries the traced processes searched for and never found: the loader (and
//! `dlopen`, as NSS does for `libnss_*.so.2`) tries one directory after another, so a library is
//! missing when every open of its file name failed. Bounded: a trace can open anything.

use std::collections::HashSet;

use cove_proto::{MAX_SUMMARY_LIBS, MAX_SUMMARY_PATHS, MissingLibrary};

/// Most distinct library names remembered as found (past it, new finds are not recorded, so a
/// library could be reported missing that a later process found: the summary says so).
const MAX_FOUND: usize = 4096;

#[derive(Default)]
pub struct Libraries {
    tried: Vec<MissingLibrary>,
    found: HashSet<String>,
}

/// The file name of a path if it looks like a shared library (`libc.so.6`, `libfoo.so`).
pub fn library_name(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    // `.so`, or `.so.` and a version made of digits and dots (not `ld.so.cache`).
    let (_, version) = name.rsplit_once(".so")?;
    let versioned = version
        .strip_prefix('.')
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    (version.is_empty() || versioned).then_some(name)
}

impl Libraries {
    /// Records one open of `path` (a library or not) and whether it succeeded.
    pub fn on_open(&mut self, path: &str, ok: bool) {
        let Some(name) = library_name(path) else {
            return;
        };
        if ok {
            if self.found.len() < MAX_FOUND {
                self.found.insert(name.to_string());
            }
            return;
        }
        if self.found.contains(name) {
            return;
        }
        match self.tried.iter().position(|l| l.name == name) {
            Some(i) => {
                let l = &mut self.tried[i];
                if l.searched.len() < MAX_SUMMARY_PATHS && !l.searched.iter().any(|p| p == path) {
                    l.searched.push(path.to_string());
                }
            }
            None if self.tried.len() < MAX_SUMMARY_LIBS => self.tried.push(MissingLibrary {
                name: name.to_string(),
                searched: vec![path.to_string()],
            }),
            None => {}
        }
    }

    /// Libraries every open of which failed, in the order first looked for.
    pub fn missing(&self) -> Vec<MissingLibrary> {
        self.tried
            .iter()
            .filter(|l| !self.found.contains(&l.name))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_found_after_misses_is_not_missing() {
        let mut l = Libraries::default();
        l.on_open(
            "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6",
            false,
        );
        l.on_open("/lib/x86_64-linux-gnu/libc.so.6", true);
        l.on_open("/lib/x86_64-linux-gnu/libnss_systemd.so.2", false);
        l.on_open("/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2", false);
        l.on_open("/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2", false);
        l.on_open("/etc/passwd", false);
        let m = l.missing();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "libnss_systemd.so.2");
        assert_eq!(
            m[0].searched,
            [
                "/lib/x86_64-linux-gnu/libnss_systemd.so.2",
                "/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2"
            ]
        );
    }

    #[test]
    fn bounded() {
        let mut l = Libraries::default();
        for i in 0..(MAX_SUMMARY_LIBS + 10) {
            for d in 0..(MAX_SUMMARY_PATHS + 5) {
                l.on_open(&format!("/d{d}/lib{i}.so.1"), false);
            }
        }
        let m = l.missing();
        assert_eq!(m.len(), MAX_SUMMARY_LIBS);
        assert!(m.iter().all(|l| l.searched.len() == MAX_SUMMARY_PATHS));
    }

    #[test]
    fn names() {
        assert_eq!(library_name("/a/libz.so.1.2"), Some("libz.so.1.2"));
        assert_eq!(library_name("libx.so"), Some("libx.so"));
        assert_eq!(library_name("/etc/ld.so.cache"), None);
        assert_eq!(library_name("/etc/ld.so.conf"), None);
    }
}
