//! Debian packages from the host's apt: which version apt would pick,
//! `apt-get download` into the download cache, and `dpkg-deb -x` into a
//! content-keyed extraction cache.
//!
//! apt itself is slow to start here (about 0.8 s per `apt-cache` call, as the
//! binary package cache is disabled in container images), so the versions
//! apt picks are remembered in `build_cache()/apt-resolve.json`, keyed by the
//! sizes and mtimes of apt's lists and sources. A rebuild of an unchanged
//! image then runs no apt at all.

use crate::error::{ImageError, Result, io_err};
use crate::progress::Reporter;
use crate::util::{self, sha256_file_cached};
use cove_state::Paths;
use cove_util::ToolError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package at the version apt would install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub package: String,
    pub version: String,
    pub arch: String,
}

impl Resolved {
    /// The file name `apt-get download` gives the package (epoch colon escaped).
    pub fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.package,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

#[derive(Default, Serialize, Deserialize)]
struct ResolveCache {
    key: String,
    packages: BTreeMap<String, Resolved>,
}

pub(crate) struct Apt<'a> {
    paths: &'a Paths,
    rep: &'a Reporter<'a>,
}

impl<'a> Apt<'a> {
    pub(crate) fn new(paths: &'a Paths, rep: &'a Reporter<'a>) -> Self {
        Self { paths, rep }
    }

    pub(crate) fn paths(&self) -> &'a Paths {
        self.paths
    }

    fn cache_file(&self) -> PathBuf {
        self.paths.build_cache().join("apt-resolve.json")
    }

    /// Which version apt would download for `package`.
    pub(crate) fn resolve(&self, package: &str) -> Result<Resolved> {
        let key = apt_state_key();
        let mut cache: ResolveCache = std::fs::read(self.cache_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &ResolveCache| c.key == key)
            .unwrap_or_default();
        if let Some(r) = cache.packages.get(package) {
            return Ok(r.clone());
        }
        let mut cmd = Command::new("apt-cache");
        cmd.args(["show", "--no-all-versions", package]);
        let out = match util::run(
            self.rep,
            &format!("apt-cache show {package}"),
            &mut cmd,
            "apt",
        ) {
            Ok(out) => out,
            Err(ImageError::Step {
                tool: ToolError::Failed { output_tail, .. },
                ..
            }) => {
                // Offline or no lists: a package downloaded earlier still serves.
                if let Some(r) = self.newest_download(package) {
                    self.rep.message(&format!(
                        "apt-cache failed; using the downloaded {}",
                        r.deb_name()
                    ));
                    return Ok(r);
                }
                return Err(ImageError::AptUnknown {
                    package: package.to_owned(),
                    output: output_tail,
                });
            }
            Err(e) => return Err(e),
        };
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let (Some(version), Some(arch)) = (field("Version:"), field("Architecture:")) else {
            return Err(ImageError::AptUnknown {
                package: package.to_owned(),
                output: out,
            });
        };
        let r = Resolved {
            // `busybox-static:arm64` is package `busybox-static` of architecture arm64.
            package: package.split(':').next().unwrap_or(package).to_owned(),
            version,
            arch,
        };
        cache.key = key;
        cache.packages.insert(package.to_owned(), r.clone());
        if let Ok(json) = serde_json::to_vec_pretty(&cache) {
            let _ = util::create_dir_all(&self.paths.build_cache());
            let _ = std::fs::write(self.cache_file(), json);
        }
        Ok(r)
    }

    /// The newest `<package>_*.deb` (`<package>_*_<arch>.deb` for `package:arch`) already in
    /// the download cache.
    fn newest_download(&self, package: &str) -> Option<Resolved> {
        let (package, want_arch) = match package.split_once(':') {
            Some((p, a)) => (p, Some(a)),
            None => (package, None),
        };
        let prefix = format!("{package}_");
        std::fs::read_dir(self.paths.downloads())
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(&prefix)?.strip_suffix(".deb")?.to_owned();
                let (version, arch) = rest.rsplit_once('_')?;
                if want_arch.is_some_and(|a| a != arch) {
                    return None;
                }
                let mtime = e.metadata().ok()?.modified().ok()?;
                Some((
                    mtime,
                    Resolved {
                        package: package.to_owned(),
                        version: version.replace("%3a", ":"),
                        arch: arch.to_owned(),
                    },
                ))
            })
            .max_by_key(|(t, _)| *t)
            .map(|(_, r)| r)
    }

    /// The path of the package's .deb in the download cache, downloading it
    /// with `apt-get download` when it is not there yet.
    pub(crate) fn fetch(&self, r: &Resolved) -> Result<PathBuf> {
        let dir = self.paths.downloads();
        let path = dir.join(r.deb_name());
        if std::fs::metadata(&path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            self.rep
                .message(&format!("cached download {}", path.display()));
            return Ok(path);
        }
        util::create_dir_all(&dir)?;
        // Download into a private directory and move the finished file into
        // place, so an interrupted download never looks complete.
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&dir)
            .map_err(io_err("cannot create a temporary directory in", &dir))?;
        // Qualified by architecture, so a foreign one (arm64 on an amd64 host) is what comes.
        let spec = match r.arch.as_str() {
            "all" => format!("{}={}", r.package, r.version),
            arch => format!("{}:{}={}", r.package, arch, r.version),
        };
        let mut cmd = Command::new("apt-get");
        cmd.args(["download", "-q", &spec]).current_dir(tmp.path());
        match util::run(
            self.rep,
            &format!("apt-get download {spec}"),
            &mut cmd,
            "apt",
        ) {
            Ok(_) => {}
            Err(ImageError::Step {
                tool: ToolError::Failed { output_tail, .. },
                ..
            }) => {
                return Err(ImageError::AptDownload {
                    package: spec,
                    dir,
                    output: output_tail,
                });
            }
            Err(e) => return Err(e),
        }
        let got = tmp.path().join(r.deb_name());
        std::fs::rename(&got, &path).map_err(io_err("cannot move the downloaded package", &got))?;
        Ok(path)
    }

    /// Resolves and fetches in one go.
    pub(crate) fn get(&self, package: &str) -> Result<(Resolved, PathBuf)> {
        let r = self.resolve(package)?;
        let path = self.fetch(&r)?;
        Ok((r, path))
    }

    /// Extracts a .deb (`dpkg-deb -x`) into `build_cache()/deb-<sha256>`,
    /// once; later calls return the existing tree.
    pub(crate) fn extract(&self, deb: &Path) -> Result<PathBuf> {
        let hash = sha256_file_cached(deb)?;
        let cache = self.paths.build_cache();
        let dir = cache.join(format!("deb-{}", &hash[..32]));
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        util::create_dir_all(&cache)?;
        let tmp = tempfile::Builder::new()
            .prefix(".extract-")
            .tempdir_in(&cache)
            .map_err(io_err("cannot create a temporary directory in", &cache))?;
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(deb).arg(tmp.path());
        util::run(
            self.rep,
            &format!("dpkg-deb -x {}", deb.display()),
            &mut cmd,
            "dpkg",
        )?;
        util::write_file(&tmp.path().join(".complete"), &hash)?;
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            // Another build extracted the same package meanwhile: use theirs.
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join(".complete").exists() {
                return Err(io_err("cannot move the extracted package to", &dir)(e));
            }
        }
        Ok(dir)
    }
}

