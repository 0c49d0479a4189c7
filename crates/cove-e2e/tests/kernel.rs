//! Guest kernels cove builds from Debian's `linux-source-6.1` (issue 13, seed 001).
//!
//! The kernel build is cached by content in the shared cache (`$COVE_E2E_SHARED/cache`):
//! on a warm machine these tests compile nothing. A cold run downloads the 139 MB source
//! package and compiles cove's base kernel with the `tun` fragment, the longest step of a cold
//! suite (README, "Guest kernels"), so `.config/nextest.toml` starts it first.

use cove_e2e::Cove;

/// cove's base without vsock: the seed's base, where olddefconfig dropped
/// VIRTIO_VSOCKETS silently.
fn base_without_vsockets() -> String {
    include_str!("../../../kernels/microvm-x86_64.config")
        .lines()
        .filter(|l| !l.contains("VSOCKETS"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
#[ignore = "downloads Debian's kernel source"]
fn seed_fragments_on_a_base_without_vsockets_are_refused_before_compiling_naming_vsockets() {
    let cove = Cove::new();
    let base = cove.root().join("base.config");
    std::fs::write(&base, base_without_vsockets()).unwrap();
    let frag = cove.root().join("guest.fragment");
    std::fs::write(
        &frag,
        "CONFIG_TUN=y\nCONFIG_SYSVIPC=y\nCONFIG_NETFILTER=y\nCONFIG_VIRTIO_VSOCKETS=y\n",
    )
    .unwrap();
    let err = cove.fails(&[
        "kernel",
        "build",
        "--base",
        base.to_str().unwrap(),
        "-f",
        frag.to_str().unwrap(),
    ]);
    assert!(err.contains("nothing was compiled"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("CONFIG_VIRTIO_VSOCKETS=y"))
        .unwrap_or_else(|| panic!("VIRTIO_VSOCKETS not named:\n{err}"));
    assert!(
        line.contains("depends on VSOCKETS") && line.contains("CONFIG_VSOCKETS=y"),
        "the missing dependency is not named: {line}"
    );
    // The other three survived: only the dropped option is reported.
    for kept in ["CONFIG_TUN=y", "CONFIG_SYSVIPC=y", "CONFIG_NETFILTER=y"] {
        assert!(
            !err.contains(&format!("requested `{kept}`")),
            "{kept} reported lost:\n{err}"
        );
    }
}

#[test]
#[ignore = "boots VMs; compiles a kernel from Debian's source (cached)"]
fn a_kernel_built_with_fragments_boots_an_image_without_initramfs_that_passes_its_checks() {
    let cove = Cove::new();
    // Built once per machine (content-addressed in the shared cache); the second build
    // finds it.
    let first = cove.json(&["kernel", "build", "-f", "tun"]);
    let again = cove.json(&["kernel", "build", "-f", "tun"]);
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(first["kernel"]["key"], again["kernel"]["key"]);
    let release = again["kernel"]["release"].as_str().unwrap().to_owned();
    assert!(release.ends_with("-cove"), "{release}");

    cove.ok(&[
        "image", "build", "minimal", "--name", "kbuild", "--kernel", "cove+tun",
    ]);
    let spec = cove.root().join("kb.toml");
    std::fs::write(
        &spec,
        format!(
            r#"image = "kbuild"
[[vm]]
name = "kb"
cpus = 1
memory = "256M"

[[vm.check]]
name = "runs cove's kernel"
command = "test \"$(uname -r)\" = {release}"

[[vm.check]]
name = "booted without an initramfs"
command = "dmesg | grep -q 'Run /sbin/cove-init' && ! dmesg | grep -q 'Unpacking initramfs'"

[[vm.check]]
name = "the fragment's TUN is built in"
command = "zcat /proc/config.gz | grep -qx CONFIG_TUN=y"

[[vm.check]]
name = "eth0 configured by the kernel"
command = "ip route | grep -q 'default via 10.0.2.2'"
"#
        ),
    )
    .unwrap();
    let up = cove.ok(&["up", spec.to_str().unwrap()]);
    assert!(up.contains("ALL 6 CHECKS PASSED"), "{up}");
    let show = cove.ok(&["show", "kb"]);
    assert!(
        show.contains(&release) && show.contains("no initramfs") && show.contains("sha256:"),
        "{show}"
    );
    cove.ok(&["down", spec.to_str().unwrap()]);
}
