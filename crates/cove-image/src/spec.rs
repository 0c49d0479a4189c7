//! The TOML image spec (`cove image build spec.toml`): load, fill defaults,
//! validate.
//!
//! ```toml
//! name = "pg"
//! base = "debian:bookworm"            # or: rootfs = { dir = "tree" } / { tarball = "root.tar" }
//! packages = ["postgresql", "procps"]
//! size = "2G"                         # bytes, or with K/M/G
//! kernel = "linux-image-cloud-amd64"  # or { deb = "k.deb" } / { bzimage = "bzImage" }
//!                                     # or { build = { fragments = ["tun", "my.config"] } }
//!                                     #   (source = "linux-source-6.1" | tree = "dir", base = "cove" | "file")
//! init = "cove"                       # or "systemd"
//! commands = ["su postgres -c '/usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/data'"]
//!
//! [[files]]
//! src = "pg_hba.conf"
//! dest = "/etc/postgresql/15/main/pg_hba.conf"
//! mode = "0644"
//!
//! [[services]]
//! name = "postgres"
//! user = "postgres"
//! command = "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/data"
//! ```
//! Relative host paths are relative to the spec file's directory.

use crate::error::{ImageError, Result};
use crate::kernel::KernelSource;
use crate::manifest::{InitKind, Service};
use cove_guest::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// A whole image spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub name: String,
    /// The guest architecture (`amd64` or `arm64`). Left out of the serialized spec when
    /// `amd64`, so the ids of images built before arm64 support stay the same.
    #[serde(default, skip_serializing_if = "is_amd64")]
    pub arch: Arch,
    /// `debian:<suite>`; absent when `rootfs` is given.
    #[serde(default)]
    pub base: Option<String>,
    /// A root filesystem made elsewhere, instead of `base`.
    #[serde(default)]
    pub rootfs: Option<RootfsSource>,
    /// Extra Debian packages (with `base`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// The Debian mirror (with `base`).
    #[serde(default)]
    pub mirror: Option<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Shell commands run in the image (chroot) at build time, in order.
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub services: Vec<Service>,
    /// Root filesystem size; picked with headroom when absent.
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub kernel: Option<KernelSpec>,
    #[serde(default)]
    pub init: InitKind,
    /// Kernel modules to load besides cove's defaults.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Requirement profiles (e.g. `postgres`, `tailscale`) the kernel must
    /// pass, besides the ones every image needs; checked after the build.
    #[serde(default)]
    pub kernel_requires: Vec<String>,
}

/// For `skip_serializing_if` in cache keys: `amd64` is what keys said before arm64 existed.
pub(crate) fn is_amd64(arch: &Arch) -> bool {
    *arch == Arch::Amd64
}

/// A root filesystem from a directory or a tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RootfsSource {
    Dir(PathBuf),
    Tarball(PathBuf),
}

/// A host file copied into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub src: PathBuf,
    /// Absolute path in the image.
    pub dest: String,
    /// Octal permission bits such as `"0755"`; the source's when absent.
    #[serde(default)]
    pub mode: Option<String>,
}

/// The kernel, as a package name or `{ deb = … }` / `{ bzimage = … }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KernelSpec {
    Package(String),
    Source(KernelSource),
}

/// A size in bytes, written with a unit as everywhere in cove (`512M`, `2G`; see
/// [`cove_util::ByteSize`]). A bare number is refused: it once meant bytes here and MiB on the
/// command line. Serialized as bytes, which keeps image cache keys stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Number(u64),
    Text(String),
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

impl TryFrom<SizeRepr> for Size {
    type Error = cove_util::SizeError;
    fn try_from(r: SizeRepr) -> Result<Self, Self::Error> {
        let text = match r {
            SizeRepr::Number(n) => n.to_string(),
            SizeRepr::Text(t) => t,
        };
        cove_util::ByteSize::parse(&text).map(|b| Size(b.bytes()))
    }
}

/// The Debian suite of `debian:<suite>`: a name such as `bookworm`,
/// `stable` or `bookworm-backports` (a lowercase letter, then lowercase
/// letters, digits and `-`). It becomes an argument of mmdebstrap, so
/// anything else (`--customize-hook=…`) is refused rather than passed.
pub fn debian_suite(base: &str) -> Option<&str> {
    base.strip_prefix("debian:").filter(|s| {
        s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    })
}

