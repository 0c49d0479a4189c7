//! Kernel images, configs, requirement profiles and the syscall → option map.

pub mod check;
pub mod config;
pub mod explain;
pub mod image;
pub mod initramfs;
pub mod kconfig;
pub mod merge;
pub mod profile;

pub use check::{CheckReport, Finding, OptionState, Status, check};
pub use config::{ConfigSource, KernelConfig, Value, load_config};
pub use explain::{Explanation, explain, explain_syscall};
pub use image::{
    Compression, EmbeddedConfig, ImageKind, decompress_bzimage, extract_ikconfig, ikconfig_in,
    is_bzimage, vmlinux_from_bzimage,
};
pub use initramfs::{InitramfsModules, ModuleInfo};
pub use kconfig::{Kconfig, Unmet};
pub use merge::{
    BuildError, BuildReport, BuildSpec, Lost, Merge, Override, build, compile, configure,
    explain_lost, kernel_release, merge, merge_files, verify,
};
pub use profile::{
    BUILTIN_PROFILES, Profile, Requirement, builtin_profile, parse_profiles, resolve_profiles,
};

use std::path::PathBuf;

/// Everything that can go wrong reading a kernel or its configuration.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "not an x86 bzImage (no `HdrS` setup header at 0x202); pass a bzImage, vmlinux, Image or config file"
    )]
    NotBzImage,
    #[error(
        "no compressed payload found in the bzImage (tried payload_offset and a scan for gzip/xz/lzma/lz4/zstd/bzip2 magics); the file may be truncated or use an unsupported compression (lzo)"
    )]
    NoPayload,
    #[error("the bzImage payload decompressed but is not an ELF vmlinux; the image may be corrupt")]
    NotElf,
    #[error("cannot decompress {format} data: {source}; the image may be truncated or corrupt")]
    Decompress {
        format: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel has no embedded config (built without CONFIG_IKCONFIG); pass its config file instead (`config-<version>` next to the kernel, e.g. in /boot)"
    )]
    NoIkconfig,
    #[error(
        "cannot read the initramfs: {0}; pass a cpio archive (newc), optionally gzip/xz/zstd/lz4/bzip2 compressed"
    )]
    BadInitramfs(String),
    #[error("cannot parse kernel module {0} in the initramfs: {1}; the file may be corrupt")]
    BadModule(String, String),
    #[error("invalid profile file: {0}; see the format in `cove kernel profiles --help`")]
    BadProfile(String),
    #[error(
        "unknown profile `{0}`; built-in profiles are: virtio, agent-serial, agent-vsock, net, postgres, tailscale, microvm, pvh (or define it in a profile file)"
    )]
    UnknownProfile(String),
}
