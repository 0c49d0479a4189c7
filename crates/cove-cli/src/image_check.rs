//! The kernel check every built image passes before cove lets it be used:
//! an image whose kernel cannot reach its disk, its console or its agent
//! (or lacks what the image's workload needs, e.g. SYSVIPC for PostgreSQL)
//! would only fail later, at boot, with a far vaguer message (seed 000).

use anyhow::{Result, bail};
use cove_diagnose::kernel::{self, InitramfsModules};
use cove_image::ImageManifest;
use cove_state::Store;

/// Profiles every image must pass: booting through cove's initramfs, or, for an image without
/// one (a kernel cove built), with the disk drivers built in; `agent-serial` only when it has
/// the agent.
fn base_profiles(manifest: &ImageManifest) -> Vec<String> {
    let boot = match manifest.initrd {
        Some(_) => "virtio",
        None => "virtio-direct",
    };
    let mut profiles = vec![boot.to_owned(), "microvm".to_owned()];
    if manifest.agent {
        profiles.push("agent-serial".to_owned());
    }
    profiles
}

/// The configuration of the kernel file the image boots: embedded in it (IKCONFIG, as in
/// every kernel cove builds), so a stale config file beside it cannot answer for it;
/// otherwise the config its package shipped.
pub fn booted_config(
    manifest: &ImageManifest,
) -> Result<(kernel::KernelConfig, kernel::ConfigSource)> {
    match kernel::load_config(&manifest.kernel) {
        Ok(found) => Ok(found),
        Err(e) => match &manifest.kernel_config {
            Some(file) => Ok(kernel::load_config(file)?),
            None => Err(e.into()),
        },
    }
}

/// Checks the built image's kernel configuration and initramfs against the
/// base profiles plus `extra`. A failing image is removed again (unless a
/// VM already uses it) and the error names each missing option and its fix.
pub fn verify(
    paths: &cove_state::Paths,
    store: &mut Store,
    manifest: &ImageManifest,
    extra: &[String],
) -> Result<()> {
    let (config, _) = booted_config(manifest)?;
    let initramfs = manifest
        .initrd
        .as_deref()
        .map(InitramfsModules::read)
        .transpose()?;
    let mut names = base_profiles(manifest);
    names.extend(extra.iter().cloned());
    let profiles = kernel::resolve_profiles(&names, None)?;
    let report = kernel::check(&config, &profiles, initramfs.as_ref());
    if report.ok() {
        return Ok(());
    }
    let in_use = crate::commands::image::users_by_image(store)?.contains_key(&manifest.id);
    if !in_use {
        cove_image::remove(paths, store, &manifest.id, &[])?;
    }
    bail!(
        "image `{}` would not work: its kernel fails the {} check{}\n{report}\n\
         fix the kernel (or its modules), or build anyway with --skip-kernel-check",
        manifest.name,
        names.join(", "),
        if names.len() > 1 { "s" } else { "" },
    )
}
