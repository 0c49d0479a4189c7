//! Partition tables, for data disks a guest partitioned before formatting.
//!
//! Only what locating a filesystem needs: MBR primary entries and GPT
//! entries (start and length, 512-byte sectors, as every virtual disk cove
//! makes has). Hand-written because the job is ~60 lines of offsets and the
//! crates that do it (`gpt`, `mbrman`) bring writing, CRC repair and their
//! own file handling that a read-only byte range lookup does not need.

use crate::image::DiskImage;
use serde::Serialize;

const SECTOR: u64 = 512;
const MBR_PROTECTIVE: u8 = 0xee;
/// Extended partitions hold logical ones in a chain; their own entry is not a filesystem.
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// More entries than any real table has; guards a damaged header.
const MAX_GPT_ENTRIES: u32 = 1024;

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based, as Linux numbers them (`vdb1`).
    pub index: usize,
    /// Byte offset of the partition on the virtual disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// `mbr` or `gpt`.
    pub table: &'static str,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The partitions of `disk`, empty when it has no partition table.
/// Partitions that do not fit on the disk are left out.
pub fn partitions(disk: &DiskImage) -> Vec<Partition> {
    let mut mbr = [0u8; 512];
    if disk.read_exact_at(&mut mbr, 0).is_err() || mbr[510..512] != [0x55, 0xaa] {
        return Vec::new();
    }
    let entries: Vec<&[u8]> = (0..4)
        .map(|i| &mbr[446 + 16 * i..446 + 16 * (i + 1)])
        .collect();
    let found = if entries.iter().any(|e| e[4] == MBR_PROTECTIVE) {
        gpt(disk)
    } else {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e[4] != 0 && !MBR_EXTENDED.contains(&e[4]))
            .map(|(i, e)| Partition {
                index: i + 1,
                start: u64::from(le32(e, 8)) * SECTOR,
                len: u64::from(le32(e, 12)) * SECTOR,
                table: "mbr",
            })
            .collect()
    };
    found
        .into_iter()
        .filter(|p| {
            p.len > 0
                && p.start
                    .checked_add(p.len)
                    .is_some_and(|end| end <= disk.size())
        })
        .collect()
}

fn gpt(disk: &DiskImage) -> Vec<Partition> {
    let mut hdr = [0u8; 92];
    if disk.read_exact_at(&mut hdr, SECTOR).is_err() || &hdr[..8] != b"EFI PART" {
        return Vec::new();
    }
    let entries_lba = le64(&hdr, 72);
    let count = le32(&hdr, 80).min(MAX_GPT_ENTRIES);
    let size = le32(&hdr, 84) as usize;
    if !(128..=4096).contains(&size) {
        return Vec::new();
    }
    let mut table = vec![0u8; size * count as usize];
    let Some(at) = entries_lba.checked_mul(SECTOR) else {
        return Vec::new();
    };
    if disk.read_exact_at(&mut table, at).is_err() {
        return Vec::new();
    }
    table
        .chunks_exact(size)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|b| *b != 0))
        .filter_map(|(i, e)| {
            let first = le64(e, 32);
            let last = le64(e, 40);
            let sectors = last.checked_sub(first)?.checked_add(1)?;
            Some(Partition {
                index: i + 1,
                start: first.checked_mul(SECTOR)?,
                len: sectors.checked_mul(SECTOR)?,
                table: "gpt",
            })
        })
        .collect()
}
