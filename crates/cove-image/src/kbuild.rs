//! Guest kernels built from source: Debian's `linux-source-*` package (fetched with apt,
//! cached by content) or a local tree, cove's microVM base config or any other, and
//! fragments on top. A build is keyed by the source, the merged config and the compiler;
//! an unchanged spec finds its kernel in the cache without running make.
//!
//! Under `$XDG_CACHE_HOME/cove/kernel/`:
//! - `src/<deb sha256>/linux-source-*/`: the unpacked tree, once per package;
//! - `obj/<source>/`: make's output directory (`O=`), shared by every config of that
//!   source so a changed fragment recompiles only what it touches; one build at a time
//!   (an `flock` on `.cove-lock`);
//! - `builds/<key>/`: `vmlinux`, `bzImage`, `config`, `build.log`, `kernel.json`.

use crate::apt::Apt;
use crate::error::{ImageError, Result, io_err};
use crate::progress::{Progress, Reporter};
use crate::util;
use cove_diagnose::kernel as dk;
use cove_state::Paths;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The Debian package of kernel source cove's base config is made for.
pub const DEFAULT_SOURCE_PACKAGE: &str = "linux-source-6.1";

/// cove's microVM base config (see `kernels/microvm-x86_64.fragment`).
pub const BASE_CONFIG: &str = include_str!("../../../kernels/microvm-x86_64.config");

/// Fragments shipped with cove, by name.
pub const BUILTIN_FRAGMENTS: &[(&str, &str)] = &[
    ("tun", include_str!("../../../kernels/fragments/tun.config")),
    (
        "postgres",
        include_str!("../../../kernels/fragments/postgres.config"),
    ),
    (
        "netfilter",
        include_str!("../../../kernels/fragments/netfilter.config"),
    ),
];

/// Bump when the build layout or key changes.
const FORMAT: u32 = 1;

/// A kernel to build: `kernel = { build = { … } }` in an image spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelBuild {
    /// A Debian `linux-source-*` package (default [`DEFAULT_SOURCE_PACKAGE`]).
    #[serde(default)]
    pub source: Option<String>,
    /// A local kernel source tree instead of a package (make decides what to rebuild).
    #[serde(default)]
    pub tree: Option<PathBuf>,
    /// `cove` (the built-in microVM base, the default) or a config file.
    #[serde(default)]
    pub base: Option<String>,
    /// Built-in fragment names (`tun`, `postgres`, `netfilter`) or fragment files, in order.
    #[serde(default)]
    pub fragments: Vec<String>,
}

/// How to run a build (not part of the key).
#[derive(Debug, Clone, Default)]
pub struct KernelBuildOptions {
    pub jobs: Option<usize>,
    /// Compile even when `olddefconfig` dropped requested values.
    pub allow_lost: bool,
}

/// A built kernel, as recorded in `kernel.json` beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltKernel {
    pub key: String,
    /// `make kernelrelease`, e.g. `6.1.192-cove`.
    pub release: String,
    /// The source: `<package>_<version>` or `tree:<path>`.
    pub source: String,
    pub compiler: String,
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// sha256 of the bzImage.
    pub sha256: String,
    /// Seconds the compile took.
    pub build_seconds: f64,
    /// Overridden or lost options, one line each (shown again on a cached build).
    pub notes: Vec<String>,
    /// Whether this call found it in the cache.
    #[serde(skip)]
    pub cached: bool,
}

#[derive(Serialize)]
struct Key<'a> {
    format: u32,
    source: &'a str,
    config: &'a str,
    compiler: &'a str,
}

fn kernel_cache(paths: &Paths) -> PathBuf {
    paths.cache.join("kernel")
}

/// Resolves `base`: `cove`/absent is the built-in base; anything else a file.
fn base_text(base: Option<&str>) -> Result<(String, String)> {
    match base {
        None | Some("cove") | Some("microvm") => {
            Ok(("cove:microvm-x86_64".to_owned(), BASE_CONFIG.to_owned()))
        }
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(io_err("cannot read the base config", Path::new(p)))?;
            Ok((p.to_owned(), text))
        }
    }
}

fn fragment_text(f: &str) -> Result<(String, String)> {
    if let Some((name, text)) = BUILTIN_FRAGMENTS.iter().find(|(n, _)| *n == f) {
        return Ok((format!("cove:{name}"), (*text).to_owned()));
    }
    if !f.contains('/') && !f.contains('.') {
        return Err(ImageError::UnknownFragment(f.to_owned()));
    }
    let text =
        std::fs::read_to_string(f).map_err(io_err("cannot read the fragment", Path::new(f)))?;
    Ok((f.to_owned(), text))
}

