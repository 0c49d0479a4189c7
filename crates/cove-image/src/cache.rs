//! The image cache: image directories under `Paths::images()/<id>/`, built
//! in a temporary directory next to them and renamed into place, and their
//! records in the store.

use crate::error::{ImageError, Result, io_err};
use crate::manifest::{ImageManifest, files};
use cove_state::store::ImageRow;
use cove_state::{Paths, Store};
use std::path::{Path, PathBuf};

/// Bump when the layout or content of images changes for the same inputs,
/// so that older cached images are not reused.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The directory of image `id`.
pub fn image_dir(paths: &Paths, id: &str) -> PathBuf {
    paths.images().join(id)
}

fn decode(row: &ImageRow) -> Result<ImageManifest> {
    serde_json::from_str(&row.manifest).map_err(|e| ImageError::CorruptManifest {
        id: row.id.clone(),
        reason: e.to_string(),
    })
}

/// Finds an image by name (its newest build), full id or id prefix, and
/// checks that its files are still there.
pub fn resolve(store: &Store, name_or_id: &str) -> Result<ImageManifest> {
    let row = store
        .find_image(name_or_id)?
        .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
    let m = decode(&row)?;
    let vmlinux = m.vmlinux.iter();
    if let Some(path) = [&m.kernel, &m.rootfs]
        .into_iter()
        .chain(m.initrd.iter())
        .chain(vmlinux)
        .find(|p| !p.exists())
    {
        return Err(ImageError::FilesMissing {
            name: m.name.clone(),
            id: m.id.clone(),
            path: path.clone(),
        });
    }
    Ok(m)
}

/// Every image, by name then newest first.
pub fn list(store: &Store) -> Result<Vec<ImageManifest>> {
    store.list_images()?.iter().map(decode).collect()
}

/// Deletes an image's record and files. `used_by` names the VMs that use
/// it (the caller knows them); if there are any, nothing is deleted and
/// [`ImageError::InUse`] is returned.
pub fn remove(
    paths: &Paths,
    store: &mut Store,
    name_or_id: &str,
    used_by: &[String],
) -> Result<ImageManifest> {
    let row = store
        .find_image(name_or_id)?
        .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
    let m = decode(&row)?;
    if !used_by.is_empty() {
        return Err(ImageError::InUse {
            name: m.name,
            id: m.id,
            used_by: used_by.to_vec(),
        });
    }
    store.delete_image(&m.id)?;
    let dir = image_dir(paths, &m.id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err("cannot delete", dir)(e));
        }
        _ => {}
    }
    Ok(m)
}

/// The image `id` if it was built before: its directory is complete (the
/// manifest is written last, before the rename). Re-records it in the store
/// if the record was lost.
pub(crate) fn cached(paths: &Paths, store: &mut Store, id: &str) -> Result<Option<ImageManifest>> {
    let path = image_dir(paths, id).join(files::MANIFEST);
    let Ok(json) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let m: ImageManifest = match serde_json::from_str(&json) {
        Ok(m) => m,
        Err(_) => return Ok(None), // rebuilt below, replacing the broken directory
    };
    let exists = [&m.kernel, &m.rootfs]
        .into_iter()
        .chain(m.initrd.iter())
        .all(|p| p.exists());
    if !exists {
        return Ok(None);
    }
    if store.find_image(id)?.is_none_or(|r| r.id != id) {
        record(store, &m)?;
    }
    Ok(Some(m))
}

fn record(store: &mut Store, m: &ImageManifest) -> Result<()> {
    let manifest = serde_json::to_string(m).map_err(|e| ImageError::CorruptManifest {
        id: m.id.clone(),
        reason: e.to_string(),
    })?;
    store.put_image(&ImageRow {
        id: m.id.clone(),
        name: m.name.clone(),
        manifest,
        created_at: m.created_at,
    })?;
    Ok(())
}

/// A directory to build image `id` in, next to where it will live.
pub(crate) fn staging(paths: &Paths) -> Result<tempfile::TempDir> {
    let images = paths.images();
    crate::util::create_dir_all(&images)?;
    remove_stale_builds(&images);
    tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&images)
        .map_err(io_err("cannot create a build directory in", images))
}

/// Build directories of builds that were killed (a finished or failed build
/// removes its own) are deleted once they are a day old; younger ones may
/// belong to a build still running.
fn remove_stale_builds(images: &Path) {
    let Ok(rd) = std::fs::read_dir(images) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let stale = e.file_name().to_string_lossy().starts_with(".build-")
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Moves the finished staging directory to `images()/<id>` and records the
/// image. The manifest's paths must already point at the final directory.
pub(crate) fn install(
    paths: &Paths,
    store: &mut Store,
    staging: tempfile::TempDir,
    m: &ImageManifest,
    log: &str,
) -> Result<ImageManifest> {
    let json = serde_json::to_string_pretty(m).map_err(|e| ImageError::CorruptManifest {
        id: m.id.clone(),
        reason: e.to_string(),
    })?;
    crate::util::write_file(&staging.path().join(files::BUILD_LOG), log)?;
    crate::util::write_file(&staging.path().join(files::MANIFEST), json)?;
    let dir = image_dir(paths, &m.id);
    if dir.exists() {
        // A concurrent build of the same id finished first: keep theirs,
        // VMs may already use it.
        if let Some(theirs) = cached(paths, store, &m.id)? {
            return Ok(theirs);
        }
        // A broken leftover (no readable manifest, or files missing).
        std::fs::remove_dir_all(&dir).map_err(io_err("cannot replace", &dir))?;
    }
    let tmp = staging.keep();
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another build of the same id won the race: theirs is as good.
        if let Some(m) = cached(paths, store, &m.id)? {
            return Ok(m);
        }
        return Err(io_err("cannot move the built image to", dir)(e));
    }
    record(store, m)?;
    Ok(m.clone())
}

/// Rewrites a path inside the staging directory to its final place.
pub(crate) fn final_path(paths: &Paths, id: &str, file: &str) -> PathBuf {
    image_dir(paths, id).join(file)
}

pub(crate) fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
