//! ext4 through cove-disk on a raw image: superblock, group descriptors, extents, directories,
//! symlinks, the journal replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::image_file(data);
    if let Ok(img) = cove_disk::DiskImage::open(&path)
        && let Ok(fs) = cove_disk::Fs::open(img)
    {
        common::walk(&fs);
    }
});