/// The `Depends:` field of a .deb, split into package names with their
/// `(= version)` pin if any; alternatives beyond the first are dropped.
pub(crate) fn deb_depends(rep: &Reporter, deb: &Path) -> Result<Vec<(String, Option<String>)>> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-f").arg(deb).arg("Depends");
    let out = util::run(
        rep,
        &format!("dpkg-deb -f {} Depends", deb.display()),
        &mut cmd,
        "dpkg",
    )?;
    Ok(parse_depends(&out))
}

pub(crate) fn parse_depends(field: &str) -> Vec<(String, Option<String>)> {
    field
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?.trim();
            let (name, rest) = match first.split_once('(') {
                Some((n, r)) => (n.trim(), Some(r)),
                None => (first, None),
            };
            if name.is_empty() {
                return None;
            }
            let pin = rest
                .and_then(|r| r.trim().strip_prefix('='))
                .map(|v| v.trim().trim_end_matches(')').trim().to_owned());
            Some((name.to_owned(), pin))
        })
        .collect()
}

/// Changes whenever apt's idea of the candidate versions could change: the
/// downloaded lists, the sources and the pinning preferences.
fn apt_state_key() -> String {
    let mut acc = String::new();
    for dir in [
        "/var/lib/apt/lists",
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences.d",
    ] {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            stamp(&mut acc, &e.path());
        }
    }
    for f in ["/etc/apt/sources.list", "/etc/apt/preferences"] {
        stamp(&mut acc, Path::new(f));
    }
    util::sha256_bytes(acc.as_bytes())
}

fn stamp(acc: &mut String, path: &Path) {
    if let Ok(m) = std::fs::metadata(path) {
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        acc.push_str(&format!("{} {} {mtime}\n", path.display(), m.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_with_pins_and_alternatives() {
        let deps = parse_depends(
            "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2), kmod | busybox, initramfs-tools (>= 0.120)\n",
        );
        assert_eq!(
            deps,
            vec![
                (
                    "linux-image-6.1.0-56-cloud-amd64".to_owned(),
                    Some("6.1.192-2".to_owned())
                ),
                ("kmod".to_owned(), None),
                ("initramfs-tools".to_owned(), None),
            ]
        );
    }

    #[test]
    fn deb_names_escape_the_epoch() {
        let r = Resolved {
            package: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            arch: "amd64".into(),
        };
        assert_eq!(
            r.deb_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }
}
