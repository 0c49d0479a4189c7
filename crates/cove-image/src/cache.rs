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
    delete(paths, store, &m.id)?;
    Ok(m)
}

/// The record, then the files, of image `id` (already found and not in use).
fn delete(paths: &Paths, store: &mut Store, id: &str) -> Result<()> {
    store.delete_image(id)?;
    let dir = image_dir(paths, id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("cannot delete", dir)(e)),
        _ => Ok(()),
    }
}

/// An image [`prune`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pruned {
    pub name: String,
    pub id: String,
    /// Disk space its files took (allocated blocks: the root filesystem is sparse).
    pub bytes: u64,
}

/// Removes the images no VM uses that a rebuild left behind: every build of a name but its
/// newest, or with `all` the newest too. `in_use` holds the ids of images that VMs use
/// (the caller knows them, as for [`remove`]). A `dry_run` removes nothing and says what
/// would go.
pub fn prune(
    paths: &Paths,
    store: &mut Store,
    in_use: &std::collections::HashSet<String>,
    all: bool,
    dry_run: bool,
) -> Result<Vec<Pruned>> {
    let mut pruned = Vec::new();
    let mut newest_seen: Option<String> = None;
    // By name, newest first: the first row of each name is the one `resolve(name)` finds.
    for m in list(store)? {
        let newest = newest_seen.as_deref() != Some(m.name.as_str());
        newest_seen = Some(m.name.clone());
        if in_use.contains(&m.id) || (newest && !all) {
            continue;
        }
        let bytes = allocated_bytes(&image_dir(paths, &m.id));
        if !dry_run {
            // `list` found and decoded it already.
            delete(paths, store, &m.id)?;
        }
        pruned.push(Pruned {
            name: m.name,
            id: m.id,
            bytes,
        });
    }
    Ok(pruned)
}

/// Bytes allocated to the files of an image directory (flat: an image has no subdirectories).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImageSizes, InitKind};

    /// An image record with its kernel and a 64 KiB root filesystem, as a build leaves it.
    fn built(paths: &Paths, store: &mut Store, name: &str, id: &str, created_at: i64) {
        let dir = image_dir(paths, id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(files::KERNEL), b"bzImage").unwrap();
        std::fs::write(dir.join(files::ROOTFS), vec![1u8; 64 * 1024]).unwrap();
        let m = ImageManifest {
            id: id.into(),
            name: name.into(),
            arch: Default::default(),
            base: "minimal".into(),
            kernel: dir.join(files::KERNEL),
            vmlinux: None,
            initrd: None,
            rootfs: dir.join(files::ROOTFS),
            kernel_version: "6.1.0".into(),
            kernel_sha256: None,
            kernel_origin: None,
            kernel_config: None,
            cmdline_extra: vec![],
            modules: vec![],
            init: InitKind::Cove,
            agent: true,
            services: vec![],
            sizes: ImageSizes {
                kernel: 0,
                vmlinux: None,
                initrd: 0,
                rootfs: 64 * 1024,
                rootfs_content: 0,
            },
            created_at,
            build_seconds: 0.0,
        };
        record(store, &m).unwrap();
    }

    fn ids(pruned: &[Pruned]) -> Vec<&str> {
        pruned.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn prune_keeps_what_vms_use_and_the_newest_build_of_each_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let mut store = Store::open(&paths).unwrap();
        built(&paths, &mut store, "web", "web-old-000000000000", 1);
        built(&paths, &mut store, "web", "web-new-000000000000", 2);
        built(&paths, &mut store, "db", "db-old-0000000000000", 1);
        built(&paths, &mut store, "db", "db-new-0000000000000", 2);
        built(&paths, &mut store, "solo", "solo-00000000000000", 1);
        let in_use = ["db-old-0000000000000".to_string()].into();

        // A dry run names what would go and removes nothing.
        let would = prune(&paths, &mut store, &in_use, true, true).unwrap();
        assert_eq!(list(&store).unwrap().len(), 5);
        assert!(image_dir(&paths, "web-old-000000000000").exists());

        let pruned = prune(&paths, &mut store, &in_use, false, false).unwrap();
        assert_eq!(ids(&pruned), ["web-old-000000000000"]);
        assert!(pruned[0].bytes >= 64 * 1024, "{pruned:?}");
        assert!(!image_dir(&paths, "web-old-000000000000").exists());
        assert_eq!(resolve(&store, "web").unwrap().id, "web-new-000000000000");

        // `--all` takes the newest builds too, never an image in use.
        let pruned = prune(&paths, &mut store, &in_use, true, false).unwrap();
        let mut gone = ids(&pruned);
        gone.sort();
        assert_eq!(
            gone,
            [
                "db-new-0000000000000",
                "solo-00000000000000",
                "web-new-000000000000"
            ]
        );
        let mut would = ids(&would)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        would.sort();
        assert_eq!(would.len(), 4, "the dry run also named the old web build");
        let left: Vec<String> = list(&store).unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(left, ["db-old-0000000000000"]);
        assert!(image_dir(&paths, "db-old-0000000000000").exists());
    }
}
