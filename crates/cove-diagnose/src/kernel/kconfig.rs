//! Why `make olddefconfig` dropped an option: its `depends on` lines (and those of the
//! enclosing `if` and `menu` blocks) read from the source tree's Kconfig files, and which
//! of the symbols they name the resulting config does not have (seed 001: VIRTIO_VSOCKETS
//! vanished because VSOCKETS was off, and nobody said so).
//!
//! Not a Kconfig evaluator: it names the symbols an unmet dependency mentions that are
//! off, which is what a person needs to fix the fragment. The kernel's own parser is C
//! inside the tree and answers only interactively (`menuconfig`), hence this reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{KernelConfig, Value};

/// Where and under which conditions an option is defined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Definition {
    /// The Kconfig file, relative to the tree.
    pub file: PathBuf,
    /// Its own `depends on` expressions, then those of enclosing `if`/`menu` blocks.
    pub depends_on: Vec<String>,
}

/// Every option's definitions in a source tree (only `arch/<arch>` of the architectures).
#[derive(Debug, Default)]
pub struct Kconfig {
    defs: BTreeMap<String, Vec<Definition>>,
}

/// An option's unmet dependencies in a resulting config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmet {
    /// The dependency expressions, joined with `&&`; empty when none are known.
    pub depends_on: String,
    /// Symbols those expressions need that the config has off.
    pub missing: Vec<String>,
    /// The option is not defined anywhere in this tree.
    pub unknown: bool,
}

