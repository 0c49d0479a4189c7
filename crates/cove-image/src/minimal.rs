//! The built-in `minimal` image: Debian's cloud kernel, cove's initramfs,
//! and a busybox root filesystem with cove's init and (optionally) the agent.

use crate::apt::Apt;
use crate::assemble::{Parts, assemble};
use crate::cache::{self, FORMAT_VERSION};
use crate::error::Result;
use crate::initramfs;
use crate::kernel::{self, KernelSource};
use crate::kmod::DEFAULT_MODULES;
use crate::manifest::{ImageManifest, InitKind, Service};
use crate::progress::{Progress, Reporter};
use crate::rootfs;
use crate::util::{self, sha256_file};
use cove_guest::Arch;
use cove_state::{Paths, Store};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// The package cove takes busybox from (static, so it runs in any rootfs
/// and in the initramfs; the host's own busybox is not used).
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// What to put into a `minimal` image.
#[derive(Debug, Clone)]
pub struct MinimalOptions {
    /// The image's name (tag); `minimal` by default.
    pub name: String,
    /// The guest architecture; set [`MinimalOptions::kernel`] to match
    /// ([`MinimalOptions::for_arch`] does).
    pub arch: Arch,
    pub kernel: KernelSource,
    /// A static `cove-agent` binary to install as `/usr/lib/cove/cove-agent`.
    pub agent: Option<PathBuf>,
    /// Size of the root filesystem image in bytes; None picks one with headroom.
    pub size: Option<u64>,
    /// Commands the init keeps running.
    pub services: Vec<Service>,
    /// Kernel modules to load besides [`DEFAULT_MODULES`].
    pub extra_modules: Vec<String>,
    /// Also ship the uncompressed `vmlinux` (faster boots) when the kernel allows.
    pub vmlinux: bool,
}

impl Default for MinimalOptions {
    fn default() -> Self {
        Self {
            name: "minimal".to_owned(),
            arch: Arch::Amd64,
            kernel: KernelSource::default(),
            agent: None,
            size: None,
            services: Vec::new(),
            extra_modules: Vec::new(),
            vmlinux: true,
        }
    }
}

impl MinimalOptions {
    /// The defaults for a guest of `arch`: its Debian cloud kernel, and the name
    /// `minimal-arm64` for arm64 (so `minimal` stays the host's).
    pub fn for_arch(arch: Arch) -> Self {
        Self {
            name: match arch {
                Arch::Amd64 => "minimal".to_owned(),
                arch => format!("minimal-{arch}"),
            },
            arch,
            kernel: KernelSource::for_arch(arch),
            ..Self::default()
        }
    }
}

/// Everything the `minimal` image is made of; its hash is the image id.
#[derive(Serialize)]
struct MinimalKey<'a> {
    format: u32,
    builder: &'static str,
    name: &'a str,
    /// Absent for amd64, so the ids of images built before arm64 support stay the same.
    #[serde(skip_serializing_if = "crate::spec::is_amd64")]
    arch: Arch,
    kernel_sha256: &'a str,
    busybox_sha256: &'a str,
    agent_sha256: Option<&'a str>,
    modules: &'a [String],
    size: Option<u64>,
    vmlinux: bool,
    initramfs_init_sha256: String,
    cove_init_sha256: String,
}

/// The modules an image loads: the defaults plus `extra`, sorted, unique.
/// An entry `-NAME` drops NAME instead (to reproduce a guest that lacks a
/// driver, e.g. `-virtio_console`: the agent then never answers).
pub(crate) fn module_list(extra: &[String]) -> Vec<String> {
    let (drop, add): (Vec<&String>, Vec<&String>) = extra.iter().partition(|s| s.starts_with('-'));
    let drop: Vec<String> = drop
        .iter()
        .map(|s| crate::kmod::normalize(&s[1..]))
        .collect();
    let mut m: Vec<String> = DEFAULT_MODULES
        .iter()
        .map(|s| s.to_string())
        .chain(add.iter().map(|s| crate::kmod::normalize(s)))
        .filter(|name| !drop.contains(name))
        .collect();
    m.sort();
    m.dedup();
    m
}

/// What every image is built from besides its root filesystem: the kernel,
/// busybox (for the initramfs) and the agent, each with its content hash
/// (the inputs of the image id).
pub(crate) struct CommonInputs {
    pub kernel: kernel::LocatedKernel,
    pub busybox_deb: PathBuf,
    pub busybox_sha: String,
    pub agent_sha: Option<String>,
    /// The guest's architecture, whose busybox cannot run on a host of another.
    pub arch: Arch,
}

impl CommonInputs {
    /// Unpacks busybox and lists its applets. A foreign busybox (arm64 on an x86-64 host)
    /// cannot be run to ask, so the host architecture's build of the same Debian package
    /// answers: both are built from one source with one config.
    pub(crate) fn busybox(&self, apt: &Apt, rep: &Reporter) -> Result<(PathBuf, Vec<String>)> {
        let tree = rep.stage("unpack busybox", || apt.extract(&self.busybox_deb))?;
        let busybox = tree.join("bin/busybox");
        let lister = if self.arch == Arch::host() {
            busybox.clone()
        } else {
            let (_, deb) = rep.stage("locate host busybox", || apt.get(BUSYBOX_PACKAGE))?;
            apt.extract(&deb)?.join("bin/busybox")
        };
        let applets = initramfs::busybox_applets(rep, &lister)?;
        Ok((busybox, applets))
    }
}

