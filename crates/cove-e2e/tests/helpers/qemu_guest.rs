//! Guest assets for boot tests: the Debian cloud kernel (bzImage, and the
//! vmlinux extracted from it) and a busybox initramfs generated here.
//!
//! Downloaded once into cargo's per-target temp dir and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Assets {
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
}

/// Lines the test init prints, in order.
pub const INIT_STARTED: &str = "COVE-INIT-STARTED";
pub const READY: &str = "COVE-READY";
pub const AGENT_HELLO: &str = "COVE-AGENT-HELLO";

/// Loaded in dependency order (from `modinfo -F depends`): the cloud kernel
/// has virtio as modules.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_mmio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    "drivers/char/virtio_console",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
echo COVE-INIT-STARTED
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do insmod /lib/modules/$m.ko; done
# No udev: wait for the devices to appear (bounded).
i=0
while [ $i -lt 100 ] && ! { [ -e /sys/block/vdb ] && ls /sys/class/virtio-ports/*/name >/dev/null 2>&1; }; do
  sleep 0.05; i=$((i+1))
done
for d in /sys/block/vd*; do echo "COVE-DISK $(basename $d) $(cat $d/serial)"; done
for p in /sys/class/virtio-ports/*; do
  name=$(cat $p/name)
  echo "COVE-PORT $name"
  [ "$name" = org.cove.agent ] && echo COVE-AGENT-HELLO > /dev/$(basename $p)
done
echo "COVE-CPUS $(grep -c ^processor /proc/cpuinfo)"
dmesg | grep -i tsc | sed 's/^/COVE-DMESG /'
echo COVE-READY
exec sleep 1000000
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn only_file(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// `apt-get download` the cloud kernel: the metapackage names the real package.
fn kernel_tree(cache: &Path) -> PathBuf {
    let tree = cache.join("kernel");
    if tree.join("boot").exists() {
        return tree;
    }
    let dl = cache.join("debs");
    std::fs::create_dir_all(&dl).unwrap();
    run(Command::new("apt-get")
        .args(["download", "linux-image-cloud-amd64"])
        .current_dir(&dl));
    let meta = only_file(&dl, "linux-image-cloud-amd64_");
    let depends = output(Command::new("dpkg-deb").arg("-f").arg(&meta).arg("Depends"));
    let real = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
        .unwrap_or_else(|| panic!("no kernel package in Depends: {depends}"))
        .to_owned();
    run(Command::new("apt-get")
        .args(["download", &real])
        .current_dir(&dl));
    let deb = only_file(&dl, &format!("{real}_"));
    let tmp = cache.join("kernel.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp));
    std::fs::rename(&tmp, &tree).unwrap();
    tree
}

/// The bzImage's payload is LZ4 (legacy frame, magic 02 21 4c 18); `lz4 -d`
/// from that offset yields the ELF vmlinux (trailing bytes make lz4 complain
/// after it has written everything, so only the ELF header is checked).
fn extract_vmlinux(bzimage: &Path, out: &Path) {
    if out.exists() {
        return;
    }
    let data = std::fs::read(bzimage).unwrap();
    let magic = [0x02, 0x21, 0x4c, 0x18];
    let pos = data
        .windows(4)
        .position(|w| w == magic)
        .expect("bzImage has an LZ4 payload");
    let tmp = out.with_extension("tmp");
    let file = std::fs::File::create(&tmp).unwrap();
    let mut child = Command::new("lz4")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&data[pos..]);
    }
    let _ = child.wait();
    let head = std::fs::read(&tmp).unwrap();
    assert!(
        head.len() > 1 << 20 && head.starts_with(b"\x7fELF"),
        "vmlinux extraction failed"
    );
    std::fs::rename(&tmp, out).unwrap();
}

fn build_initrd(tree: &Path, out: &Path) {
    let root = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (apt-get install busybox-static)");
    let modules = only_file(&tree.join("lib/modules"), "");
    let mut names = Vec::new();
    for m in MODULES {
        let name = Path::new(m)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let dst = root.join("lib/modules").join(format!("{name}.ko"));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(modules.join("kernel").join(format!("{m}.ko")), dst).unwrap();
        names.push(name);
    }
    let init = root.join("init");
    std::fs::write(&init, INIT.replace("MODULES", &names.join(" "))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = out.with_extension("tmp");
    let script = format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        root.display(),
        tmp.display()
    );
    run(Command::new("sh").arg("-c").arg(script));
    std::fs::rename(&tmp, out).unwrap();
}

/// Downloads and prepares everything once per test process. The cache is shared by every test
/// process (nextest runs each test in its own), so one prepares it at a time, under a lock.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cove-qemu-guest");
        std::fs::create_dir_all(&cache).unwrap();
        let _lock = cove_util::lock::exclusive(&cache.join("lock")).unwrap();
        let tree = kernel_tree(&cache);
        let bzimage = only_file(&tree.join("boot"), "vmlinuz-");
        let vmlinux = cache.join("vmlinux");
        extract_vmlinux(&bzimage, &vmlinux);
        let initrd = cache.join("initrd.cpio");
        build_initrd(&tree, &initrd);
        Assets {
            bzimage,
            vmlinux,
            initrd,
        }
    })
}