/// `gcc --version`'s first line: a different compiler is a different kernel.
fn compiler() -> Result<String> {
    let mut cmd = Command::new("gcc");
    cmd.arg("--version");
    let out = cove_util::tool::output(&mut cmd, "scripts/install-deps, or apt-get install gcc")
        .map_err(|tool| ImageError::Step {
            step: "find the compiler".to_owned(),
            tool,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("gcc")
        .to_owned())
}

/// Builds the kernel `spec` describes, or finds it in the cache.
pub fn build_kernel(
    paths: &Paths,
    spec: &KernelBuild,
    opts: &KernelBuildOptions,
    progress: &dyn Progress,
) -> Result<BuiltKernel> {
    let rep = Reporter::new(progress);
    build_kernel_with(paths, spec, opts, &rep)
}

pub(crate) fn build_kernel_with(
    paths: &Paths,
    spec: &KernelBuild,
    opts: &KernelBuildOptions,
    rep: &Reporter,
) -> Result<BuiltKernel> {
    let base = base_text(spec.base.as_deref())?;
    let fragments = spec
        .fragments
        .iter()
        .map(|f| fragment_text(f))
        .collect::<Result<Vec<_>>>()?;
    let merged = dk::merge(&base.1, &fragments).config.to_text();
    let compiler = compiler()?;
    let root = kernel_cache(paths);

    // The source: its identity is cheap (the .deb's cached hash); unpacking is not.
    let (source_id, deb, obj_name) = match (&spec.tree, &spec.source) {
        (Some(_), Some(_)) => return Err(ImageError::KernelSourceConflict),
        (Some(tree), None) => {
            let tree = tree
                .canonicalize()
                .map_err(io_err("cannot find the kernel tree", tree))?;
            let id = format!("tree:{}", tree.display());
            let obj = format!("tree-{}", &util::sha256_bytes(id.as_bytes())[..16]);
            (id, None, obj)
        }
        (None, pkg) => {
            let apt = Apt::new(paths, rep);
            let pkg = pkg.as_deref().unwrap_or(DEFAULT_SOURCE_PACKAGE);
            let (r, deb) = rep.stage("locate kernel source", || apt.get(pkg))?;
            let sha = util::sha256_file_cached(&deb)?;
            let id = format!("{}_{} sha256:{sha}", r.package, r.version);
            (id, Some((deb, sha.clone())), sha[..16].to_owned())
        }
    };
    let key = util::sha256_bytes(
        &serde_json::to_vec(&Key {
            format: FORMAT,
            source: &source_id,
            config: &merged,
            compiler: &compiler,
        })
        .unwrap_or_default(),
    );
    let out = root.join("builds").join(&key[..32]);
    let record = out.join("kernel.json");
    if spec.tree.is_none() {
        if let Some(mut k) = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<BuiltKernel>(&b).ok())
            .filter(|k| k.vmlinux.is_file() && k.bzimage.is_file())
        {
            rep.message(&format!(
                "kernel {} ({}) is up to date in {}",
                k.release,
                &k.key[..16],
                out.display()
            ));
            k.cached = true;
            return Ok(k);
        }
    }

    let src = match (&spec.tree, &deb) {
        (Some(tree), _) => tree
            .canonicalize()
            .map_err(io_err("cannot find the kernel tree", tree))?,
        (None, Some((deb, sha))) => rep.stage("unpack kernel source", || {
            unpack_source(rep, &root.join("src").join(&sha[..16]), deb)
        })?,
        (None, None) => unreachable!("a package source has its .deb"),
    };
    let obj = root.join("obj").join(&obj_name);
    // Configured and verified in a small directory of its own, so a refusal never waits
    // for another config's compile (the compile directory takes one build at a time).
    let conf = root.join("obj").join(format!("{obj_name}.config"));
    util::create_dir_all(&obj)?;
    util::create_dir_all(&conf)?;
    util::create_dir_all(&root.join("builds"))?;
    let staging = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(root.join("builds"))
        .map_err(io_err("cannot create a temporary directory in", &root))?;
    let log = staging.path().join("build.log");
    rep.message(&format!(
        "compiling {source_id} in {} (log: {})",
        obj.display(),
        out.join("build.log").display()
    ));
    let started = Instant::now();
    let cspec = dk::BuildSpec {
        src: src.clone(),
        base: base.clone(),
        fragments: fragments.clone(),
        out: conf.clone(),
        jobs: opts.jobs,
        targets: vec!["bzImage".into()],
        allow_lost: opts.allow_lost,
        log: log.clone(),
    };
    let (merge, lost) = {
        let _lock = lock(&conf)?;
        rep.stage("configure kernel", || dk::configure(&cspec))?
    };
    let _lock = lock(&obj)?;
    let config = obj.join(".config");
    std::fs::copy(conf.join(".config"), &config)
        .map_err(io_err("cannot copy the resolved config to", &config))?;
    let bspec = dk::BuildSpec {
        out: obj.clone(),
        ..cspec
    };
    let mut compiled = 0u64;
    let report = rep.stage("compile kernel", || {
        dk::compile(&bspec, &mut |line| {
            let t = line.trim_start();
            if t.starts_with("CC ") || t.starts_with("AS ") || t.starts_with("LD ") {
                compiled += 1;
                if compiled % 250 == 0 {
                    rep.message(&format!("compile: {compiled} objects ({t})"));
                }
            }
        })
    });
    report.map_err(|e| match e {
        // Point at the log where it will stay.
        dk::BuildError::Make {
            command,
            status,
            tail,
            ..
        } => {
            let kept = root.join("failed.log");
            let _ = std::fs::copy(&log, &kept);
            ImageError::KernelBuild(dk::BuildError::Make {
                command,
                status,
                log: kept,
                tail,
            })
        }
        e => ImageError::KernelBuild(e),
    })?;
    let build_seconds = started.elapsed().as_secs_f64();
    let release = dk::kernel_release(&src, &obj).unwrap_or_else(|| "unknown".into());
    let copy = |from: PathBuf, name: &str| -> Result<()> {
        let to = staging.path().join(name);
        std::fs::copy(&from, &to).map_err(io_err("cannot copy the built kernel file", &from))?;
        Ok(())
    };
    copy(obj.join("vmlinux"), "vmlinux")?;
    copy(obj.join("arch/x86/boot/bzImage"), "bzImage")?;
    copy(obj.join(".config"), "config")?;
    let mut notes: Vec<String> = merge
        .overrides
        .iter()
        .map(|o| {
            format!(
                "override: CONFIG_{} {} ({}) -> {} ({})",
                o.option, o.previous, o.previous_from, o.new, o.fragment
            )
        })
        .collect();
    notes.extend(lost.iter().map(|l| format!("LOST {l}")));
    let k = BuiltKernel {
        key: key.clone(),
        release,
        source: source_id,
        compiler,
        vmlinux: out.join("vmlinux"),
        bzimage: out.join("bzImage"),
        config: out.join("config"),
        log: out.join("build.log"),
        sha256: util::sha256_file(&staging.path().join("bzImage"))?,
        build_seconds,
        notes,
        cached: false,
    };
    util::write_file(
        &staging.path().join("kernel.json"),
        serde_json::to_vec_pretty(&k).unwrap_or_default(),
    )?;
    let tmp = staging.keep();
    if out.exists() {
        let _ = std::fs::remove_dir_all(&out);
    }
    std::fs::rename(&tmp, &out).map_err(io_err("cannot move the built kernel to", &out))?;
    rep.message(&format!(
        "kernel {} built in {build_seconds:.0} s: {}",
        k.release,
        out.display()
    ));
    Ok(k)
}

