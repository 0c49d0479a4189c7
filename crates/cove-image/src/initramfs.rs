//! The initramfs cove generates: static busybox with its applet links, the
//! kernel modules the image needs (decompressed, in load order) and the
//! `/init` script in `init/initramfs-init.sh`.
//!
//! It is written uncompressed: the archive is a few MiB, and an emulated
//! guest spends longer inflating gzip than the kernel spends copying the
//! extra bytes.

use crate::archive::Archive;
use crate::error::{Result, io_err};
use crate::kmod::{Module, read_module};
use crate::progress::Reporter;
use crate::util;
use std::path::Path;
use std::process::Command;

/// The initramfs `/init` as written, with `@NAME@` placeholders.
const INIT_TEMPLATE: &str = include_str!("init/initramfs-init.sh");

/// The initramfs `/init`, its placeholders filled from the guest contract.
pub fn init_script() -> String {
    cove_guest::render_script(INIT_TEMPLATE)
}

/// The applet paths of a busybox binary (`bin/sh`, `sbin/insmod`, …), from
/// `busybox --list-full`. Runs the binary on the host: it is a static
/// x86-64 executable, as is the guest.
pub(crate) fn busybox_applets(rep: &Reporter, busybox: &Path) -> Result<Vec<String>> {
    let mut cmd = Command::new(busybox);
    cmd.arg("--list-full");
    let out = util::run(
        rep,
        "busybox --list-full",
        &mut cmd,
        "from the busybox-static package",
    )?;
    Ok(out
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.ends_with("/busybox") && l != "busybox")
        .collect())
}

/// Adds busybox at `bin/busybox` and a symlink for every applet.
pub(crate) fn add_busybox(a: &mut Archive, busybox: &[u8], applets: &[String]) {
    a.file("bin/busybox", 0o755, busybox.to_vec());
    for applet in applets {
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        a.symlink(applet, &target);
    }
}

/// Writes the initramfs to `out`; returns its size.
/// Adds `modules` under `lib/modules/` and their load order (dependencies first) as `list`.
fn add_modules(a: &mut Archive, list: &str, modules: &[Module]) -> Result<()> {
    let mut order = String::new();
    for m in modules {
        a.file(
            &format!("lib/modules/{}.ko", m.name),
            0o644,
            read_module(&m.path)?,
        );
        order.push_str(&m.name);
        order.push('\n');
    }
    a.file(list, 0o644, order.into_bytes());
    Ok(())
}

pub(crate) fn write_initramfs(
    out: &Path,
    busybox: &Path,
    applets: &[String],
    modules: &[Module],
    share_modules: &[Module],
) -> Result<u64> {
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "newroot", "run", "tmp"] {
        a.dir(d, 0o755);
    }
    // The kernel opens /dev/console for /init before devtmpfs is mounted.
    a.char_device("dev/console", 0o600, 5, 1);
    let bb = std::fs::read(busybox).map_err(io_err("cannot read", busybox))?;
    add_busybox(&mut a, &bb, applets);
    a.dir("lib/modules", 0o755);
    add_modules(&mut a, "etc/cove/modules", modules)?;
    add_modules(&mut a, "etc/cove/modules.share", share_modules)?;
    a.file("init", 0o755, init_script().into_bytes());
    let file = std::fs::File::create(out).map_err(io_err("cannot create", out))?;
    let w = a
        .write_to(std::io::BufWriter::new(file))
        .map_err(io_err("cannot write", out))?;
    w.into_inner()
        .map_err(|e| io_err("cannot write", out)(e.into_error()))?
        .sync_all()
        .map_err(io_err("cannot write", out))?;
    Ok(std::fs::metadata(out)
        .map_err(io_err("cannot stat", out))?
        .len())
}
