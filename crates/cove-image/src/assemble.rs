//! The steps every builder shares once its root filesystem tree exists:
//! kernel (and vmlinux), initramfs with the modules, ext4 image, manifest,
//! atomic install.

use crate::apt::Apt;
use crate::cache;
use crate::error::Result;
use crate::ext4;
use crate::initramfs;
use crate::kernel::{self, LocatedKernel};
use crate::kmod::ModuleIndex;
use crate::manifest::{ImageManifest, ImageSizes, InitKind, Service, files};
use crate::progress::Reporter;
use crate::util;
use crate::vmlinux;
use cove_state::{Paths, Store};
use std::path::Path;
use std::time::Instant;

/// Everything [`assemble`] needs besides the root tree.
pub(crate) struct Parts<'a> {
    pub(crate) arch: cove_guest::Arch,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) base: String,
    pub(crate) kernel: &'a LocatedKernel,
    pub(crate) busybox: &'a Path,
    pub(crate) applets: &'a [String],
    pub(crate) modules: &'a [String],
    pub(crate) size: Option<u64>,
    pub(crate) init: InitKind,
    pub(crate) agent: bool,
    pub(crate) services: &'a [Service],
    pub(crate) vmlinux: bool,
    /// A tarball whose recorded owners the image must keep when built
    /// without root (everything else becomes root's).
    pub(crate) owners_from: Option<&'a Path>,
    pub(crate) started: Instant,
}

