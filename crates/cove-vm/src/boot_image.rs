//! What booting needs from an image, read back from the image store.

use cove_image::ImageManifest;
use cove_state::Store;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Image(#[from] cove_image::ImageError),
    #[error(
        "image `{name}` ({id}) lacks its file {path}; rebuild it with `cove image build {name}`"
    )]
    MissingFile {
        name: String,
        id: String,
        path: PathBuf,
    },
}

/// The image a VM boots: cove-image's manifest.
pub type BootImage = ImageManifest;

/// Finds an image by tag or id (prefix) for `create`.
pub fn resolve(store: &Store, name_or_id: &str) -> Result<BootImage, ImageError> {
    Ok(cove_image::resolve(store, name_or_id)?)
}

/// Loads the exact image a VM was created from, checking its files are
/// still there (a cache cleaned by hand must not become a confusing QEMU error).
pub fn load(store: &Store, id: &str) -> Result<BootImage, ImageError> {
    let image = resolve(store, id)?;
    for path in [&image.kernel, &image.rootfs]
        .into_iter()
        .chain(image.initrd.as_ref())
        .chain(image.vmlinux.as_ref())
    {
        if !path.exists() {
            return Err(ImageError::MissingFile {
                name: image.name.clone(),
                id: image.id.clone(),
                path: path.clone(),
            });
        }
    }
    Ok(image)
}
