//! cove's images: specs, builders and the content-addressed image cache.
//!
//! An image is a kernel (bzImage, and its uncompressed `vmlinux` when it can
//! be extracted), an initramfs cove generates (busybox, the virtio modules in
//! load order, an `/init` that finds the root filesystem by label) and a raw
//! ext4 root filesystem labelled `cove-root` that VMs overlay with qcow2.
//!
//! Builders:
//! - [`build_minimal`]: busybox root filesystem, Debian's cloud kernel.
//! - [`build_image`]: from an [`ImageSpec`] (TOML): a Debian base made with
//!   mmdebstrap (cached by suite, packages and mirror), or a directory or
//!   tarball; plus files, build-time commands (chroot) and services.
//!
//! Every build first computes the image id from the spec and the hashes of
//! its inputs; an image with that id already in `Paths::images()` is
//! returned at once. Images are built in a temporary directory beside their
//! final place and renamed into it, then recorded in the store.

mod apt;
mod archive;
mod assemble;
mod build;
mod cache;
mod debian;
mod error;
mod ext4;
mod initramfs;
mod kbuild;
mod kernel;
pub mod kmod;
mod manifest;
mod minimal;
mod progress;
mod rootfs;
pub mod spec;
mod util;
pub mod vmlinux;

pub use build::{BuildOptions, build_image};
pub use cache::{Pruned, image_dir, list, prune, remove, resolve};
pub use cove_guest::Arch;
pub use error::{ImageError, Result};
pub use ext4::{ROOT_LABEL, auto_size};
pub use initramfs::init_script as initramfs_init;
pub use kbuild::{
    BASE_CONFIG, BUILTIN_FRAGMENTS, BuiltKernel, DEFAULT_SOURCE_PACKAGE, KernelBuild,
    KernelBuildOptions, build_kernel,
};
pub use kernel::{DEFAULT_KERNEL_PACKAGE, KernelSource, bzimage_version, kernel_source_from_arg};
pub use manifest::{ImageManifest, ImageSizes, InitKind, Service, files};
pub use minimal::{BUSYBOX_PACKAGE, MinimalOptions, build_minimal};
pub use progress::{NoProgress, Progress};
pub use rootfs::{agent_path, check_agent, cove_init_script};
pub use spec::{FileSpec, ImageSpec, KernelSpec, RootfsSource, Size};
pub use util::sha256_file;

/// The least memory cove gives a VM, in MiB: what the `minimal` image (Debian's cloud kernel
/// and cove's initramfs, which unpacks and loads its modules in RAM) needs. Measured under
/// microvm (TCG, 1 vCPU): 78M runs out of memory while `insmod` loads the initramfs modules,
/// 80M boots and answers `exec`; 96M leaves room to run something.
pub const MIN_MEMORY_MIB: u64 = 96;
