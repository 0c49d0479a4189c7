//! The one error type of this crate. Every message names what went wrong
//! and what the user can do next, because `cove disk` prints it as is.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image file itself could not be opened or read.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The qcow2 header is damaged or not one we understand.
    #[error(
        "{path} is not a valid qcow2 image ({reason}); check it with `qemu-img check {path}`",
        path = path.display()
    )]
    InvalidQcow2 { path: PathBuf, reason: String },

    /// qcow2 version 1 (or an unknown future version).
    #[error(
        "{path} is qcow2 version {version}; cove reads versions 2 and 3: \
         upgrade it with `qemu-img amend -o compat=1.1 {path}`",
        path = path.display()
    )]
    UnsupportedQcow2Version { path: PathBuf, version: u32 },

    /// Encrypted images need a key cove does not have.
    #[error(
        "{path} is encrypted ({method}); cove reads only unencrypted images: \
         decrypt a copy with `qemu-img convert --object secret,... --image-opts ... -O qcow2`",
        path = path.display()
    )]
    Encrypted { path: PathBuf, method: &'static str },

    /// The guest data lives in a separate "external data file".
    #[error(
        "{path} keeps its data in an external data file ({data_file}), which cove does not read; \
         make a self-contained copy with `qemu-img convert -O qcow2 {path} copy.qcow2`",
        path = path.display()
    )]
    ExternalDataFile { path: PathBuf, data_file: String },

    /// Incompatible feature bits this reader does not implement.
    #[error(
        "{path} uses qcow2 features cove cannot read ({features}); \
         make a plain copy with `qemu-img convert -O qcow2 {path} copy.qcow2`",
        path = path.display()
    )]
    UnsupportedFeatures { path: PathBuf, features: String },

    /// QEMU marked the image corrupt or dirty; its metadata is not trustworthy.
    #[error(
        "{path} is marked {state} by QEMU; repair it first with `qemu-img check -r all {path}`",
        path = path.display()
    )]
    NeedsRepair { path: PathBuf, state: &'static str },

    /// A layer names a backing file that is not there.
    #[error(
        "backing file {backing} of {image} does not exist; the base image was moved or deleted \
         (see `qemu-img info --backing-chain {image}`)",
        backing = backing.display(), image = image.display()
    )]
    BackingMissing { image: PathBuf, backing: PathBuf },

    /// A backing chain that loops or is absurdly deep.
    #[error(
        "the backing chain of {path} {reason}; inspect it with `qemu-img info --backing-chain {path}`",
        path = path.display()
    )]
    BadBackingChain { path: PathBuf, reason: String },

    /// imago refused the image after our own checks passed.
    #[error("cannot read qcow2 image {path}: {source}; check it with `qemu-img check {path}`", path = path.display())]
    Qcow2 {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A read from the virtual disk failed.
    #[error("reading {len} bytes at offset {offset} of {path} failed: {source}", path = path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        len: usize,
        #[source]
        source: std::io::Error,
    },

    /// There is no ext4 filesystem at the start of the disk.
    #[error("no ext2/3/4 filesystem on {disk}: {found}")]
    NoFilesystem { disk: String, found: String },

    /// Several partitions hold a filesystem; the caller must pick one.
    #[error("{disk} has filesystems in partitions {partitions}; pick one (`--partition N`)")]
    AmbiguousPartitions { disk: String, partitions: String },

    #[error("{disk} has no partition {index} (it has: {have})")]
    NoSuchPartition {
        disk: String,
        index: usize,
        have: String,
    },

    /// The journal has transactions that must be replayed and ext4-view could not do it.
    #[error(
        "the filesystem on {disk} needs recovery (its journal was not replayed: the VM was not \
         shut down cleanly) and cove cannot replay it in memory ({source}); boot the VM once, or \
         run `e2fsck -fy` on a raw copy (`qemu-img convert -O raw`)"
    )]
    NeedsRecovery {
        disk: String,
        #[source]
        source: ext4_view::Ext4Error,
    },

    /// ext4-view does not support a feature this filesystem uses.
    #[error("the filesystem on {disk} uses a feature cove cannot read: {source}")]
    UnsupportedFilesystem {
        disk: String,
        #[source]
        source: ext4_view::Ext4Error,
    },

    /// ext4-view found damaged metadata.
    #[error(
        "the filesystem on {disk} is damaged ({source}); run `e2fsck -fn` on a raw copy to see the damage"
    )]
    CorruptFilesystem {
        disk: String,
        #[source]
        source: ext4_view::Ext4Error,
    },

    #[error("no such file {path} in {disk}; list its directory with `cove disk ls`")]
    NotFound { disk: String, path: String },

    #[error(
        "{path} in {disk} is a directory; use `cove disk ls` to list it or `cove disk get` to copy it"
    )]
    IsADirectory { disk: String, path: String },

    #[error("{path} in {disk} is not a directory (a component of the path is a file)")]
    NotADirectory { disk: String, path: String },

    #[error("{path} in {disk} is a {kind}, which has no contents to read")]
    SpecialFile {
        disk: String,
        path: String,
        kind: &'static str,
    },

    /// The superblock describes a filesystem the disk cannot hold (crafted or truncated).
    #[error(
        "{disk} claims a filesystem of {claimed} ({detail}) but holds only {available} bytes; \
         the image is truncated, corrupt or crafted: check it with `e2fsck -fn` on a copy"
    )]
    ImplausibleFilesystem {
        disk: String,
        claimed: String,
        detail: String,
        available: u64,
    },

    /// A file larger than the whole disk: a crafted sparse size (reading it would take forever).
    #[error(
        "{path} in {disk} claims {size} bytes, more than the whole {disk_size}-byte disk; \
         the filesystem is corrupt or crafted (`e2fsck -fn` on a copy says which)"
    )]
    ImplausibleSize {
        disk: String,
        path: String,
        size: u64,
        disk_size: u64,
    },

    /// A symlink whose stored target is longer than any Linux writes (reading it would
    /// allocate what the inode claims, gigabytes for a crafted one).
    #[error(
        "the symlink {path} in {disk} claims a {size}-byte target, longer than Linux allows          ({max}); the filesystem is corrupt or crafted (`e2fsck -fn` on a copy says which)"
    )]
    ImplausibleLink {
        disk: String,
        path: String,
        size: u64,
        max: u64,
    },

    /// A tree larger than its filesystem can hold intact (a directory linked in more than one
    /// place, as in a cycle), or deeper than any real one.
    #[error(
        "{path} in {disk} {what}; the filesystem is corrupt or crafted, so the copy stopped \
         (copy a smaller part of the tree, or run `e2fsck -fn` on a copy)"
    )]
    TreeLoop {
        disk: String,
        path: String,
        what: String,
    },

    #[error("{path} in {disk} has too many levels of symbolic links (a loop?)")]
    TooManySymlinks { disk: String, path: String },

    #[error("{path} in {disk} is encrypted with fscrypt; cove cannot read it")]
    EncryptedFile { disk: String, path: String },

    #[error("{path} is not a valid path in {disk}: {reason}")]
    BadPath {
        disk: String,
        path: String,
        reason: String,
    },

    /// Any other ext4-view error, with the path it happened on.
    #[error("reading {path} in {disk} failed: {source}")]
    Fs {
        disk: String,
        path: String,
        #[source]
        source: ext4_view::Ext4Error,
    },

    /// Writing to the host (destination file or output stream) failed.
    #[error("writing {path} on the host failed: {source}", path = path.display())]
    Host {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `get` would overwrite something the user did not ask to overwrite.
    #[error("{path} already exists on the host and is not a directory; remove it or pick another destination", path = path.display())]
    DestinationExists { path: PathBuf },
}
