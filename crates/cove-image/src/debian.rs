//! Root filesystem trees for spec-built images: a Debian base from
//! mmdebstrap (debootstrap as a fallback), cached as a tarball keyed by what
//! went into it; or a directory or tarball the user made. Then the spec's
//! files are copied in and its commands run in a chroot.

use crate::error::{ImageError, Result, io_err};
use crate::progress::Reporter;
use crate::spec::{self, FileSpec, ImageSpec, RootfsSource};
use crate::util::{self, create_dir_all, set_mode};
use cove_state::Paths;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a cached Debian base is made of; its hash names the tarball.
#[derive(Serialize)]
pub(crate) struct BaseKey<'a> {
    pub(crate) suite: &'a str,
    pub(crate) variant: &'static str,
    pub(crate) packages: &'a [String],
    pub(crate) mirror: &'a str,
    /// Absent for amd64, so the keys of bases made before arm64 support stay the same.
    #[serde(skip_serializing_if = "crate::spec::is_amd64")]
    pub(crate) arch: cove_guest::Arch,
}

pub(crate) fn base_key(spec: &ImageSpec, packages: &[String]) -> Option<String> {
    let suite = spec::debian_suite(spec.base.as_deref()?)?;
    let key = BaseKey {
        suite,
        variant: "minbase",
        packages,
        mirror: spec.mirror.as_deref().unwrap_or(spec::DEFAULT_MIRROR),
        arch: spec.arch,
    };
    Some(util::sha256_bytes(
        &serde_json::to_vec(&key).unwrap_or_default(),
    ))
}

fn have(program: &str) -> bool {
    cove_util::path::which(program).is_some()
}

/// How mmdebstrap gets root-like powers. Measured here: as root, `root`;
/// without root, `unshare` needs a range for the user in /etc/subuid (empty
/// on these machines, where it fails with "failed to parse /etc/subuid"),
/// while `fakechroot` (fakechroot and fakeroot installed) works and records
/// the right owners in the tarball.
fn mmdebstrap_mode() -> &'static str {
    if cove_util::process::is_root() {
        return "--mode=root";
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    let user = std::env::var("USER").unwrap_or_default();
    let has_subuid = std::fs::read_to_string("/etc/subuid")
        .map(|t| {
            t.lines().any(|l| {
                let who = l.split(':').next().unwrap_or("");
                who == uid || (!user.is_empty() && who == user)
            })
        })
        .unwrap_or(false);
    if has_subuid || !(have("fakechroot") && have("fakeroot")) {
        "--mode=unshare"
    } else {
        "--mode=fakechroot"
    }
}

/// The cached Debian base tarball for `spec`, bootstrapping it first if
/// needed. mmdebstrap works with and without root (see [`mmdebstrap_mode`]);
/// debootstrap, the fallback, needs root.
pub(crate) fn debian_base(
    paths: &Paths,
    rep: &Reporter,
    spec: &ImageSpec,
    key: &str,
) -> Result<PathBuf> {
    let cache = paths.build_cache();
    let tar = cache.join(format!("debian-{}.tar", &key[..32]));
    if tar.is_file() {
        rep.message(&format!("cached Debian base {}", tar.display()));
        return Ok(tar);
    }
    create_dir_all(&cache)?;
    let suite = spec
        .base
        .as_deref()
        .and_then(spec::debian_suite)
        .unwrap_or("bookworm");
    let mirror = spec.mirror.as_deref().unwrap_or(spec::DEFAULT_MIRROR);
    let packages = spec.base_packages();
    let tmp = tempfile::Builder::new()
        .prefix(".debian-")
        .tempdir_in(&cache)
        .map_err(io_err("cannot create a temporary directory in", &cache))?;
    let out = tmp.path().join("base.tar");
    if have("mmdebstrap") {
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--variant=minbase", "--format=tar", mmdebstrap_mode()]);
        // A foreign architecture's maintainer scripts run through qemu-user (binfmt_misc);
        // mmdebstrap says so when the host cannot.
        cmd.arg(format!("--architectures={}", spec.arch));
        if !packages.is_empty() {
            cmd.arg(format!("--include={}", packages.join(",")));
        }
        cmd.arg(suite).arg(&out).arg(mirror);
        util::run(rep, "mmdebstrap", &mut cmd, "apt-get install mmdebstrap")?;
    } else {
        if !cove_util::process::is_root() {
            return Err(ImageError::DebootstrapNeedsRoot);
        }
        let tree = tmp.path().join("tree");
        let mut cmd = Command::new("debootstrap");
        cmd.arg("--variant=minbase");
        cmd.arg(format!("--arch={}", spec.arch));
        if !packages.is_empty() {
            cmd.arg(format!("--include={}", packages.join(",")));
        }
        cmd.arg(suite).arg(&tree).arg(mirror);
        util::run(rep, "debootstrap", &mut cmd, "apt-get install debootstrap")?;
        let mut cmd = Command::new("tar");
        cmd.arg("-C")
            .arg(&tree)
            .args(["--numeric-owner", "-cf"])
            .arg(&out)
            .arg(".");
        util::run(rep, "tar the debootstrap tree", &mut cmd, "tar")?;
    }
    std::fs::rename(&out, &tar).map_err(io_err("cannot move the Debian base to", &tar))?;
    Ok(tar)
}