/// A mirror is a URL mmdebstrap fetches from, never an option of it.
fn valid_mirror(mirror: &str) -> bool {
    ["http://", "https://", "file:/"]
        .iter()
        .any(|scheme| mirror.starts_with(scheme))
        && !mirror.contains(char::is_whitespace)
}

impl ImageSpec {
    /// Reads and validates a spec file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ImageError::Spec {
            path: path.to_path_buf(),
            reason: format!("cannot read it: {e}"),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, dir)
    }

    /// Parses spec text (`path` only names it in errors); relative paths are
    /// taken relative to `dir`.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<Self> {
        let err = |reason: String| ImageError::Spec {
            path: path.to_path_buf(),
            reason,
        };
        let mut spec: ImageSpec = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        spec.validate().map_err(err)?;
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for f in &mut spec.files {
            abs(&mut f.src);
        }
        match &mut spec.rootfs {
            Some(RootfsSource::Dir(p)) | Some(RootfsSource::Tarball(p)) => abs(p),
            None => {}
        }
        match &mut spec.kernel {
            Some(KernelSpec::Source(KernelSource::Deb(p) | KernelSource::BzImage(p))) => abs(p),
            Some(KernelSpec::Source(KernelSource::Build(b))) => {
                if let Some(t) = &mut b.tree {
                    abs(t);
                }
                // Files (a name with `/` or `.`), not built-in names like `tun`.
                let file = |s: &mut String| {
                    if s.contains(['/', '.']) && Path::new(s.as_str()).is_relative() {
                        *s = dir.join(s.as_str()).display().to_string();
                    }
                };
                if let Some(base) = &mut b.base {
                    file(base);
                }
                b.fragments.iter_mut().for_each(file);
            }
            _ => {}
        }
        spec.packages.sort();
        spec.packages.dedup();
        Ok(spec)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "name `{}` must be letters, digits, `-`, `_` or `.`",
                self.name
            ));
        }
        match (&self.base, &self.rootfs) {
            (Some(_), Some(_)) => return Err("give either `base` or `rootfs`, not both".into()),
            (None, None) => {
                return Err("give `base = \"debian:bookworm\"` or `rootfs = { dir = … }`".into());
            }
            (Some(b), None) if debian_suite(b).is_none() => {
                return Err(format!(
                    "base `{b}` is not supported; use `debian:<suite>` with a suite name of lowercase \
                     letters, digits and `-`, e.g. `debian:bookworm`"
                ));
            }
            (Some(_), None) if self.mirror.as_deref().is_some_and(|m| !valid_mirror(m)) => {
                return Err(format!(
                    "mirror {:?} is not an http://, https:// or file:/ URL",
                    self.mirror.as_deref().unwrap_or_default()
                ));
            }
            (None, Some(_)) if !self.packages.is_empty() || self.mirror.is_some() => {
                return Err("`packages` and `mirror` need a Debian `base`".into());
            }
            _ => {}
        }
        for f in &self.files {
            let dest = Path::new(&f.dest);
            if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
                return Err(format!(
                    "file dest `{}` must be an absolute path without `..`",
                    f.dest
                ));
            }
            if let Some(m) = &f.mode {
                parse_mode(m)?;
            }
        }
        for s in &self.services {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "service name `{}` must be letters, digits, `-`, `_` or `.`",
                    s.name
                ));
            }
        }
        Ok(())
    }

    /// The kernel source, defaulting to Debian's cloud kernel for the spec's architecture.
    pub fn kernel_source(&self) -> KernelSource {
        match &self.kernel {
            None => KernelSource::for_arch(self.arch),
            Some(KernelSpec::Package(p)) => KernelSource::Package(p.clone()),
            Some(KernelSpec::Source(s)) => s.clone(),
        }
    }

    /// The packages to install into the base: the spec's, plus what the init needs.
    pub fn base_packages(&self) -> Vec<String> {
        let mut p = self.packages.clone();
        if self.init == InitKind::Systemd {
            // Without udev no device unit ever appears and systemd waits
            // 90 s for dev-ttyS0.device before the serial getty (seen here).
            p.extend(["systemd-sysv".into(), "udev".into()]);
        }
        p.sort();
        p.dedup();
        p
    }
}

