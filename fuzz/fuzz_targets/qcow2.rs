//! qcow2 through cove-disk: header, L1/L2 tables, refcounts, compressed clusters, then whatever
//! filesystem the guest-visible bytes hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // Always a qcow2 header, so the fuzzer spends its time past the magic.
    let mut img = b"QFI\xfb".to_vec();
    img.extend_from_slice(data);
    let path = common::image_file(&img);
    if let Ok(disk) = cove_disk::DiskImage::open(&path) {
        let mut buf = vec![0u8; 4096];
        let size = disk.size();
        for off in [0, 1024, size / 2, size.saturating_sub(4096)] {
            let _ = disk.read_exact_at(&mut buf, off.min(size.saturating_sub(4096)));
        }
        if let Ok(fs) = cove_disk::Fs::open(disk) {
            common::walk(&fs);
        }
    }
});