/// Unpacks a tarball into `tree`, keeping owners when run as root.
pub(crate) fn untar(rep: &Reporter, tarball: &Path, tree: &Path) -> Result<()> {
    create_dir_all(tree)?;
    let mut cmd = Command::new("tar");
    // Device nodes in a tarball cannot be made without root; the guest's
    // devtmpfs provides them anyway.
    cmd.args(["--exclude=./dev/*", "--exclude=dev/*", "--numeric-owner"]);
    if !cove_util::process::is_root() {
        cmd.arg("--no-same-owner");
    }
    cmd.arg("-C").arg(tree).arg("-xpf").arg(tarball);
    util::run(
        rep,
        &format!("unpack {}", tarball.display()),
        &mut cmd,
        "tar",
    )?;
    Ok(())
}

/// Fills `tree` from the spec's `rootfs` source.
pub(crate) fn user_rootfs(rep: &Reporter, src: &RootfsSource, tree: &Path) -> Result<()> {
    match src {
        RootfsSource::Tarball(t) => untar(rep, t, tree),
        RootfsSource::Dir(d) => {
            create_dir_all(tree)?;
            let mut cmd = Command::new("cp");
            cmd.arg("-a").arg(format!("{}/.", d.display())).arg(tree);
            util::run(rep, &format!("copy {}", d.display()), &mut cmd, "coreutils")?;
            Ok(())
        }
    }
}

/// Copies the spec's files into the tree.
pub(crate) fn copy_files(tree: &Path, files: &[FileSpec]) -> Result<()> {
    for f in files {
        let dest = tree.join(f.dest.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&f.src, &dest).map_err(io_err("cannot copy spec file", &f.src))?;
        if let Some(m) = &f.mode {
            let mode = spec::parse_mode(m).map_err(|reason| ImageError::Spec {
                path: f.src.clone(),
                reason,
            })?;
            set_mode(&dest, mode)?;
        }
    }
    Ok(())
}

/// Runs one build command inside the tree: a private mount namespace (the
/// mounts vanish with it), /proc, /dev and a fresh /tmp and /run, then
/// chroot. Without root, a user namespace maps the caller to root.
pub(crate) fn run_in_chroot(
    rep: &Reporter,
    tree: &Path,
    index: usize,
    command: &str,
) -> Result<()> {
    const SETUP: &str = r#"set -e
root="$1"; shift
mkdir -p "$root/dev" "$root/tmp" "$root/run"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/run"
chmod 1777 "$root/tmp"
exec chroot "$root" /bin/sh -c "$1""#;
    let mut cmd = Command::new("unshare");
    if !cove_util::process::is_root() {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--mount", "--propagation", "private", "--pid", "--fork"])
        .arg(format!("--mount-proc={}", tree.join("proc").display()))
        .args(["/bin/sh", "-c", SETUP, "cove-chroot"])
        .arg(tree)
        .arg(command)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LC_ALL", "C");
    create_dir_all(&tree.join("proc"))?;
    util::run(
        rep,
        &format!("command {} `{command}`", index + 1),
        &mut cmd,
        "util-linux (unshare)",
    )?;
    Ok(())
}

/// Hashes a directory tree: every path, type, mode, symlink target and file
/// content, in sorted order.
pub(crate) fn hash_tree(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&abs)
            .map_err(io_err("cannot read directory", &abs))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            let p = rel.join(e.file_name());
            let meta =
                std::fs::symlink_metadata(e.path()).map_err(io_err("cannot stat", e.path()))?;
            h.update(format!(
                "{}\0{:o}\0{}\0{}\0",
                p.display(),
                meta.mode(),
                meta.uid(),
                meta.gid()
            ));
            if meta.is_dir() {
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                let t =
                    std::fs::read_link(e.path()).map_err(io_err("cannot read link", e.path()))?;
                h.update(t.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                h.update(util::sha256_file(&e.path())?.as_bytes());
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
