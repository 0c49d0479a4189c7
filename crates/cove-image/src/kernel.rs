//! The kernel of an image: a Debian kernel package (by name, or a .deb the
//! user names) or a bzImage. Located and hashed first (cheap, for the image
//! id), extracted only when the image must really be built.

use crate::apt::{self, Apt};
use crate::error::{ImageError, Result, io_err};
use crate::kbuild::{BuiltKernel, KernelBuild, KernelBuildOptions};
use crate::progress::Reporter;
use crate::util::sha256_file;
use cove_guest::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Debian's cloud kernel: small, virtio as modules, boots on microvm.
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// The arm64 cloud kernel: boots on QEMU's `virt` (PL011 console, PCI host and PL031 built
/// in; virtio as modules, as on amd64).
pub const DEFAULT_KERNEL_PACKAGE_ARM64: &str = "linux-image-cloud-arm64";

/// Where an image's kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum KernelSource {
    /// A Debian package apt can download; a metapackage such as
    /// `linux-image-cloud-amd64` is followed to the kernel it depends on.
    Package(String),
    /// A kernel .deb on disk.
    Deb(PathBuf),
    /// A bzImage on disk; its modules, if any, are not available, so the
    /// drivers cove needs must be built in.
    BzImage(PathBuf),
    /// A kernel cove builds from source (`{ build = { source, base, fragments } }`):
    /// everything built in, so the image boots it without an initramfs.
    Build(KernelBuild),
}

impl Default for KernelSource {
    fn default() -> Self {
        Self::Package(DEFAULT_KERNEL_PACKAGE.to_owned())
    }
}

impl KernelSource {
    /// Debian's cloud kernel for `arch`.
    pub fn for_arch(arch: Arch) -> Self {
        Self::Package(
            match arch {
                Arch::Amd64 => DEFAULT_KERNEL_PACKAGE,
                Arch::Arm64 => DEFAULT_KERNEL_PACKAGE_ARM64,
            }
            .to_owned(),
        )
    }
}

/// A kernel found and hashed, not yet unpacked.
pub(crate) struct LocatedKernel {
    pub(crate) file: PathBuf,
    pub(crate) is_deb: bool,
    pub(crate) sha256: String,
    /// The build, for a kernel cove compiled.
    pub(crate) built: Option<BuiltKernel>,
}

/// A kernel ready to go into an image.
pub(crate) struct PreparedKernel {
    pub(crate) bzimage: PathBuf,
    /// `lib/modules/<version>` of the package, when there is one.
    pub(crate) modules_dir: Option<PathBuf>,
    pub(crate) version: String,
    pub(crate) config: Option<PathBuf>,
}

pub(crate) fn locate(apt: &Apt, rep: &Reporter, source: &KernelSource) -> Result<LocatedKernel> {
    match source {
        KernelSource::Package(name) => {
            let (r, deb) = apt.get(name)?;
            // A metapackage names the real kernel package, pinned, among its
            // dependencies; a kernel package itself depends on no other kernel.
            let target = apt::deb_depends(rep, &deb)?
                .into_iter()
                .find(|(dep, _)| dep.starts_with("linux-image-"));
            let deb = match target {
                Some((dep, Some(version))) => {
                    let real = apt::Resolved {
                        package: dep,
                        version,
                        arch: r.arch.clone(),
                    };
                    apt.fetch(&real)?
                }
                Some((dep, None)) => apt.get(&dep)?.1,
                None => deb,
            };
            let sha256 = crate::util::sha256_file_cached(&deb)?;
            Ok(LocatedKernel {
                file: deb,
                is_deb: true,
                sha256,
                built: None,
            })
        }
        KernelSource::Deb(path) => Ok(LocatedKernel {
            sha256: sha256_file(path)?,
            file: path.clone(),
            is_deb: true,
            built: None,
        }),
        KernelSource::BzImage(path) => Ok(LocatedKernel {
            sha256: sha256_file(path)?,
            file: path.clone(),
            is_deb: false,
            built: None,
        }),
        KernelSource::Build(spec) => {
            let k = crate::kbuild::build_kernel_with(
                apt.paths(),
                spec,
                &KernelBuildOptions::default(),
                rep,
            )?;
            Ok(LocatedKernel {
                file: k.bzimage.clone(),
                is_deb: false,
                sha256: k.sha256.clone(),
                built: Some(k),
            })
        }
    }
}

pub(crate) fn prepare(apt: &Apt, k: &LocatedKernel) -> Result<PreparedKernel> {
    if let Some(b) = &k.built {
        return Ok(PreparedKernel {
            bzimage: b.bzimage.clone(),
            modules_dir: None,
            version: b.release.clone(),
            config: Some(b.config.clone()),
        });
    }
    if !k.is_deb {
        let data = std::fs::read(&k.file).map_err(io_err("cannot read", &k.file))?;
        return Ok(PreparedKernel {
            bzimage: k.file.clone(),
            modules_dir: None,
            version: bzimage_version(&data).unwrap_or_else(|| "unknown".to_owned()),
            config: None,
        });
    }
    let tree = apt.extract(&k.file)?;
    let boot = tree.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vmlinuz-"))
        .ok_or_else(|| ImageError::NoKernelInPackage {
            deb: k.file.clone(),
        })?;
    let version = vmlinuz.trim_start_matches("vmlinuz-").to_owned();
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d).join(&version))
        .find(|d| d.is_dir());
    let config = Some(boot.join(format!("config-{version}"))).filter(|p| p.is_file());
    Ok(PreparedKernel {
        bzimage: boot.join(vmlinuz),
        modules_dir,
        version,
        config,
    })
}

/// The version string a bzImage carries in its boot header (`kernel_version`).
pub fn bzimage_version(bz: &[u8]) -> Option<String> {
    if bz.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes(bz.get(0x20e..0x210)?.try_into().ok()?) as usize + 0x200;
    let s = bz.get(ptr..)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    Some(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Whether `path` names a file (used to tell `--kernel PATH` from a package name).
/// `cove` is a kernel cove builds from Debian's source with its microVM base config,
/// `cove+tun+postgres` the same with built-in fragments.
pub fn kernel_source_from_arg(arg: &str) -> KernelSource {
    if let Some(rest) = arg
        .strip_prefix("cove")
        .filter(|r| r.is_empty() || r.starts_with('+'))
    {
        return KernelSource::Build(KernelBuild {
            fragments: rest
                .split('+')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
            ..KernelBuild::default()
        });
    }
    let p = Path::new(arg);
    if p.is_file() {
        if arg.ends_with(".deb") {
            KernelSource::Deb(p.to_path_buf())
        } else {
            KernelSource::BzImage(p.to_path_buf())
        }
    } else {
        KernelSource::Package(arg.to_owned())
    }
}
