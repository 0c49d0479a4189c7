//! `cove ldd`: an ELF file's shared-library dependencies resolved the way the guest's dynamic
//! loader would, read from the files themselves (goblin), so it works in a guest with no `ldd`
//! and for a binary whose loader is missing. Never runs the binary.
//!
//! Search order per DT_NEEDED name, as glibc's `ld.so` does it (LD_LIBRARY_PATH not applied:
//! the question is what the program gets when started normally):
//! 1. a name with a `/` is a path;
//! 2. DT_RPATH of the object needing it, then of the executable, unless the object has
//!    DT_RUNPATH;
//! 3. DT_RUNPATH of the object needing it;
//! 4. the directories of `/etc/ld.so.conf` and its `include`s (what `ldconfig` puts in the
//!    cache);
//! 5. the default directories: the architecture's multiarch directories, `lib64` for 64-bit,
//!    then `/lib` and `/usr/lib`.
//!
//! A candidate of another class or machine (a 32-bit library in a 64-bit search) is skipped,
//! as the loader skips it. `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::PathBuf;

use cove_proto::{ErrorKind, ErrorMsg, LddEntry, LddReport, StreamMsg};
use goblin::elf::Elf;

use crate::mux::AgentStream;

/// Most libraries in one dependency tree, and the largest ELF file read.
const MAX_LIBS: usize = 1024;
const MAX_ELF: u64 = 512 << 20;
/// Most ld.so.conf files followed through `include`s (a loop of includes ends here).
const MAX_CONF_FILES: usize = 256;

pub fn run(stream: AgentStream, path: &str) {
    let res = Resolver::new(PathBuf::from("/")).resolve(path);
    match res {
        Ok(report) => {
            let s = stream.sender();
            if s.msg(&StreamMsg::Started { pid: None }).is_ok()
                && s.msg(&StreamMsg::Ldd(report)).is_ok()
            {
                stream.finish();
            }
        }
        Err(e) => stream.fail(e),
    }
}

/// Class and machine: what a library must share with the program to be loadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    is_64: bool,
    machine: u16,
}

struct Object {
    kind: Kind,
    interpreter: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

pub struct Resolver {
    /// The guest's root: `/` in the agent, a directory tree in tests.
    root: PathBuf,
}

fn io_err(what: &str, e: &std::io::Error) -> ErrorMsg {
    ErrorMsg::from_io(what, e)
}

impl Resolver {
    pub fn new(root: PathBuf) -> Self {
        Resolver { root }
    }

    fn host(&self, guest: &str) -> PathBuf {
        self.root.join(guest.trim_start_matches('/'))
    }

    fn read_elf(&self, guest: &str) -> Result<Object, ErrorMsg> {
        let host = self.host(guest);
        let meta = std::fs::metadata(&host).map_err(|e| io_err(guest, &e))?;
        if meta.len() > MAX_ELF {
            return Err(ErrorMsg::new(
                ErrorKind::InvalidRequest,
                format!("{guest} is larger than {} MiB", MAX_ELF >> 20),
            ));
        }
        let bytes = std::fs::read(&host).map_err(|e| io_err(guest, &e))?;
        let elf = Elf::parse(&bytes).map_err(|e| {
            ErrorMsg::new(
                ErrorKind::InvalidRequest,
                format!("{guest} is not an ELF file this agent can read: {e}"),
            )
        })?;
        let split = |v: &[&str]| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(':'))
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        Ok(Object {
            kind: Kind {
                is_64: elf.is_64,
                machine: elf.header.e_machine,
            },
            interpreter: elf.interpreter.map(String::from),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            rpath: split(&elf.rpaths),
            runpath: split(&elf.runpaths),
        })
    }

    /// Whether `guest` is a loadable ELF of `kind` (a cheap look at the header only).
    fn matches(&self, guest: &str, kind: Kind) -> bool {
        let mut head = [0u8; 20];
        let ok = std::fs::File::open(self.host(guest))
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok();
        if !ok || &head[..4] != b"\x7fELF" {
            return false;
        }
        let is_64 = head[4] == 2;
        let machine = if head[5] == 2 {
            u16::from_be_bytes([head[18], head[19]])
        } else {
            u16::from_le_bytes([head[18], head[19]])
        };
        Kind { is_64, machine } == kind
    }