/// Parses an octal mode such as `"0644"`.
pub fn parse_mode(m: &str) -> Result<u32, String> {
    u32::from_str_radix(m.trim_start_matches("0o"), 8)
        .ok()
        .filter(|v| *v <= 0o7777)
        .ok_or_else(|| format!("mode `{m}` is not an octal permission like \"0644\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ImageSpec> {
        ImageSpec::parse(text, Path::new("spec.toml"), Path::new("/specs"))
    }

    #[test]
    fn full_spec_parses_with_defaults_and_relative_paths() {
        let s = parse(
            r#"
name = "pg"
base = "debian:bookworm"
packages = ["procps", "postgresql", "procps"]
size = "2G"
kernel = { deb = "k.deb" }
init = "systemd"
commands = ["true"]
[[files]]
src = "hba.conf"
dest = "/etc/hba.conf"
mode = "0600"
[[services]]
name = "db"
command = "postgres"
"#,
        )
        .unwrap();
        assert_eq!(s.packages, ["postgresql", "procps"]);
        assert_eq!(s.size, Some(Size(2 << 30)));
        assert_eq!(s.kernel_source(), KernelSource::Deb("/specs/k.deb".into()));
        assert_eq!(s.files[0].src, Path::new("/specs/hba.conf"));
        assert_eq!(s.services[0].user, "root");
        assert_eq!(s.init, InitKind::Systemd);
        assert!(s.base_packages().contains(&"systemd-sysv".to_owned()));
    }

    #[test]
    fn kernel_by_package_name_and_rootfs_dir() {
        let s = parse("name = \"t\"\nrootfs = { dir = \"tree\" }\nkernel = \"linux-image-amd64\"\nsize = \"1M\"\n").unwrap();
        assert_eq!(s.rootfs, Some(RootfsSource::Dir("/specs/tree".into())));
        assert_eq!(
            s.kernel_source(),
            KernelSource::Package("linux-image-amd64".into())
        );
        assert_eq!(s.size, Some(Size(1 << 20)));
        assert_eq!(s.init, InitKind::Cove);
    }

    #[test]
    fn kernel_build_paths_are_relative_to_the_spec() {
        let s = parse(
            "name = \"k\"\nbase = \"debian:bookworm\"\nkernel = { build = { base = \"my.config\", fragments = [\"tun\", \"frag/vsock.config\"] } }\n",
        )
        .unwrap();
        let KernelSource::Build(b) = s.kernel_source() else {
            panic!("not a build: {:?}", s.kernel)
        };
        assert_eq!(b.base.as_deref(), Some("/specs/my.config"));
        assert_eq!(b.fragments, ["tun", "/specs/frag/vsock.config"]);
        assert_eq!(b.source, None);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            (
                "name = \"a\"\nbase = \"debian:bookworm\"\npackges = []\n",
                "packges",
            ),
            ("name = \"a\"\n", "base"),
            ("name = \"a\"\nbase = \"ubuntu:noble\"\n", "debian:<suite>"),
            (
                "name = \"a\"\nbase = \"debian:--customize-hook=touch /pwned\"\n",
                "debian:<suite>",
            ),
            ("name = \"a\"\nbase = \"debian:-x\"\n", "debian:<suite>"),
            (
                "name = \"a\"\nbase = \"debian:bookworm\"\nmirror = \"--hook-dir=/tmp\"\n",
                "not an http",
            ),
            (
                "name = \"a\"\nbase = \"debian:bookworm\"\nsize = \"lots\"\n",
                "not a size",
            ),
            (
                "name = \"a\"\nbase = \"debian:bookworm\"\nsize = 4096\n",
                "has no unit",
            ),
            ("name = \"a b\"\nbase = \"debian:bookworm\"\n", "name"),
            (
                "name = \"a\"\nrootfs = { dir = \"x\" }\npackages = [\"vim\"]\n",
                "Debian `base`",
            ),
            (
                "name = \"a\"\nbase = \"debian:bookworm\"\n[[files]]\nsrc = \"x\"\ndest = \"etc/x\"\n",
                "absolute",
            ),
            (
                "name = \"a\"\nbase = \"debian:bookworm\"\n[[files]]\nsrc = \"x\"\ndest = \"/x\"\nmode = \"rw\"\n",
                "octal",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "`{needle}` not in: {err}");
        }
    }
}
