//! Small helpers shared by the builders: running host tools with their output
//! kept for the error message and the build log, and hashing files.

use crate::error::{ImageError, Result, io_err};
use crate::progress::Reporter;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// Runs one build step. Its stdout and stderr go to the build log; a failure
/// becomes [`ImageError::Step`] naming the step, the command, its status and the end of its
/// output. `install` says how to get the program. Returns stdout.
pub(crate) fn run(
    rep: &Reporter,
    step: &str,
    cmd: &mut Command,
    install: &'static str,
) -> Result<String> {
    rep.message(&format!("run: {}", cove_util::tool::describe(cmd)));
    let step_err = |tool| ImageError::Step {
        step: step.to_owned(),
        tool,
    };
    let out = cove_util::tool::output(cmd, install).map_err(step_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    rep.output(&stdout);
    rep.output(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(step_err(cove_util::ToolError::failed(cmd, &out)));
    }
    Ok(stdout)
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err("cannot open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub(crate) fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The sha256 of a file that is never changed in place (a downloaded
/// package), remembered in `<file>.sha256` next to it together with the
/// size and mtime it was computed for, so a cached build does not rehash
/// tens of MiB every time.
pub(crate) fn sha256_file_cached(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(io_err("cannot stat", path))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp = format!("{} {mtime}", meta.len());
    let mut side = path.as_os_str().to_owned();
    side.push(".sha256");
    if let Ok(text) = std::fs::read_to_string(&side) {
        if let Some((s, hash)) = text.trim().rsplit_once(' ') {
            if s == stamp && hash.len() == 64 {
                return Ok(hash.to_owned());
            }
        }
    }
    let hash = sha256_file(path)?;
    // Best effort: a read-only download dir only costs the rehash next time.
    let _ = std::fs::write(&side, format!("{stamp} {hash}\n"));
    Ok(hash)
}

pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err("cannot create directory", path))
}

pub(crate) fn write_file(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, data).map_err(io_err("cannot write", path))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot chmod", path))
}

pub(crate) fn symlink(target: &str, link: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        create_dir_all(parent)?;
    }
    match std::os::unix::fs::symlink(target, link) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map_err(io_err("cannot create symlink", link)),
    }
}

/// Total apparent size of the regular files below `dir` (symlinks not followed).
pub(crate) fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io_err("cannot read directory", &d))? {
            let e = e.map_err(io_err("cannot read directory", &d))?;
            let ft = e.file_type().map_err(io_err("cannot stat", e.path()))?;
            entries += 1;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                bytes += e.metadata().map_err(io_err("cannot stat", e.path()))?.len();
            }
        }
    }
    Ok((bytes, entries))
}