    /// Resolves the whole dependency tree of `path`.
    pub fn resolve(&self, path: &str) -> Result<LddReport, ErrorMsg> {
        if !path.starts_with('/') {
            return Err(ErrorMsg::new(
                ErrorKind::InvalidRequest,
                format!("`{path}` is not an absolute path in the guest"),
            ));
        }
        let exe = self.read_elf(path)?;
        let conf_dirs = self.ld_so_conf();
        let defaults = default_dirs(exe.kind);
        let mut report = LddReport {
            path: path.to_string(),
            interpreter_found: exe
                .interpreter
                .as_deref()
                .is_some_and(|i| self.host(i).exists()),
            interpreter: exe.interpreter.clone(),
            machine: machine_name(exe.kind),
            libraries: Vec::new(),
        };
        let exe_rpath: Vec<String> = exe
            .rpath
            .iter()
            .map(|d| expand(d, path, exe.kind))
            .collect();
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<(String, Object)> = VecDeque::from([(path.to_string(), exe)]);
        while let Some((who, obj)) = queue.pop_front() {
            for name in &obj.needed {
                if !seen.insert(name.clone()) || report.libraries.len() >= MAX_LIBS {
                    continue;
                }
                let mut dirs: Vec<String> = Vec::new();
                if obj.runpath.is_empty() {
                    dirs.extend(obj.rpath.iter().map(|d| expand(d, &who, obj.kind)));
                    dirs.extend(exe_rpath.iter().cloned());
                }
                dirs.extend(obj.runpath.iter().map(|d| expand(d, &who, obj.kind)));
                dirs.extend(conf_dirs.iter().cloned());
                dirs.extend(defaults.iter().cloned());
                let mut unique = HashSet::new();
                dirs.retain(|d| unique.insert(d.clone()));
                let found = if name.contains('/') {
                    let p = if name.starts_with('/') {
                        name.clone()
                    } else {
                        join(&parent(&who), name)
                    };
                    self.matches(&p, obj.kind).then_some(p)
                } else {
                    dirs.iter()
                        .map(|d| join(d, name))
                        .find(|p| self.matches(p, obj.kind))
                };
                if let Some((p, Ok(lib))) = found.as_ref().map(|p| (p, self.read_elf(p))) {
                    queue.push_back((p.clone(), lib));
                }
                report.libraries.push(LddEntry {
                    name: name.clone(),
                    searched: if found.is_none() { dirs } else { Vec::new() },
                    path: found,
                    needed_by: who.clone(),
                });
            }
        }
        Ok(report)
    }

