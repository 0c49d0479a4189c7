//! Kernel modules inside an initramfs: which `*.ko*` files it holds and what each depends on
//! (the `depends=` field of the module's `.modinfo` section).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::{Compression, KernelError};

/// One kernel module found in an initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// Module name as the kernel knows it (`virtio_blk`), dashes normalised to underscores.
    pub name: String,
    /// Path inside the initramfs.
    pub path: String,
    /// Modules it needs loaded first (`depends=`).
    pub depends: Vec<String>,
}

/// The modules in an initramfs, by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InitramfsModules {
    pub modules: BTreeMap<String, ModuleInfo>,
}

/// Normalise a module name: the kernel treats `-` and `_` alike.
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

impl InitramfsModules {
    /// Read an initramfs file (cpio newc, possibly compressed, possibly several concatenated
    /// archives as with early-microcode images).
    pub fn read(path: &Path) -> Result<InitramfsModules, KernelError> {
        let data = std::fs::read(path).map_err(|source| KernelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        InitramfsModules::from_bytes(&data)
    }

    pub fn from_bytes(data: &[u8]) -> Result<InitramfsModules, KernelError> {
        let mut found = InitramfsModules::default();
        let mut cur = data;
        // Each round handles one archive segment; compressed segments are decompressed and
        // looped over again (the kernel's own unpacker accepts the same sequence).
        loop {
            cur = skip_zeros(cur);
            if cur.is_empty() {
                break;
            }
            if cur.starts_with(b"07070") {
                cur = read_cpio(cur, &mut found)?;
            } else if let Some(c) = Compression::detect(cur) {
                let rest = c.decompress(cur)?;
                // What follows a compressed segment cannot be located without the decoder's
                // consumed count; initramfs builders put the compressed archive last.
                let mut tail = rest.as_slice();
                loop {
                    tail = skip_zeros(tail);
                    if !tail.starts_with(b"07070") {
                        break;
                    }
                    tail = read_cpio(tail, &mut found)?;
                }
                break;
            } else {
                return Err(KernelError::BadInitramfs(
                    "neither a cpio archive nor a known compression".into(),
                ));
            }
        }
        Ok(found)
    }

    pub fn contains(&self, module: &str) -> bool {
        self.modules.contains_key(&module_name(module))
    }

    /// Modules (the given one and its transitive dependencies) that are NOT in the initramfs.
    pub fn missing_for(&self, module: &str) -> Vec<String> {
        let mut missing = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![module_name(module)];
        while let Some(m) = todo.pop() {
            if !seen.insert(m.clone()) {
                continue;
            }
            match self.modules.get(&m) {
                Some(info) => todo.extend(info.depends.iter().cloned()),
                None => {
                    missing.insert(m);
                }
            }
        }
        missing.into_iter().collect()
    }

    /// Names of all modules found.
    pub fn names(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }
}

fn skip_zeros(data: &[u8]) -> &[u8] {
    let n = data.iter().take_while(|b| **b == 0).count();
    &data[n..]
}

/// Read one newc archive up to its trailer; return what follows it.
fn read_cpio<'a>(data: &'a [u8], found: &mut InitramfsModules) -> Result<&'a [u8], KernelError> {
    let bad = |e: std::io::Error| KernelError::BadInitramfs(e.to_string());
    let mut input = data;
    loop {
        let mut reader = cpio::NewcReader::new(input).map_err(bad)?;
        if reader.entry().is_trailer() {
            input = reader.finish().map_err(bad)?;
            return Ok(input);
        }
        let name = reader.entry().name().trim_start_matches("./").to_string();
        let file_name = name.rsplit('/').next().unwrap_or(&name).to_string();
        let is_module = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|ext| file_name.ends_with(ext));
        let is_regular = reader.entry().mode() & 0o170000 == 0o100000;
        if is_module && is_regular {
            // The size field comes from the archive, which may be corrupt: no more than the
            // bytes left can follow.
            let claimed = reader.entry().file_size() as usize;
            let mut bytes = Vec::with_capacity(claimed.min(input.len()));
            reader.read_to_end(&mut bytes).map_err(bad)?;
            let info = module_info(&name, &file_name, &bytes)?;
            found.modules.insert(info.name.clone(), info);
        }
        input = reader.finish().map_err(bad)?;
    }
}

/// Parse a (possibly compressed) module's `.modinfo`.
fn module_info(path: &str, file_name: &str, bytes: &[u8]) -> Result<ModuleInfo, KernelError> {
    let elf_bytes = match Compression::detect(bytes) {
        Some(c) => c.decompress(bytes)?,
        None => bytes.to_vec(),
    };
    let stem = file_name.split(".ko").next().unwrap_or(file_name);
    let mut info = ModuleInfo {
        name: module_name(stem),
        path: path.to_string(),
        depends: Vec::new(),
    };
    let elf = goblin::elf::Elf::parse(&elf_bytes)
        .map_err(|e| KernelError::BadModule(path.to_string(), e.to_string()))?;
    for sh in &elf.section_headers {
        if elf.shdr_strtab.get_at(sh.sh_name) != Some(".modinfo") {
            continue;
        }
        let start = sh.sh_offset as usize;
        let end = start.saturating_add(sh.sh_size as usize);
        let Some(section) = elf_bytes.get(start..end) else {
            continue;
        };
        for field in section.split(|b| *b == 0) {
            let field = String::from_utf8_lossy(field);
            if let Some(deps) = field.strip_prefix("depends=") {
                info.depends = deps
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(module_name)
                    .collect();
            } else if let Some(name) = field.strip_prefix("name=") {
                info.name = module_name(name);
            }
        }
    }
    Ok(info)
}