pub(crate) fn locate_common_inputs(
    apt: &Apt,
    rep: &Reporter,
    arch: Arch,
    kernel_source: &KernelSource,
    agent: Option<&std::path::Path>,
) -> Result<CommonInputs> {
    let kernel = rep.stage("locate kernel", || kernel::locate(apt, rep, kernel_source))?;
    let busybox_package = format!("{BUSYBOX_PACKAGE}:{arch}");
    let (_, busybox_deb) = rep.stage("locate busybox", || apt.get(&busybox_package))?;
    let busybox_sha = util::sha256_file_cached(&busybox_deb)?;
    let agent_sha = match agent {
        Some(a) => {
            rootfs::check_agent(a, arch)?;
            Some(sha256_file(a)?)
        }
        None => None,
    };
    Ok(CommonInputs {
        kernel,
        busybox_deb,
        busybox_sha,
        agent_sha,
        arch,
    })
}

/// Builds (or finds in the cache) the `minimal` image.
pub fn build_minimal(
    paths: &Paths,
    store: &mut Store,
    opts: &MinimalOptions,
    progress: &dyn Progress,
) -> Result<ImageManifest> {
    let started = Instant::now();
    let rep = Reporter::new(progress);
    let apt = Apt::new(paths, &rep);
    let inputs = locate_common_inputs(&apt, &rep, opts.arch, &opts.kernel, opts.agent.as_deref())?;
    let CommonInputs {
        kernel,
        busybox_sha,
        agent_sha,
        ..
    } = &inputs;
    let modules = module_list(&opts.extra_modules);
    let key = MinimalKey {
        format: FORMAT_VERSION,
        builder: "minimal",
        name: &opts.name,
        arch: opts.arch,
        kernel_sha256: &kernel.sha256,
        busybox_sha256: busybox_sha,
        agent_sha256: agent_sha.as_deref(),
        modules: &modules,
        size: opts.size,
        vmlinux: opts.vmlinux,
        initramfs_init_sha256: util::sha256_bytes(initramfs::init_script().as_bytes()),
        cove_init_sha256: rootfs::cove_init_sha256(&opts.services, opts.arch),
    };
    let id = image_id(&key);
    if let Some(m) = cache::cached(paths, store, &id)? {
        rep.message(&format!("image {} ({id}) is up to date", m.name));
        return Ok(m);
    }

    let staging = cache::staging(paths)?;
    let (busybox, applets) = inputs.busybox(&apt, &rep)?;
    let root = staging.path().join("tree");
    rep.stage("populate root filesystem", || -> Result<()> {
        rootfs::minimal_tree(&root, &busybox, &applets)?;
        rootfs::install_cove_files(
            &root,
            &opts.name,
            InitKind::Cove,
            opts.agent.as_deref(),
            &opts.services,
            opts.arch,
        )
    })?;
    assemble(
        paths,
        store,
        &rep,
        staging,
        &root.clone(),
        Parts {
            id,
            name: opts.name.clone(),
            arch: opts.arch,
            base: "minimal".to_owned(),
            kernel,
            busybox: &busybox,
            applets: &applets,
            modules: &modules,
            size: opts.size,
            init: InitKind::Cove,
            agent: opts.agent.is_some(),
            services: &opts.services,
            vmlinux: opts.vmlinux,
            owners_from: None,
            started,
        },
    )
}

/// The image id: sha256 of the key's canonical JSON (struct fields in
/// declaration order, so the encoding is stable).
pub(crate) fn image_id<K: Serialize>(key: &K) -> String {
    let json = serde_json::to_vec(key).unwrap_or_default();
    util::sha256_bytes(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(modules: &'a [String], services: &[Service]) -> MinimalKey<'a> {
        MinimalKey {
            format: FORMAT_VERSION,
            builder: "minimal",
            name: "minimal",
            arch: Arch::Amd64,
            kernel_sha256: "aa",
            busybox_sha256: "bb",
            agent_sha256: None,
            modules,
            size: None,
            vmlinux: true,
            initramfs_init_sha256: util::sha256_bytes(initramfs::init_script().as_bytes()),
            cove_init_sha256: rootfs::cove_init_sha256(services, Arch::Amd64),
        }
    }

    #[test]
    fn cache_key_is_stable_and_sensitive() {
        let mods = module_list(&[]);
        let a = image_id(&key(&mods, &[]));
        assert_eq!(a, image_id(&key(&mods, &[])), "same inputs, same id");
        assert_eq!(a.len(), 64);
        // The extra module order and spelling do not matter…
        assert!(!module_list(&["-virtio-console".into()]).contains(&"virtio_console".to_owned()));
        let m1 = module_list(&["virtio-input".into(), "af_packet".into()]);
        let m2 = module_list(&["af_packet".into(), "virtio_input".into()]);
        assert_eq!(image_id(&key(&m1, &[])), image_id(&key(&m2, &[])));
        // …but every input does.
        assert_ne!(a, image_id(&key(&m1, &[])));
        let svc = [Service {
            name: "web".into(),
            command: "httpd -f".into(),
            user: "root".into(),
        }];
        assert_ne!(a, image_id(&key(&mods, &svc)));
        let mut k = key(&mods, &[]);
        k.agent_sha256 = Some("cc");
        assert_ne!(a, image_id(&k));
        let mut k = key(&mods, &[]);
        k.arch = Arch::Arm64;
        assert_ne!(a, image_id(&k));
    }
}