    /// Directories of /etc/ld.so.conf, following `include` globs.
    fn ld_so_conf(&self) -> Vec<String> {
        let mut dirs = Vec::new();
        let mut files = vec!["/etc/ld.so.conf".to_string()];
        let mut read = 0;
        while let Some(f) = files.pop() {
            read += 1;
            if read > MAX_CONF_FILES {
                break;
            }
            let Ok(text) = std::fs::read_to_string(self.host(&f)) else {
                continue;
            };
            let mut included = Vec::new();
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if let Some(pattern) = line.strip_prefix("include") {
                    for p in pattern.split_whitespace() {
                        let p = if p.starts_with('/') {
                            p.to_string()
                        } else {
                            join(&parent(&f), p)
                        };
                        included.extend(self.glob(&p));
                    }
                } else if line.starts_with("hwcap") || line.is_empty() {
                    continue;
                } else {
                    dirs.extend(
                        line.split([':', ',', ' ', '\t'])
                            .filter(|d| d.starts_with('/'))
                            .map(|d| d.trim_end_matches('/').to_string()),
                    );
                }
            }
            // Depth first, in order: what ldconfig does.
            files.extend(included.into_iter().rev());
        }
        dirs
    }

    /// A glob with `*`/`?` in its last component (what ld.so.conf includes use), sorted.
    fn glob(&self, pattern: &str) -> Vec<String> {
        let dir = parent(pattern);
        let name = pattern.rsplit('/').next().unwrap_or("");
        if !name.contains(['*', '?']) {
            return vec![pattern.to_string()];
        }
        let mut out: Vec<String> = std::fs::read_dir(self.host(&dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|f| wildcard(name.as_bytes(), f.as_bytes()))
            .map(|f| join(&dir, &f))
            .collect();
        out.sort();
        out
    }
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

fn parent(p: &str) -> String {
    match p.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((d, _)) => d.into(),
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// Debian's multiarch triplet and the loader's `$PLATFORM` for a class and machine.
fn triplet(kind: Kind) -> Option<(&'static str, &'static str)> {
    use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_RISCV, EM_X86_64};
    Some(match (kind.machine, kind.is_64) {
        (EM_X86_64, true) => ("x86_64-linux-gnu", "x86_64"),
        (EM_AARCH64, true) => ("aarch64-linux-gnu", "aarch64"),
        (EM_386, false) => ("i386-linux-gnu", "i686"),
        (EM_ARM, false) => ("arm-linux-gnueabihf", "v7l"),
        (EM_RISCV, true) => ("riscv64-linux-gnu", "riscv64"),
        _ => return None,
    })
}

fn machine_name(kind: Kind) -> String {
    match triplet(kind) {
        Some((t, _)) => t.split('-').next().unwrap_or(t).to_string(),
        None => format!(
            "machine {} ({}-bit)",
            kind.machine,
            if kind.is_64 { 64 } else { 32 }
        ),
    }
}

fn default_dirs(kind: Kind) -> Vec<String> {
    let mut d = Vec::new();
    if let Some((t, _)) = triplet(kind) {
        d.push(format!("/lib/{t}"));
        d.push(format!("/usr/lib/{t}"));
    }
    if kind.is_64 {
        d.push("/lib64".into());
        d.push("/usr/lib64".into());
    }
    d.push("/lib".into());
    d.push("/usr/lib".into());
    d
}

/// Expands `$ORIGIN` (the directory of the object whose entry it is), `$LIB` and `$PLATFORM`.
fn expand(dir: &str, object: &str, kind: Kind) -> String {
    let origin = parent(object);
    let (lib, platform) = match triplet(kind) {
        Some((t, p)) => (format!("lib/{t}"), p.to_string()),
        None => ("lib".into(), String::new()),
    };
    dir.replace("${ORIGIN}", &origin)
        .replace("$ORIGIN", &origin)
        .replace("${LIB}", &lib)
        .replace("$LIB", &lib)
        .replace("${PLATFORM}", &platform)
        .replace("$PLATFORM", &platform)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn host_ls() -> &'static str {
        ["/usr/bin/ls", "/bin/ls"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the host has ls")
    }

    #[test]
    fn resolves_a_host_binary_like_the_loader() {
        let r = Resolver::new(PathBuf::from("/"))
            .resolve(host_ls())
            .unwrap();
        let libc = r.libraries.iter().find(|l| l.name == "libc.so.6").unwrap();
        let path = libc.path.as_deref().expect("libc found");
        assert!(Path::new(path).exists(), "{path}");
        assert!(r.interpreter_found);
        assert_eq!(r.machine, "x86_64");
    }

    #[test]
    fn a_guest_tree_without_its_libraries_names_each_missing_one_and_where_it_looked() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
        std::fs::create_dir_all(root.join("opt/app/lib")).unwrap();
        std::fs::copy(host_ls(), root.join("usr/bin/ls")).unwrap();
        std::fs::write(
            root.join("etc/ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/ld.so.conf.d/app.conf"),
            "# app\n/opt/app/lib\n",
        )
        .unwrap();
        // libc exists, but in a directory only ld.so.conf names.
        let host_libc = Resolver::new(PathBuf::from("/"))
            .resolve(host_ls())
            .unwrap()
            .libraries
            .into_iter()
            .find(|l| l.name == "libc.so.6")
            .and_then(|l| l.path)
            .unwrap();
        std::fs::copy(&host_libc, root.join("opt/app/lib/libc.so.6")).unwrap();
        let r = Resolver::new(root.to_path_buf())
            .resolve("/usr/bin/ls")
            .unwrap();
        let libc = r.libraries.iter().find(|l| l.name == "libc.so.6").unwrap();
        assert_eq!(libc.path.as_deref(), Some("/opt/app/lib/libc.so.6"));
        assert!(!r.interpreter_found);
        let missing: Vec<&LddEntry> = r.libraries.iter().filter(|l| l.path.is_none()).collect();
        assert!(!missing.is_empty(), "{r:?}");
        for m in missing {
            assert_eq!(m.searched[0], "/opt/app/lib");
            assert!(m.searched.contains(&"/lib/x86_64-linux-gnu".to_string()));
        }
    }

    #[test]
    fn origin_and_wildcards() {
        let k = Kind {
            is_64: true,
            machine: goblin::elf::header::EM_X86_64,
        };
        assert_eq!(
            expand("$ORIGIN/../lib", "/opt/a/bin/x", k),
            "/opt/a/bin/../lib"
        );
        assert_eq!(expand("/x/$LIB", "/b", k), "/x/lib/x86_64-linux-gnu");
        assert!(wildcard(b"*.conf", b"libc.conf"));
        assert!(!wildcard(b"*.conf", b"libc.conf.bak"));
    }

    #[test]
    fn not_an_elf_is_a_clear_error() {
        let e = Resolver::new(PathBuf::from("/"))
            .resolve("/etc/hostname")
            .unwrap_err();
        assert!(
            e.message.contains("not an ELF") || e.kind == ErrorKind::NotFound,
            "{e:?}"
        );
        let e = Resolver::new(PathBuf::from("/"))
            .resolve("bin/ls")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
    }
}
