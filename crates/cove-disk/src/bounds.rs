//! Limits that make a crafted ext4 fail cleanly, with bounded memory and time.
//!
//! ext4-view allocates one descriptor per block group at load (a superblock claiming 2^32
//! groups asks for hundreds of GiB), reads a file for as long as its size says (16 TiB of holes
//! is days of zeros), and a hard-linked directory makes a tree infinite. cove checks the
//! superblock against the disk before loading, file sizes against the disk before reading,
//! and how much of a tree it has walked while copying.

use crate::error::{Error, Result};
use crate::image::DiskImage;

/// Most block groups cove loads: 2^20 is 128 TiB with 4 KiB blocks, and about 64 MiB of
/// descriptors in memory.
pub(crate) const MAX_BLOCK_GROUPS: u64 = 1 << 20;
/// Deepest directory tree `get` copies. No real system comes near it, and ext4-view resolves
/// no path of more than about 1000 components (it answers "path is too long"), so cove stops
/// first and says why.
pub(crate) const MAX_DEPTH: usize = 512;
/// Smallest inode ext4 has: the inode table of `n` inodes takes `n * 128` bytes of the disk.
const MIN_INODE_SIZE: u64 = 128;
/// Smallest directory entry on disk (8 bytes of header, a name padded to 4).
const MIN_DIR_ENTRY: u64 = 12;

/// The most a walk of a whole tree meets on an intact filesystem. ext4 allows no hard link to
/// a directory, so a walk enters each directory inode once, and reads each entry once from the
/// block (or inode) that holds it. A crafted image that links one directory in several places
/// (a cycle, or a chain of directories each linked many times into the next) walks past these:
/// that is the one sign cove can rely on, as ext4-view does not name inodes, and two distinct
/// directories may look alike in every field it does show (a reproducible build stamps all
/// times alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeBudget {
    /// Directories: the filesystem's inode count, which its inode tables must hold on disk.
    pub dirs: u64,
    /// Directory entries, `.` and `..` included.
    pub entries: u64,
}

impl TreeBudget {
    /// What a `len`-byte filesystem claiming `inodes` inodes can hold.
    fn new(inodes: u64, len: u64) -> TreeBudget {
        TreeBudget {
            dirs: inodes.min(len / MIN_INODE_SIZE),
            entries: len / MIN_DIR_ENTRY,
        }
    }
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

/// Checks the superblock at `start` (the filesystem's first byte) of a `len`-byte region, and
/// returns what a walk of its tree may meet.
pub(crate) fn check_superblock(
    disk: &DiskImage,
    start: u64,
    len: u64,
    label: &str,
) -> Result<TreeBudget> {
    let mut sb = [0u8; 1024];
    if disk.read_exact_at(&mut sb, start + 1024).is_err() {
        // ext4-view reports the short read itself
        return Ok(TreeBudget::new(u64::MAX, len));
    }
    let inodes = le(&sb, 0x00, 4);
    let blocks_lo = le(&sb, 0x04, 4);
    let first_data_block = le(&sb, 0x14, 4);
    let log_block = le(&sb, 0x18, 4);
    let per_group = le(&sb, 0x20, 4);
    // The high half counts whether or not the 64bit feature is set: Linux ignores it without
    // the feature, but ext4-view reads it always, and sizes its descriptor table by it.
    let blocks_hi = le(&sb, 0x150, 4);
    let blocks = (blocks_hi << 32) | blocks_lo;
    let bad = |claimed: String, detail: String| Error::ImplausibleFilesystem {
        disk: label.to_string(),
        claimed,
        detail,
        available: len,
    };
    // ext4 blocks are 1 KiB to 64 KiB.
    if log_block > 6 || per_group == 0 {
        return Err(bad(
            format!("block size 1024<<{log_block}"),
            format!("{per_group} blocks per group"),
        ));
    }
    let block_size = 1024u64 << log_block;
    let bytes = blocks.saturating_mul(block_size);
    let groups = blocks.saturating_sub(first_data_block).div_ceil(per_group);
    if bytes > len {
        return Err(bad(
            format!("{bytes} bytes"),
            format!("{blocks} blocks of {block_size}"),
        ));
    }
    if groups > MAX_BLOCK_GROUPS {
        return Err(bad(
            format!("{groups} block groups"),
            format!("{per_group} blocks per group; cove reads at most {MAX_BLOCK_GROUPS}"),
        ));
    }
    Ok(TreeBudget::new(inodes, len))
}