/// Unpacks `usr/src/linux-source-*.tar.xz` of the package into `dir` once.
fn unpack_source(rep: &Reporter, dir: &Path, deb: &Path) -> Result<PathBuf> {
    let find = |dir: &Path| {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("Makefile").is_file())
    };
    if dir.join(".complete").exists() {
        if let Some(t) = find(dir) {
            return Ok(t);
        }
    }
    let parent = dir.parent().unwrap_or(dir);
    util::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(io_err("cannot create a temporary directory in", parent))?;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(
            "set -o pipefail; dpkg-deb --fsys-tarfile \"$1\" \
             | tar -xO --wildcards './usr/src/linux-source-*.tar.*' | tar -xJ -C \"$2\"",
        )
        .arg("unpack")
        .arg(deb)
        .arg(tmp.path());
    util::run(
        rep,
        &format!("unpack {}", deb.display()),
        &mut cmd,
        "dpkg, tar, xz-utils",
    )?;
    util::write_file(&tmp.path().join(".complete"), b"")?;
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    find(dir).ok_or_else(|| ImageError::NoKernelSource(deb.to_path_buf()))
}

/// Holds an exclusive `flock` on `dir/.cove-lock` until dropped: make's output directory
/// takes one build at a time. The kernel releases it if cove dies.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".cove-lock");
    cove_util::lock::exclusive(&path).map_err(io_err("cannot lock", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_base_and_fragments_resolve_and_unknown_names_are_refused() {
        let (label, text) = base_text(None).unwrap();
        assert_eq!(label, "cove:microvm-x86_64");
        assert!(text.contains("CONFIG_PVH=y"));
        assert!(fragment_text("tun").unwrap().1.contains("CONFIG_TUN=y"));
        assert!(matches!(
            fragment_text("tunn"),
            Err(ImageError::UnknownFragment(_))
        ));
    }
}
