//! What booting needs from an image: the files and the kernel arguments.
//! The image builder (cove-image) writes the manifest; this reads it back
//! from the store by tag or content id.

use cove_state::Store;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no image named `{0}`; build one with `cove image build minimal` or see `cove image list`")]
    NotFound(String),
    #[error("image {id} is missing its file {path}; rebuild it with `cove image build`")]
    MissingFile { id: String, path: PathBuf },
    #[error("image {0} has an unreadable manifest: {1}")]
    BadManifest(String, String),
    #[error(transparent)]
    Store(#[from] cove_state::StoreError),
}

/// The part of an image manifest that booting uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BootImage {
    pub id: String,
    pub name: String,
    pub kernel: PathBuf,
    #[serde(default)]
    pub vmlinux: Option<PathBuf>,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    #[serde(default)]
    pub cmdline_extra: String,
    /// Whether cove-agent is in the image; readiness is its first answer.
    #[serde(default)]
    pub agent: bool,
}

/// Finds an image by tag or id (prefix) for `create`.
pub fn resolve(store: &Store, name_or_id: &str) -> Result<BootImage, ImageError> {
    let row = store
        .find_image(name_or_id)?
        .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
    parse(&row.id, &row.manifest)
}

/// Loads the exact image a VM was created from, checking its files exist.
pub fn load(store: &Store, id: &str) -> Result<BootImage, ImageError> {
    let image = resolve(store, id)?;
    for path in [&image.kernel, &image.initrd, &image.rootfs]
        .into_iter()
        .chain(image.vmlinux.as_ref())
    {
        if !path.exists() {
            return Err(ImageError::MissingFile {
                id: image.id.clone(),
                path: path.clone(),
            });
        }
    }
    Ok(image)
}

fn parse(id: &str, manifest: &str) -> Result<BootImage, ImageError> {
    serde_json::from_str(manifest).map_err(|e| ImageError::BadManifest(id.to_owned(), e.to_string()))
}
