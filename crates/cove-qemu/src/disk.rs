//! QEMU's disks: qcow2 files made and changed with `qemu-img`, through
//! cove-util's tool runner (its error names the command, status and output).

use std::path::Path;
use std::process::Command;

use cove_backend::BackendError;

const TOOL: &str = "qemu-img";
const INSTALL: &str = "apt-get install qemu-utils";

/// A qcow2 overlay over a raw base costs the same whatever the base's size:
/// only a header and empty tables are written.
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<(), BackendError> {
    let base = std::fs::canonicalize(base)?;
    run(
        Command::new(TOOL)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(overlay),
        "check that the image file exists and is readable (`cove image list`)",
    )
}

/// A qcow2 overlay over a qcow2 disk (a snapshot's): the disk as the
/// snapshot had it, its writes its own.
pub fn create_child(base: &Path, overlay: &Path) -> Result<(), BackendError> {
    run(
        Command::new(TOOL)
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(overlay),
        "check that the snapshot's disk exists (`cove snapshot ls`)",
    )
}

/// Converts a raw file into a qcow2 disk (only the written clusters are kept).
pub fn import_raw(raw: &Path, disk: &Path) -> Result<(), BackendError> {
    run(
        Command::new(TOOL)
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(disk),
        "check free space in the data directory (`cove doctor`)",
    )
}

/// Grows a disk (`qemu-img resize` refuses to shrink without `--shrink`).
pub fn grow(disk: &Path, size_bytes: u64) -> Result<(), BackendError> {
    run(
        Command::new(TOOL)
            .args(["resize", "-q", "-f", "qcow2"])
            .arg(disk)
            .arg(size_bytes.to_string()),
        "a disk can only grow; check free space (`cove doctor`)",
    )
}

/// The bytes an overlay holds itself (not its backing file's).
pub fn written_bytes(overlay: &Path) -> Result<u64, BackendError> {
    #[derive(serde::Deserialize)]
    struct Extent {
        length: u64,
        depth: u64,
        data: bool,
    }
    // -U: a running QEMU holds the image's write lock; map only reads.
    let out = cove_util::tool::run(
        Command::new(TOOL)
            .args(["map", "-U", "--output=json", "-f", "qcow2"])
            .arg(overlay),
        INSTALL,
    )
    .map_err(|e| tool_error(e, "check that the VM's root disk exists (`cove show`)"))?;
    let extents: Vec<Extent> = serde_json::from_slice(&out.stdout)
        .map_err(|e| tool_error(e, "qemu-img map printed JSON this cove cannot read"))?;
    Ok(extents
        .iter()
        .filter(|e| e.depth == 0 && e.data)
        .map(|e| e.length)
        .sum())
}

fn run(cmd: &mut Command, fix: &'static str) -> Result<(), BackendError> {
    cove_util::tool::run(cmd, INSTALL)
        .map(drop)
        .map_err(|e| tool_error(e, fix))
}

fn tool_error(
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    fix: &'static str,
) -> BackendError {
    BackendError::Tool {
        source: source.into(),
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(disk: &Path) -> String {
        let out = Command::new(TOOL).arg("info").arg(disk).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn overlays_imports_growth_and_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("base.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let overlay = dir.path().join("root.qcow2");
        create_overlay(&raw, &overlay).unwrap();
        assert!(
            info(&overlay).contains("backing file:"),
            "{}",
            info(&overlay)
        );
        assert_eq!(written_bytes(&overlay).unwrap(), 0);
        let child = dir.path().join("child.qcow2");
        create_child(&overlay, &child).unwrap();
        assert!(
            info(&child).contains("backing file format: qcow2"),
            "{}",
            info(&child)
        );
        let data = dir.path().join("data.qcow2");
        import_raw(&raw, &data).unwrap();
        assert!(info(&data).contains("8 MiB"), "{}", info(&data));
        grow(&data, 16 << 20).unwrap();
        assert!(info(&data).contains("16 MiB"), "{}", info(&data));
        let err = grow(&data, 1 << 20).unwrap_err();
        assert!(matches!(err, BackendError::Tool { .. }), "{err}");
        let err = create_overlay(&dir.path().join("missing"), &overlay).unwrap_err();
        assert!(matches!(err, BackendError::Io(_)), "{err}");
    }

    /// `up` refuses to recreate a VM whose root disk holds the guest's
    /// writes: what tells it so must see them, and only them.
    #[test]
    fn root_disk_writes_are_counted_and_the_image_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
        let overlay = dir.path().join("root.qcow2");
        create_overlay(&base, &overlay).unwrap();
        assert_eq!(written_bytes(&overlay).unwrap(), 0);
        let wrote = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write 0 64k"])
            .arg(&overlay)
            .output()
            .unwrap();
        assert!(wrote.status.success(), "{wrote:?}");
        assert_eq!(written_bytes(&overlay).unwrap(), 64 << 10);
        let err = written_bytes(&dir.path().join("missing.qcow2")).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("qemu-img map"), "{chain}");
    }
}