/// Builds the image files into `staging` (the root tree is `root`, which
/// may live inside `staging` and is deleted), then installs the image.
pub(crate) fn assemble(
    paths: &Paths,
    store: &mut Store,
    rep: &Reporter,
    staging: tempfile::TempDir,
    root: &Path,
    p: Parts,
) -> Result<ImageManifest> {
    let apt = Apt::new(paths, rep);
    let dir = staging.path().to_path_buf();
    let k = rep.stage("unpack kernel", || kernel::prepare(&apt, p.kernel))?;
    let kernel_dst = dir.join(files::KERNEL);
    std::fs::copy(&k.bzimage, &kernel_dst).map_err(crate::error::io_err(
        "cannot copy the kernel to",
        &kernel_dst,
    ))?;
    let config = match &k.config {
        Some(c) => {
            let dst = dir.join(files::CONFIG);
            std::fs::copy(c, &dst).map_err(crate::error::io_err(
                "cannot copy the kernel config to",
                &dst,
            ))?;
            Some(cache::final_path(paths, &p.id, files::CONFIG))
        }
        None => None,
    };

    let vmlinux_size = if p.vmlinux {
        rep.stage("extract vmlinux", || -> Result<Option<u64>> {
            let bz = std::fs::read(&kernel_dst)
                .map_err(crate::error::io_err("cannot read", &kernel_dst))?;
            match vmlinux::vmlinux_from_bzimage(&bz) {
                Ok(elf) => {
                    util::write_file(&dir.join(files::VMLINUX), &elf)?;
                    Ok(Some(elf.len() as u64))
                }
                Err(e) => {
                    rep.message(&format!("no vmlinux: {e}; VMs will boot the bzImage"));
                    Ok(None)
                }
            }
        })?
    } else {
        None
    };

    let (modules, share_modules) = rep.stage("resolve modules", || -> Result<_> {
        let Some(mdir) = &k.modules_dir else {
            rep.message("the kernel comes without modules; its drivers must be built in");
            return Ok((Vec::new(), Vec::new()));
        };
        let index = ModuleIndex::scan(mdir)?;
        let wanted: Vec<&str> = p.modules.iter().map(String::as_str).collect();
        let mods = index.resolve(&wanted)?;
        // Shared-folder modules: only those not already loaded, and none if the kernel lacks them.
        let share: Vec<crate::kmod::Module> = index
            .resolve(crate::kmod::SHARE_MODULES)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| !mods.iter().any(|d| d.name == m.name))
            .collect();
        rep.message(&format!(
            "modules in load order: {}",
            mods.iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        Ok((mods, share))
    })?;

    // A kernel cove built has every driver built in: the kernel mounts the root
    // filesystem itself and configures eth0 (`ip=`), with no initramfs to load.
    let direct_boot = p.kernel.built.is_some();
    let initrd = dir.join(files::INITRD);
    let initrd_size = if direct_boot {
        rep.message("the kernel has every driver built in: no initramfs");
        0
    } else {
        let n = rep.stage("write initramfs", || {
            initramfs::write_initramfs(&initrd, p.busybox, p.applets, &modules, &share_modules)
        })?;
        rep.bytes("write initramfs", n, Some(n));
        n
    };

    let (content, _) = util::tree_size(root)?;
    let rootfs = dir.join(files::ROOTFS);
    let rootfs_size = rep.stage("make ext4 root filesystem", || -> Result<u64> {
        let size = ext4::make_ext4(rep, root, &rootfs, p.size)?;
        if !cove_util::process::is_root() {
            let owners = match p.owners_from {
                Some(tar) => ext4::tarball_owners(rep, tar)?,
                None => ext4::Owners::new(),
            };
            ext4::fix_owners(rep, root, &rootfs, &owners)?;
        }
        Ok(size)
    })?;
    if root.starts_with(&dir) {
        // The tree is in the image directory only while it is built.
        let _ = std::fs::remove_dir_all(root);
    }

    let mut cmdline_extra = Vec::new();
    let init_path = match p.init {
        InitKind::Systemd => "/sbin/init",
        InitKind::Cove => "/sbin/cove-init",
    };
    if direct_boot {
        // The root disk is the first virtio-blk device cove attaches; the address is
        // QEMU user networking's, as the initramfs would set it.
        cmdline_extra.extend(
            [
                "root=/dev/vda",
                "rootfstype=ext4",
                "rw",
                "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off",
            ]
            .map(str::to_owned),
        );
        cmdline_extra.push(format!("init={init_path}"));
    } else if p.init == InitKind::Systemd {
        cmdline_extra.push(format!("cove.init={init_path}"));
    }
    if p.arch == cove_guest::Arch::Amd64 {
        // Keep the SMP alternatives of a one-CPU guest: patching every LOCK prefix of the
        // kernel out of its text, as Linux does when one CPU is present, made QEMU's TCG
        // retranslate the code and cost 0.2 s of a 0.9 s kernel init on cove's kernel, 0.3 s
        // of Debian's cloud kernel's boot (BENCHMARKS.md section 6); the LOCK prefixes cost
        // nothing measurable after boot.
        cmdline_extra.push("noreplace-smp".to_owned());
    }
    let kernel_origin = match &p.kernel.built {
        Some(b) => format!("build:{} {}", &b.key[..16], b.source),
        None if p.kernel.is_deb => format!(
            "debian:{}",
            p.kernel
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        None => format!("bzimage:{}", p.kernel.file.display()),
    };
    let m = ImageManifest {
        id: p.id.clone(),
        name: p.name,
        arch: p.arch,
        base: p.base,
        kernel: cache::final_path(paths, &p.id, files::KERNEL),
        vmlinux: vmlinux_size.map(|_| cache::final_path(paths, &p.id, files::VMLINUX)),
        initrd: (!direct_boot).then(|| cache::final_path(paths, &p.id, files::INITRD)),
        rootfs: cache::final_path(paths, &p.id, files::ROOTFS),
        kernel_version: k.version,
        kernel_sha256: Some(util::sha256_file(&kernel_dst)?),
        kernel_origin: Some(kernel_origin),
        kernel_config: config,
        cmdline_extra,
        modules: modules.iter().map(|m| m.name.clone()).collect(),
        init: p.init,
        agent: p.agent,
        services: p.services.to_vec(),
        sizes: ImageSizes {
            kernel: cache::file_size(&kernel_dst),
            vmlinux: vmlinux_size,
            initrd: initrd_size,
            rootfs: rootfs_size,
            rootfs_content: content,
        },
        created_at: cove_state::store::now(),
        build_seconds: p.started.elapsed().as_secs_f64(),
    };
    rep.message(&format!(
        "image {} ({}) built in {:.1} s",
        m.name, m.id, m.build_seconds
    ));
    cache::install(paths, store, staging, &m, &rep.text())
}
