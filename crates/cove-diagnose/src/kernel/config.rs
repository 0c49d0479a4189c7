//! Kernel `.config` parsing: `CONFIG_X=y|m|"str"|num` and `# CONFIG_X is not set`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KernelError;

/// The value of one kernel option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Value {
    /// `=y`: built in.
    Yes,
    /// `=m`: built as a module.
    Module,
    /// `# CONFIG_X is not set` (or `=n` in a fragment).
    No,
    /// A number (decimal or `0x` hex, kept as written).
    Number(String),
    /// A quoted string, unescaped.
    Str(String),
}

impl Value {
    /// Parse the right-hand side of `CONFIG_X=...`.
    pub fn parse(raw: &str) -> Value {
        match raw {
            "y" => Value::Yes,
            "m" => Value::Module,
            "n" => Value::No,
            _ if raw.starts_with('"') => Value::Str(unquote(raw)),
            _ => Value::Number(raw.to_string()),
        }
    }

    /// Is the option enabled (built in or as a module)?
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Value::No)
    }
}

fn unquote(raw: &str) -> String {
    let inner = raw
        .strip_prefix('"')
        .map(|s| s.strip_suffix('"').unwrap_or(s))
        .unwrap_or(raw);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Value {
    /// The right-hand side as written in a `.config` (`y`, `m`, `n`, `"str"`, `42`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::No => f.write_str("n"),
            Value::Number(n) => f.write_str(n),
            Value::Str(s) => write!(f, "\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        }
    }
}

/// Render one option the way a `.config` or fragment line says it.
pub fn config_line(name: &str, value: &Value) -> String {
    match value {
        Value::No => format!("# CONFIG_{name} is not set"),
        v => format!("CONFIG_{name}={v}"),
    }
}

/// Strip an optional `CONFIG_` prefix: option names are stored without it.
pub fn bare_name(name: &str) -> &str {
    name.strip_prefix("CONFIG_").unwrap_or(name)
}

/// One parsed line of a config or fragment.
fn parse_line(line: &str) -> Option<(&str, Value)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        let name = rest.strip_suffix(" is not set")?;
        return Some((name, Value::No));
    }
    let rest = line.strip_prefix("CONFIG_")?;
    let (name, raw) = rest.split_once('=')?;
    Some((name, Value::parse(raw.trim())))
}

/// A parsed kernel configuration, keyed by option name without the `CONFIG_` prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConfig {
    pub options: BTreeMap<String, Value>,
}

impl KernelConfig {
    /// Parse `.config` or fragment text. Lines that are neither assignments nor
    /// `is not set` comments are ignored; a later assignment wins, as in Kconfig.
    pub fn parse(text: &str) -> KernelConfig {
        let mut options = BTreeMap::new();
        for line in text.lines() {
            if let Some((name, value)) = parse_line(line) {
                options.insert(name.to_string(), value);
            }
        }
        KernelConfig { options }
    }

    /// Assignments in file order, duplicates kept (merge semantics need them).
    pub fn parse_ordered(text: &str) -> Vec<(String, Value)> {
        text.lines()
            .filter_map(parse_line)
            .map(|(n, v)| (n.to_string(), v))
            .collect()
    }

    /// The value of an option (name with or without `CONFIG_`); absent means not set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.options.get(bare_name(name))
    }

    /// The value, with an absent option reported as [`Value::No`].
    pub fn value(&self, name: &str) -> Value {
        self.get(name).cloned().unwrap_or(Value::No)
    }

    pub fn is_enabled(&self, name: &str) -> bool {
        self.get(name).is_some_and(Value::is_enabled)
    }

    /// The kernel release this config was generated for, from the header comment
    /// (`# Linux/x86 6.1.0 Kernel Configuration`), if present.
    pub fn version_from_header(text: &str) -> Option<String> {
        text.lines().take(5).find_map(|l| {
            let l = l.strip_prefix("# Linux/")?;
            let rest = l.split_once(' ')?.1;
            Some(rest.strip_suffix(" Kernel Configuration")?.to_string())
        })
    }

    /// Render as `.config` text (sorted by name).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (name, value) in &self.options {
            s.push_str(&config_line(name, value));
            s.push('\n');
        }
        s
    }
}

/// Where a configuration came from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ConfigSource {
    /// Embedded in a kernel image (IKCONFIG).
    Embedded {
        path: PathBuf,
        image: super::ImageKind,
        elapsed_ms: f64,
    },
    /// A config file (given, or `config-<ver>` beside the kernel).
    File { path: PathBuf },
}

