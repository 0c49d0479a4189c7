//! The initramfs reader: newc cpio segments, compressed segments, module dependency lists.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = cove_diagnose::kernel::InitramfsModules::from_bytes(data) {
        for name in m.names().into_iter().take(64) {
            let _ = m.missing_for(&name);
        }
    }
});
