//! Kernel modules for the initramfs: find them in a kernel package's
//! `lib/modules/<version>` tree, read each one's dependencies from its
//! `.modinfo` ELF section, and order them so every module is loaded after
//! the modules it needs.
//!
//! Debian's kernel packages ship no `modules.dep` (the postinst runs
//! `depmod`), and running depmod would need the whole tree writable, so the
//! dependencies are read from the modules themselves.

use crate::error::{ImageError, Result, io_err};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The modules cove's init loads in every image: virtio transports, disk,
/// network, console (the agent's serial port), entropy, and vsock. Those a
/// kernel builds in are skipped.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "ext4",
    "vmw_vsock_virtio_transport",
];

/// Modules the initramfs carries but loads only when the kernel command line asks for a shared
/// folder (`cove.share=`): virtiofs (and fuse, its dependency). Absent from a kernel, they are
/// left out and the guest's init says the folder could not be mounted.
pub const SHARE_MODULES: &[&str] = &["virtiofs"];

/// One module chosen for the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module name (`_`, never `-`).
    pub name: String,
    /// The file in the kernel tree (possibly compressed).
    pub path: PathBuf,
    /// Names of the modules it needs, from `.modinfo` `depends=`.
    pub depends: Vec<String>,
}

/// The modules of one kernel tree, by name.
pub struct ModuleIndex {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// `virtio-rng` and `virtio_rng` are the same module to the kernel.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(file: &str) -> Option<&str> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
}

impl ModuleIndex {
    /// Scans `dir` (a `lib/modules/<version>` directory).
    pub fn scan(dir: &Path) -> Result<Self> {
        let mut files = HashMap::new();
        let mut stack = vec![dir.join("kernel")];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot read directory", &d)(e)),
            };
            for e in rd {
                let e = e.map_err(io_err("cannot read directory", &d))?;
                let path = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                } else if let Some(name) = e.file_name().to_str().and_then(module_name) {
                    files.insert(normalize(name), path);
                }
            }
        }
        let builtin = match std::fs::read_to_string(dir.join("modules.builtin")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.rsplit('/').next().and_then(module_name))
                .map(normalize)
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            builtin,
        })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The modules needed to load `wanted` (with their dependencies), in
    /// load order. Built-in modules are skipped; a module that is neither a
    /// file nor built in is an error.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        let mut graph: BTreeMap<String, Module> = BTreeMap::new();
        let mut todo: Vec<String> = wanted.iter().map(|w| normalize(w)).collect();
        while let Some(name) = todo.pop() {
            if graph.contains_key(&name) || self.is_builtin(&name) {
                continue;
            }
            let Some(path) = self.files.get(&name) else {
                return Err(ImageError::ModuleMissing {
                    module: name,
                    dir: self.dir.clone(),
                });
            };
            let info = modinfo(path)?;
            let depends: Vec<String> = info
                .get("depends")
                .map(|d| {
                    d.split(',')
                        .filter(|s| !s.is_empty())
                        .map(normalize)
                        .collect()
                })
                .unwrap_or_default();
            todo.extend(depends.iter().cloned());
            graph.insert(
                name.clone(),
                Module {
                    name,
                    path: path.clone(),
                    depends,
                },
            );
        }
        let deps: BTreeMap<String, Vec<String>> = graph
            .iter()
            .map(|(n, m)| (n.clone(), m.depends.clone()))
            .collect();
        let order = load_order(&deps)?;
        Ok(order.into_iter().filter_map(|n| graph.remove(&n)).collect())
    }
}

/// Orders a dependency graph so that each node comes after everything it
/// depends on (dependencies missing from the graph, i.e. built in, are
/// ignored). Deterministic: ties are broken by name.
pub fn load_order(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        n: &str,
        deps: &BTreeMap<String, Vec<String>>,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        match marks.get(n) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                path.push(n.to_owned());
                return Err(ImageError::ModuleCycle(path.join(" -> ")));
            }
            None => {}
        }
        marks.insert(n.to_owned(), Mark::Visiting);
        path.push(n.to_owned());
        let mut ds: Vec<&String> = deps.get(n).map(|d| d.iter().collect()).unwrap_or_default();
        ds.sort();
        for d in ds {
            if deps.contains_key(d.as_str()) {
                visit(d, deps, marks, path, out)?;
            }
        }
        path.pop();
        marks.insert(n.to_owned(), Mark::Done);
        out.push(n.to_owned());
        Ok(())
    }
    let mut marks = HashMap::new();
    let mut out = Vec::new();
    for n in deps.keys() {
        visit(n, deps, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// The module's bytes, decompressed if the file is `.ko.xz`, `.ko.zst` or `.ko.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(io_err("cannot read", path))?;
    let name = path.to_string_lossy();
    let bad = |e: std::io::Error| ImageError::BadModule {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(bad)?;
    } else if name.ends_with(".zst") {
        out = zstd::decode_all(&raw[..]).map_err(bad)?;
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(bad)?;
    } else {
        out = raw;
    }
    Ok(out)
}

/// The `key=value` pairs of a module's `.modinfo` section.
pub fn modinfo(path: &Path) -> Result<BTreeMap<String, String>> {
    let data = read_module(path)?;
    let bad = |reason: String| ImageError::BadModule {
        path: path.to_path_buf(),
        reason,
    };
    let elf = goblin::elf::Elf::parse(&data).map_err(|e| bad(e.to_string()))?;
    let sh = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".modinfo"))
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let range = sh
        .file_range()
        .filter(|r| r.end <= data.len())
        .ok_or_else(|| bad(".modinfo lies outside the file".into()))?;
    let mut map = BTreeMap::new();
    for entry in data[range].split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some((k, v)) = entry.split_once('=') {
            // Keys such as `alias` repeat; `depends` and `name` do not.
            map.entry(k.to_owned()).or_insert_with(|| v.to_owned());
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn pos(order: &[String], n: &str) -> usize {
        order.iter().position(|x| x == n).unwrap()
    }

    #[test]
    fn dependencies_load_first_and_builtins_are_ignored() {
        let g = graph(&[
            ("virtio_blk", &["virtio", "virtio_ring"]),
            (
                "virtio_pci",
                &["virtio_pci_modern_dev", "virtio", "virtio_ring"],
            ),
            ("virtio_ring", &[]),
            ("virtio", &[]),
            ("virtio_pci_modern_dev", &[]),
            ("ext4", &["jbd2_builtin"]),
        ]);
        let order = load_order(&g).unwrap();
        assert_eq!(order.len(), 6);
        assert!(pos(&order, "virtio") < pos(&order, "virtio_blk"));
        assert!(pos(&order, "virtio_ring") < pos(&order, "virtio_blk"));
        assert!(pos(&order, "virtio_pci_modern_dev") < pos(&order, "virtio_pci"));
        assert_eq!(order, load_order(&g).unwrap(), "order is deterministic");
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        let err = load_order(&g).unwrap_err().to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
    }

    #[test]
    fn module_file_names() {
        assert_eq!(module_name("virtio-rng.ko"), Some("virtio-rng"));
        assert_eq!(module_name("vsock.ko.zst"), Some("vsock"));
        assert_eq!(module_name("vsock.ko.xz"), Some("vsock"));
        assert_eq!(module_name("modules.order"), None);
        assert_eq!(normalize("virtio-rng"), "virtio_rng");
    }
}