/// Load a kernel configuration from a path that is either a config file or a kernel image.
///
/// For a kernel image, the embedded IKCONFIG is used; when there is none, the
/// `config-<ver>` file next to a `vmlinuz-<ver>` (distribution layout) is used instead.
pub fn load_config(path: &Path) -> Result<(KernelConfig, ConfigSource), KernelError> {
    let data = std::fs::read(path).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if looks_like_config(&data) {
        let text = String::from_utf8_lossy(&data);
        return Ok((
            KernelConfig::parse(&text),
            ConfigSource::File {
                path: path.to_path_buf(),
            },
        ));
    }
    match super::extract_ikconfig(&data) {
        Ok(embedded) => Ok((
            KernelConfig::parse(&embedded.text),
            ConfigSource::Embedded {
                path: path.to_path_buf(),
                image: embedded.kind,
                elapsed_ms: embedded.elapsed.as_secs_f64() * 1000.0,
            },
        )),
        Err(KernelError::NoIkconfig) => {
            let Some(beside) = config_beside(path) else {
                return Err(KernelError::NoIkconfig);
            };
            let text = std::fs::read_to_string(&beside).map_err(|source| KernelError::Io {
                path: beside.clone(),
                source,
            })?;
            Ok((
                KernelConfig::parse(&text),
                ConfigSource::File { path: beside },
            ))
        }
        Err(e) => Err(e),
    }
}

/// The config file next to a kernel: `config-<ver>` beside `vmlinuz-<ver>` (distribution
/// /boot layout), else `kernel.config` (cove's image directories) or `.config` (a build tree).
pub fn config_beside(kernel: &Path) -> Option<PathBuf> {
    let name = kernel.file_name()?.to_str()?;
    let versioned = ["vmlinuz-", "vmlinux-", "bzImage-", "Image-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .map(|ver| kernel.with_file_name(format!("config-{ver}")));
    versioned
        .into_iter()
        .chain(["kernel.config", ".config"].map(|n| kernel.with_file_name(n)))
        .find(|c| c.is_file())
}

/// A text file whose first meaningful lines are config assignments or comments.
fn looks_like_config(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    let Ok(text) = std::str::from_utf8(head) else {
        return false;
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(20)
        .any(|l| l.starts_with("CONFIG_") || l.starts_with("# CONFIG_"))
        || text.starts_with("#\n# Automatically generated file")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.1.0 Kernel Configuration\n#\nCONFIG_SYSVIPC=y\nCONFIG_VIRTIO_BLK=m\n# CONFIG_TUN is not set\nCONFIG_LOCALVERSION=\"-cloud \\\"x\\\"\"\nCONFIG_NR_CPUS=64\nCONFIG_PHYSICAL_START=0x1000000\n";

    #[test]
    fn parses_every_value_kind() {
        let c = KernelConfig::parse(SAMPLE);
        assert_eq!(c.value("SYSVIPC"), Value::Yes);
        assert_eq!(c.value("CONFIG_VIRTIO_BLK"), Value::Module);
        assert_eq!(c.get("TUN"), Some(&Value::No));
        assert_eq!(c.value("ABSENT"), Value::No);
        assert_eq!(c.value("LOCALVERSION"), Value::Str("-cloud \"x\"".into()));
        assert_eq!(c.value("NR_CPUS"), Value::Number("64".into()));
        assert_eq!(c.value("PHYSICAL_START"), Value::Number("0x1000000".into()));
        assert!(!c.is_enabled("TUN"));
        assert!(c.is_enabled("VIRTIO_BLK"));
        assert_eq!(
            KernelConfig::version_from_header(SAMPLE).as_deref(),
            Some("6.1.0")
        );
    }

    #[test]
    fn renders_back_to_config_lines() {
        let c = KernelConfig::parse(SAMPLE);
        let again = KernelConfig::parse(&c.to_text());
        assert_eq!(c, again);
        assert_eq!(config_line("TUN", &Value::No), "# CONFIG_TUN is not set");
        assert_eq!(config_line("SYSVIPC", &Value::Yes), "CONFIG_SYSVIPC=y");
    }

    #[test]
    fn config_files_are_recognised_and_found_beside_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz-6.1.0-test");
        std::fs::write(&kernel, b"MZ not a kernel").unwrap();
        std::fs::write(dir.path().join("config-6.1.0-test"), SAMPLE).unwrap();
        let (c, src) = load_config(&kernel).unwrap();
        assert!(
            matches!(src, ConfigSource::File { ref path } if path.ends_with("config-6.1.0-test"))
        );
        assert!(c.is_enabled("SYSVIPC"));
        let (c2, src2) = load_config(&dir.path().join("config-6.1.0-test")).unwrap();
        // cove's image directory layout.
        let image = dir.path().join("image");
        std::fs::create_dir(&image).unwrap();
        std::fs::write(image.join("vmlinuz"), b"MZ not a kernel").unwrap();
        std::fs::write(image.join("kernel.config"), SAMPLE).unwrap();
        let (c3, _) = load_config(&image.join("vmlinuz")).unwrap();
        assert_eq!(c3, c2);
        assert_eq!(c, c2);
        assert!(matches!(src2, ConfigSource::File { .. }));
    }
}
