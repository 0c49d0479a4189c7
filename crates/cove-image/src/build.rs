//! Building an image from an [`ImageSpec`]: Debian base, directory or
//! tarball root filesystems, with the spec's files, commands and services.

use crate::apt::Apt;
use crate::assemble::{Parts, assemble};
use crate::cache::{self, FORMAT_VERSION};
use crate::debian;
use crate::error::Result;
use crate::initramfs;
use crate::manifest::ImageManifest;
use crate::minimal::{CommonInputs, image_id, locate_common_inputs, module_list};
use crate::progress::{Progress, Reporter};
use crate::rootfs;
use crate::spec::{ImageSpec, RootfsSource};
use crate::util::{self, sha256_file};
use cove_state::{Paths, Store};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Build settings that come from cove rather than from the spec.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A static `cove-agent` binary to install as `/usr/lib/cove/cove-agent`.
    pub agent: Option<PathBuf>,
    /// Also ship the uncompressed `vmlinux` when the kernel allows.
    pub vmlinux: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            agent: None,
            vmlinux: true,
        }
    }
}

/// Everything a spec-built image is made of; its hash is the image id.
#[derive(Serialize)]
struct SpecKey<'a> {
    format: u32,
    builder: &'static str,
    spec: &'a ImageSpec,
    base_key: Option<&'a str>,
    rootfs_sha256: Option<&'a str>,
    files_sha256: &'a [String],
    kernel_sha256: &'a str,
    busybox_sha256: &'a str,
    agent_sha256: Option<&'a str>,
    modules: &'a [String],
    vmlinux: bool,
    initramfs_init_sha256: String,
    cove_init_sha256: String,
}

/// Builds (or finds in the cache) the image `spec` describes.
pub fn build_image(
    paths: &Paths,
    store: &mut Store,
    spec: &ImageSpec,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<ImageManifest> {
    let started = Instant::now();
    let rep = Reporter::new(progress);
    let apt = Apt::new(paths, &rep);
    let inputs = locate_common_inputs(
        &apt,
        &rep,
        spec.arch,
        &spec.kernel_source(),
        opts.agent.as_deref(),
    )?;
    let CommonInputs {
        kernel,
        busybox_sha,
        agent_sha,
        ..
    } = &inputs;
    let packages = spec.base_packages();
    let base_key = debian::base_key(spec, &packages);
    let rootfs_sha = rep.stage("hash inputs", || -> Result<Option<String>> {
        Ok(match &spec.rootfs {
            Some(RootfsSource::Tarball(t)) => Some(sha256_file(t)?),
            Some(RootfsSource::Dir(d)) => Some(debian::hash_tree(d)?),
            None => None,
        })
    })?;
    let files_sha = spec
        .files
        .iter()
        .map(|f| sha256_file(&f.src))
        .collect::<Result<Vec<_>>>()?;
    let modules = module_list(&spec.modules);
    let id = image_id(&SpecKey {
        format: FORMAT_VERSION,
        builder: "spec",
        spec,
        base_key: base_key.as_deref(),
        rootfs_sha256: rootfs_sha.as_deref(),
        files_sha256: &files_sha,
        kernel_sha256: &kernel.sha256,
        busybox_sha256: busybox_sha,
        agent_sha256: agent_sha.as_deref(),
        modules: &modules,
        vmlinux: opts.vmlinux,
        initramfs_init_sha256: util::sha256_bytes(initramfs::init_script().as_bytes()),
        cove_init_sha256: rootfs::cove_init_sha256(&spec.services, spec.arch),
    });
    if let Some(m) = cache::cached(paths, store, &id)? {
        rep.message(&format!("image {} ({id}) is up to date", m.name));
        return Ok(m);
    }

    let staging = cache::staging(paths)?;
    let tree = staging.path().join("tree");
    let mut owners_from = None;
    let base = match (&spec.rootfs, &base_key) {
        (Some(src), _) => {
            rep.stage("unpack root filesystem", || {
                debian::user_rootfs(&rep, src, &tree)
            })?;
            match src {
                RootfsSource::Dir(d) => format!("dir:{}", d.display()),
                RootfsSource::Tarball(t) => format!("tarball:{}", t.display()),
            }
        }
        (None, Some(key)) => {
            let tar = rep.stage("bootstrap Debian", || {
                debian::debian_base(paths, &rep, spec, key)
            })?;
            rep.stage("unpack Debian base", || debian::untar(&rep, &tar, &tree))?;
            owners_from = Some(tar);
            spec.base.clone().unwrap_or_default()
        }
        (None, None) => unreachable!("ImageSpec::parse requires base or rootfs"),
    };
    rep.stage("copy files", || debian::copy_files(&tree, &spec.files))?;
    rep.stage("install cove files", || {
        rootfs::install_cove_files(
            &tree,
            &spec.name,
            spec.init,
            opts.agent.as_deref(),
            &spec.services,
            spec.arch,
        )
    })?;
    for (i, c) in spec.commands.iter().enumerate() {
        rep.stage(&format!("command {}", i + 1), || {
            debian::run_in_chroot(&rep, &tree, i, c)
        })?;
    }
    let (busybox, applets) = inputs.busybox(&apt, &rep)?;
    assemble(
        paths,
        store,
        &rep,
        staging,
        &tree.clone(),
        Parts {
            id,
            name: spec.name.clone(),
            arch: spec.arch,
            base,
            kernel,
            busybox: &busybox,
            applets: &applets,
            modules: &modules,
            size: spec.size.map(|s| s.0),
            init: spec.init,
            agent: opts.agent.is_some(),
            services: &spec.services,
            vmlinux: opts.vmlinux,
            owners_from: owners_from.as_deref(),
            started,
        },
    )
}
