//! `cove kernel check` on a file: bzImage setup header, the six decompressors (capped), ELF and
//! the IKCONFIG blob.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = cove_diagnose::kernel::image::extract_ikconfig(data) {
        let _ = cove_diagnose::kernel::KernelConfig::parse(&c.text);
    }
    let _ = cove_diagnose::kernel::image::ikconfig_in(data);
});
