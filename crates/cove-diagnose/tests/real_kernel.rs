//! Tests against the real Debian cloud kernel package.

mod common;

use cove_diagnose::kernel;

#[test]
#[ignore = "downloads packages"]
fn debian_bzimage_payload_is_an_elf_vmlinux() {
    let (vmlinuz, _config) = common::debian_cloud_kernel();
    let data = std::fs::read(&vmlinuz).unwrap();
    let started = std::time::Instant::now();
    let (compression, _) = kernel::decompress_bzimage(&data).unwrap();
    let vmlinux = kernel::vmlinux_from_bzimage(&data).unwrap();
    eprintln!(
        "{}: {compression} payload, vmlinux {} bytes, {:?} per decompression",
        vmlinuz.display(),
        vmlinux.len(),
        started.elapsed() / 2
    );
    let elf = goblin::elf::Elf::parse(&vmlinux).expect("payload parses as ELF");
    assert_eq!(elf.header.e_machine, goblin::elf::header::EM_X86_64);
    assert!(
        vmlinux.len() > data.len(),
        "vmlinux is bigger than the compressed image"
    );
    // The Debian cloud kernel has no IKCONFIG: say so instead of failing obscurely.
    assert!(matches!(
        kernel::extract_ikconfig(&data),
        Err(kernel::KernelError::NoIkconfig)
    ));
}