impl Kconfig {
    /// Reads every `Kconfig*` file of `tree` (skipping other architectures, tools and docs).
    pub fn read(tree: &Path, arch: &str) -> Self {
        let mut k = Kconfig::default();
        let mut stack = vec![tree.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let rel = path.strip_prefix(tree).unwrap_or(&path).to_path_buf();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    let skip = rel.starts_with("Documentation")
                        || rel.starts_with("tools")
                        || rel.starts_with(".git")
                        || (rel.starts_with("arch")
                            && rel.components().count() == 2
                            && !rel.ends_with(arch));
                    if !skip {
                        stack.push(path);
                    }
                } else if e.file_name().to_string_lossy().starts_with("Kconfig") {
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        k.add_file(&rel, &text);
                    }
                }
            }
        }
        k
    }

    /// Parses one Kconfig file's text.
    pub fn add_file(&mut self, file: &Path, text: &str) {
        // Blocks: (is_if_or_menu, expressions it adds).
        let mut blocks: Vec<Vec<String>> = Vec::new();
        let mut current: Option<(String, Vec<String>)> = None;
        let mut in_menu_header = false;
        let mut help_indent: Option<usize> = None;
        let mut lines = text.lines().peekable();
        let flush = |cur: &mut Option<(String, Vec<String>)>,
                     blocks: &[Vec<String>],
                     defs: &mut BTreeMap<String, Vec<Definition>>| {
            if let Some((name, mut deps)) = cur.take() {
                for b in blocks.iter().rev() {
                    deps.extend(b.iter().cloned());
                }
                defs.entry(name).or_default().push(Definition {
                    file: file.to_path_buf(),
                    depends_on: deps,
                });
            }
        };
        while let Some(raw) = lines.next() {
            let mut line = raw.to_owned();
            while line.ends_with('\\') {
                line.pop();
                match lines.next() {
                    Some(next) => line.push_str(next),
                    None => break,
                }
            }
            let indent = indentation(&line);
            let t = line.trim();
            if let Some(h) = help_indent {
                if t.is_empty() || indent > h {
                    continue;
                }
                help_indent = None;
            }
            let t = t.split('#').next().unwrap_or("").trim();
            let (word, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            let rest = rest.trim();
            match word {
                "config" | "menuconfig" => {
                    flush(&mut current, &blocks, &mut self.defs);
                    in_menu_header = false;
                    current = Some((rest.to_owned(), Vec::new()));
                }
                "help" | "---help---" => help_indent = Some(indent),
                "depends" => {
                    let expr = rest.strip_prefix("on").unwrap_or(rest).trim().to_owned();
                    if let Some((_, deps)) = &mut current {
                        deps.push(expr);
                    } else if in_menu_header {
                        if let Some(b) = blocks.last_mut() {
                            b.push(expr);
                        }
                    }
                }
                "if" => {
                    flush(&mut current, &blocks, &mut self.defs);
                    blocks.push(vec![rest.to_owned()]);
                }
                "menu" => {
                    flush(&mut current, &blocks, &mut self.defs);
                    blocks.push(Vec::new());
                    in_menu_header = true;
                }
                "endif" | "endmenu" => {
                    flush(&mut current, &blocks, &mut self.defs);
                    blocks.pop();
                    in_menu_header = false;
                }
                "choice" | "endchoice" | "comment" | "source" | "rsource" | "osource"
                | "orsource" | "mainmenu" => {
                    flush(&mut current, &blocks, &mut self.defs);
                    in_menu_header = false;
                }
                _ => {}
            }
        }
        flush(&mut current, &blocks, &mut self.defs);
    }

    pub fn definitions(&self, option: &str) -> &[Definition] {
        self.defs.get(option).map(Vec::as_slice).unwrap_or(&[])
    }

    /// What keeps `option` from being on in `config`.
    pub fn unmet(&self, option: &str, config: &KernelConfig) -> Unmet {
        let defs = self.definitions(option);
        let Some(def) = defs.first() else {
            return Unmet {
                depends_on: String::new(),
                missing: Vec::new(),
                unknown: true,
            };
        };
        let mut missing = Vec::new();
        for expr in &def.depends_on {
            for sym in positive_symbols(expr) {
                if config.value(&sym) == Value::No && !missing.contains(&sym) {
                    missing.push(sym);
                }
            }
        }
        Unmet {
            depends_on: def
                .depends_on
                .iter()
                .map(|e| {
                    if e.contains("||") {
                        format!("({e})")
                    } else {
                        e.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" && "),
            missing,
            unknown: false,
        }
    }
}

fn indentation(line: &str) -> usize {
    let mut n = 0;
    for c in line.chars() {
        match c {
            ' ' => n += 1,
            '\t' => n = (n / 8 + 1) * 8,
            _ => break,
        }
    }
    n
}

/// Symbols an expression needs on: every identifier not negated with `!` and not a
/// literal (`y`, `m`, `n`, numbers, quoted strings).
fn positive_symbols(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let mut negated = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == b'!' && bytes.get(i + 1) != Some(&b'=') {
            negated = true;
            i += 1;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let literal =
                matches!(word, "y" | "m" | "n") || word.bytes().all(|b| b.is_ascii_digit());
            if !negated && !literal {
                out.push(word.to_owned());
            }
            negated = false;
            continue;
        }
        if c != b' ' && c != b'(' {
            negated = false;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VSOCK: &str = "\
# SPDX-License-Identifier: GPL-2.0-only
config VSOCKETS
\ttristate \"Virtual Socket protocol\"
\thelp
\t  if you say Y here, blah
\t  depends on NOTHING
config VIRTIO_VSOCKETS
\ttristate \"virtio transport for Virtual Sockets\"
\tdepends on VSOCKETS && VIRTIO
\tselect VIRTIO_VSOCKETS_COMMON
\thelp
\t  This module implements a virtio transport.

menu \"Network filesystems\"
\tdepends on NET

if NETWORK_FILESYSTEMS
config 9P_FS
\ttristate \"Plan 9\"
\tdepends on INET && NET_9P && !UML
endif
endmenu
";

    #[test]
    fn the_seed_case_names_vsockets() {
        let mut k = Kconfig::default();
        k.add_file(Path::new("net/vmw_vsock/Kconfig"), VSOCK);
        let cfg = KernelConfig::parse("CONFIG_VIRTIO=y\nCONFIG_NET=y\n");
        let u = k.unmet("VIRTIO_VSOCKETS", &cfg);
        assert_eq!(u.depends_on, "VSOCKETS && VIRTIO");
        assert_eq!(u.missing, vec!["VSOCKETS"]);
        // Help text mentioning "depends on" is not a dependency.
        assert!(k.definitions("VSOCKETS")[0].depends_on.is_empty());
    }

    #[test]
    fn enclosing_if_and_menu_blocks_count_and_negations_do_not() {
        let mut k = Kconfig::default();
        k.add_file(Path::new("fs/Kconfig"), VSOCK);
        let cfg = KernelConfig::parse("CONFIG_INET=y\nCONFIG_NET_9P=y\nCONFIG_NET=y\n");
        let u = k.unmet("9P_FS", &cfg);
        assert_eq!(u.missing, vec!["NETWORK_FILESYSTEMS"]);
        assert!(
            u.depends_on.contains("NETWORK_FILESYSTEMS"),
            "{}",
            u.depends_on
        );
        assert!(k.unmet("NO_SUCH_OPTION", &cfg).unknown);
    }
}
