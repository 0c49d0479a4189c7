//! `cove up FILE.toml`: converge the VMs a spec declares (build the image
//! if needed, create, start, wait ready, run their checks). Running it again
//! with nothing changed changes nothing.

use crate::context::Ctx;
use crate::up_spec::{DeclaredVm, ImageSource, UpSpec};
use anyhow::{Context, Result, bail};
use cove_image::ImageManifest;
use cove_state::{Store, VmRecord};
use cove_supervisor::lifecycle::{self, CreateOptions, StartOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec file (see examples/).
    pub file: PathBuf,
    /// Converge only; do not run the checks afterwards.
    #[arg(long)]
    pub no_test: bool,
    /// Also write the checks' results as JUnit XML to this file.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// The static `cove-agent` to put into a built image.
    #[arg(long, env = "COVE_AGENT")]
    pub agent: Option<PathBuf>,
    /// Recreate a VM whose spec changed even when its root disk holds
    /// changes made since it was created (they are lost; data disks are kept).
    #[arg(long)]
    pub force: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let spec = UpSpec::load(&args.file)?;
    let image = ensure_image(ctx, &spec.image, args.agent.clone())?;
    for vm in &spec.vms {
        let action = converge(ctx, &image, vm, args.force)
            .with_context(|| format!("bringing up VM `{}`", vm.name))?;
        cove_check::save(&ctx.paths.vm(vm.name.as_str()).checks_file(), &vm.checks)?;
        if !ctx.json {
            println!("{}: {action}", vm.name);
        }
    }
    if args.no_test {
        return Ok(ExitCode::SUCCESS);
    }
    let mut all_passed = true;
    for vm in &spec.vms {
        let junit = args
            .junit
            .as_ref()
            .map(|p| junit_path(p, &vm.name.to_string(), spec.vms.len()));
        let code = super::test::run(
            ctx,
            super::test::Args {
                name: vm.name.to_string(),
                junit,
                fresh: false,
                snapshot: None,
            },
        )?;
        all_passed &= code == ExitCode::SUCCESS;
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One JUnit file per VM when there are several.
fn junit_path(path: &std::path::Path, vm: &str, count: usize) -> PathBuf {
    if count == 1 {
        return path.to_owned();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("junit");
    path.with_file_name(format!("{stem}-{vm}.xml"))
}

pub(crate) fn ensure_image(
    ctx: &Ctx,
    source: &ImageSource,
    agent: Option<PathBuf>,
) -> Result<ImageManifest> {
    let mut store = Store::open(&ctx.paths)?;
    let arch = match source {
        ImageSource::Spec(spec) => spec.arch,
        ImageSource::Named(_) => cove_image::Arch::Amd64,
    };
    let agent = match agent {
        Some(a) => Some(a),
        None => Some(super::image::locate_agent(arch)?),
    };
    let progress = super::image::BuildProgress::new(ctx.json);
    let built = match source {
        ImageSource::Named(name) if name == "minimal" => {
            let opts = cove_image::MinimalOptions {
                agent,
                ..Default::default()
            };
            cove_image::build_minimal(&ctx.paths, &mut store, &opts, &progress)
        }
        ImageSource::Named(name) => cove_image::resolve(&store, name),
        ImageSource::Spec(spec) => {
            let opts = cove_image::BuildOptions {
                agent,
                ..Default::default()
            };
            cove_image::build_image(&ctx.paths, &mut store, spec, &opts, &progress)
        }
    };
    progress.finish();
    let built = built?;
    let requires = match source {
        ImageSource::Spec(spec) => spec.kernel_requires.clone(),
        ImageSource::Named(_) => Vec::new(),
    };
    crate::image_check::verify(&ctx.paths, &mut store, &built, &requires)?;
    Ok(built)
}

/// Brings one VM to its declared shape and to `running`; says what it did.
fn converge(ctx: &Ctx, image: &ImageManifest, want: &DeclaredVm, force: bool) -> Result<String> {
    let paths = &ctx.paths;
    let name = want.name.as_str();
    let start = StartOptions {
        boot_timeout: Duration::from_secs(want.boot_timeout),
        from: None,
    };
    if Store::open(paths)?.find_vm(name)?.is_none() {
        lifecycle::create(paths, &create_options(image, want))?;
        let started = lifecycle::start(paths, name, &start)?;
        return Ok(format!(
            "created and started (ready in {:.1}s)",
            started.boot_ms as f64 / 1000.0
        ));
    }
    let have = lifecycle::show(paths, name)?;
    let stop_timeout = Duration::from_secs(30);
    if let Some(why) = needs_recreate(&have, image, want) {
        // Data disks are separate files: recreating the VM keeps them. Its
        // root disk is not: say so, and never drop changes silently.
        let overlay = paths.vm(name).root_disk();
        let written = root_disk_written_bytes(&overlay)?;
        if written > 0 && !force {
            bail!(
                "VM `{name}` must be recreated because {why}, which would discard its root disk \
                 ({}: {} KiB written since the VM was created; its data disks are kept). \
                 Copy out what you need (`cove cp`), then rerun with `cove up --force`",
                overlay.display(),
                written.div_ceil(1024)
            );
        }
        lifecycle::stop(paths, name, stop_timeout)?;
        lifecycle::delete(paths, name, false)?;
        lifecycle::create(paths, &create_options(image, want))?;
        lifecycle::start(paths, name, &start)?;
        return Ok(format!("recreated ({why}) and started"));
    }
    let mut did = Vec::new();
    if have.cpus != want.cpus || have.memory_mib != want.memory_mib {
        lifecycle::stop(paths, name, stop_timeout)?;
        lifecycle::set(paths, name, Some(want.cpus), Some(want.memory_mib))?;
        did.push("resized");
    }
    if !lifecycle::show(paths, name)?.state.is_active() {
        lifecycle::start(paths, name, &start)?;
        did.push("started");
    }
    Ok(if did.is_empty() {
        "up to date, running".to_owned()
    } else {
        did.join(" and ")
    })
}

/// How many bytes of a VM's root disk overlay hold the guest's own writes
/// (clusters allocated in the overlay itself, not in its image): 0 for a
/// VM that never wrote to its root disk.
fn root_disk_written_bytes(overlay: &std::path::Path) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Extent {
        length: u64,
        depth: u64,
        data: bool,
    }
    // -U: a running QEMU holds the image's write lock; map only reads.
    let out = std::process::Command::new("qemu-img")
        .args(["map", "-U", "--output=json", "-f", "qcow2"])
        .arg(overlay)
        .output()
        .context("running qemu-img (install qemu-utils: `scripts/install-deps`)")?;
    if !out.status.success() {
        bail!(
            "qemu-img map {} failed: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let extents: Vec<Extent> =
        serde_json::from_slice(&out.stdout).context("reading qemu-img map's JSON")?;
    Ok(extents
        .iter()
        .filter(|e| e.depth == 0 && e.data)
        .map(|e| e.length)
        .sum())
}

/// What cannot change on an existing VM without recreating it.
fn needs_recreate(
    have: &VmRecord,
    image: &ImageManifest,
    want: &DeclaredVm,
) -> Option<&'static str> {
    let disks: Vec<String> = want.disks.iter().map(|d| d.name.clone()).collect();
    let mounts: std::collections::BTreeMap<String, String> = want
        .disks
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.mount.clone()?)))
        .collect();
    if have.image_id != image.id {
        Some("its image changed")
    } else if have.ports != want.ports {
        Some("its ports changed")
    } else if have.data_disks != disks || have.disk_mounts != mounts {
        Some("its disks changed")
    } else if have.host_mounts != want.mounts {
        Some("its shared folders changed")
    } else if have.machine != want.machine {
        Some("its machine changed")
    } else {
        None
    }
}

pub(crate) fn create_options(image: &ImageManifest, want: &DeclaredVm) -> CreateOptions {
    CreateOptions {
        name: want.name.clone(),
        image: image.id.clone(),
        cpus: want.cpus,
        memory_mib: want.memory_mib,
        machine: want.machine,
        ports: want.ports.clone(),
        disks: want.disks.clone(),
        mounts: want.mounts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `up` refuses to recreate a VM whose root disk holds the guest's
    /// writes: what tells it so must see them, and only them.
    #[test]
    fn root_disk_writes_are_counted_and_the_image_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
        let overlay = dir.path().join("root.qcow2");
        let created = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&overlay)
            .status()
            .unwrap();
        assert!(created.success());
        assert_eq!(root_disk_written_bytes(&overlay).unwrap(), 0);
        let wrote = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write 0 64k"])
            .arg(&overlay)
            .output()
            .unwrap();
        assert!(wrote.status.success(), "{wrote:?}");
        assert_eq!(root_disk_written_bytes(&overlay).unwrap(), 64 << 10);
        let err = root_disk_written_bytes(&dir.path().join("missing.qcow2")).unwrap_err();
        assert!(err.to_string().contains("qemu-img map"), "{err}");
    }
}
