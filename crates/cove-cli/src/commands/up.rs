//! `cove up FILE.toml`: converge the VMs a spec declares (build the image
//! if needed, create, start, wait ready, run their checks). Running it again
//! with nothing changed changes nothing.

use crate::context::Ctx;
use crate::up_spec::{DeclaredVm, ImageSource, UpSpec};
use anyhow::{Context, Result, bail};
use cove_image::ImageManifest;
use cove_state::{Store, VmRecord};
use cove_vm::lifecycle::{self, CreateOptions, StartOptions};
use cove_vm::{data_disk, snapshot, up_snapshot};
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
    ensure_networks(ctx, &spec)?;
    // In dependency order (`after`, see `UpSpec`): each VM is running with its agent answering
    // before the VMs that name it start.
    let mut keep = Vec::new();
    for vm in &spec.vms {
        let (action, fresh) = converge(ctx, &image, vm, args.force)
            .with_context(|| format!("bringing up VM `{}`", vm.name))?;
        cove_check::save(&ctx.paths.vm(vm.name.as_str()).checks_file(), &vm.checks)?;
        if !ctx.json {
            println!("{}: {action}", vm.name);
        }
        keep.push(fresh);
    }
    if !ctx.json {
        note_unused_builds(ctx);
    }
    if args.no_test {
        return Ok(ExitCode::SUCCESS);
    }
    let mut all_passed = true;
    for (vm, fresh) in spec.vms.iter().zip(keep) {
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
        if code == ExitCode::SUCCESS
            && let Some(key) = fresh
        {
            keep_snapshot(ctx, vm.name.as_str(), &key);
        }
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Creates the networks the spec's VMs name that do not exist yet (NAT out, a free subnet).
fn ensure_networks(ctx: &Ctx, spec: &UpSpec) -> Result<()> {
    let have: Vec<String> = Store::open(&ctx.paths)?
        .list_networks()?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let mut made: Vec<&str> = Vec::new();
    for name in spec.vms.iter().flat_map(|v| &v.networks) {
        if have.contains(name) || made.contains(&name.as_str()) {
            continue;
        }
        let net = cove_net::create(&ctx.paths, name, None, true)
            .with_context(|| format!("creating network `{name}`"))?;
        if !ctx.json {
            println!("network {name}: created ({})", net.subnet);
        }
        made.push(name);
    }
    Ok(())
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

/// Brings one VM to its declared shape and to `running`; says what it did, and the key to keep
/// a snapshot under once its checks pass when it is a fresh VM that booted cold.
fn converge(
    ctx: &Ctx,
    image: &ImageManifest,
    want: &DeclaredVm,
    force: bool,
) -> Result<(String, Option<String>)> {
    let paths = &ctx.paths;
    let name = want.name.as_str();
    let start = StartOptions {
        boot_timeout: Duration::from_secs(want.boot_timeout),
        from: None,
    };
    if Store::open(paths)?.find_vm(name)?.is_none() {
        return create_fresh(ctx, image, want, &start);
    }
    let have = lifecycle::show(paths, name)?;
    let stop_timeout = Duration::from_secs(30);
    if let Some(why) = needs_recreate(&have, image, want) {
        // Data disks are separate files: recreating the VM keeps them. Its
        // root disk is not: say so, and never drop changes silently.
        let overlay = paths.vm(name).root_disk();
        let written = cove_vm::backends::for_kind(have.backend)?
            .disk_written_bytes(&overlay)
            .with_context(|| format!("reading what the guest wrote to {}", overlay.display()))?;
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
        lifecycle::delete(paths, name, false, false)?;
        let (how, fresh) = create_fresh(ctx, image, want, &start)?;
        return Ok((format!("recreated ({why}); {how}"), fresh));
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
    let how = if did.is_empty() {
        "up to date, running".to_owned()
    } else {
        did.join(" and ")
    };
    Ok((how, None))
}

/// Creates the declared VM, which does not exist, and starts it: restored from the snapshot an
/// earlier `up` kept for the same image and settings when the VM may take it, else booted.
///
/// It may only when nothing it would resume over holds data of its own: every data disk it
/// declares is created now (one that exists holds what a VM wrote after the snapshot, or is
/// another VM's), and it is on no network and shares no host folder (their state lives outside
/// the guest). The second value is the key to keep a snapshot under after a cold boot.
fn create_fresh(
    ctx: &Ctx,
    image: &ImageManifest,
    want: &DeclaredVm,
    start: &StartOptions,
) -> Result<(String, Option<String>)> {
    let paths = &ctx.paths;
    let name = want.name.as_str();
    let opts = create_options(image, want);
    let may_restore = want.networks.is_empty()
        && want.mounts.is_empty()
        && want
            .disks
            .iter()
            .all(|d| !data_disk::path(paths, &d.name).exists());
    let key = may_restore.then(|| up_snapshot::key(&opts));
    lifecycle::create(paths, &opts)?;
    if let Some(key) = &key
        && up_snapshot::link_into(paths, name, key)?
    {
        let from = StartOptions {
            from: Some(up_snapshot::TAG.to_owned()),
            ..start.clone()
        };
        match lifecycle::start(paths, name, &from) {
            Ok(started) => {
                return Ok((
                    format!(
                        "created and restored from its `up` snapshot (image and settings \
                         unchanged; ready in {:.2}s)",
                        started.boot_ms as f64 / 1000.0
                    ),
                    None,
                ));
            }
            Err(e) => {
                // Nothing of the VM's own is lost: it and its disks were made just now.
                eprintln!(
                    "warning: `{name}` could not be restored from its `up` snapshot ({e}); \
                     booting it cold"
                );
                up_snapshot::forget(paths, name)?;
                let _ = lifecycle::kill(paths, name);
                lifecycle::delete(paths, name, true, true)?;
                lifecycle::create(paths, &opts)?;
            }
        }
    }
    let started = lifecycle::start(paths, name, start)?;
    Ok((
        format!(
            "created and started (ready in {:.1}s)",
            started.boot_ms as f64 / 1000.0
        ),
        key,
    ))
}

/// Snapshots a fresh VM whose checks just passed for the next fresh `up` of it. A failure costs
/// only that speed-up: said, not fatal.
fn keep_snapshot(ctx: &Ctx, name: &str, key: &str) {
    let kept = snapshot::take(&ctx.paths, name, up_snapshot::TAG, true)
        .and_then(|_| up_snapshot::keep(&ctx.paths, name, key));
    match kept {
        Ok(()) if !ctx.json => println!(
            "{name}: kept snapshot `{}` of it; a new `{name}` with this image and these \
             settings restores it instead of booting",
            up_snapshot::TAG
        ),
        Ok(()) => {}
        Err(e) => eprintln!("warning: no snapshot of `{name}` kept for the next `up`: {e}"),
    }
}

/// A rebuilt image leaves its predecessor behind (0.1-0.6 GB each); say so once they are
/// unused, as the VMs on them were recreated. Only a note: `up` never deletes images itself.
fn note_unused_builds(ctx: &Ctx) {
    let Ok(unused) = super::image::prune_unused(ctx, false, true) else {
        return;
    };
    if unused.is_empty() {
        return;
    }
    let bytes: u64 = unused.iter().map(|p| p.bytes).sum();
    let n = unused.len();
    let (builds, take) = if n == 1 {
        ("build", "takes")
    } else {
        ("builds", "take")
    };
    println!(
        "note: {n} earlier image {builds} that no VM uses {take} {}; `cove image prune` removes them",
        crate::output::mib(bytes / (1024 * 1024))
    );
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
    } else if have.networks != want.networks {
        Some("its networks changed")
    } else if have.host_loopback != want.host_loopback {
        Some("its host loopback access changed")
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
        backend: cove_backend::BackendKind::Qemu,
        ports: want.ports.clone(),
        disks: want.disks.clone(),
        mounts: want.mounts.clone(),
        networks: want.networks.clone(),
        host_loopback: want.host_loopback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_snapshot_key_changes_with_the_image_and_every_setting() {
        let base = CreateOptions {
            name: cove_state::VmName::new("web").unwrap(),
            image: "image-a".into(),
            cpus: 1,
            memory_mib: 256,
            machine: cove_backend::Machine::Microvm,
            backend: cove_backend::BackendKind::Qemu,
            ports: Vec::new(),
            disks: vec![data_disk::DiskRequest {
                name: "vol".into(),
                size_bytes: 16 << 20,
                mount: Some("/data".into()),
            }],
            mounts: Vec::new(),
            networks: Vec::new(),
            host_loopback: false,
        };
        let key = |o: &CreateOptions| up_snapshot::key(o);
        assert_eq!(key(&base), key(&base.clone()));
        let changed = [
            CreateOptions {
                image: "image-b".into(),
                ..base.clone()
            },
            CreateOptions {
                cpus: 2,
                ..base.clone()
            },
            CreateOptions {
                memory_mib: 320,
                ..base.clone()
            },
            CreateOptions {
                machine: cove_backend::Machine::Q35,
                ..base.clone()
            },
            CreateOptions {
                disks: Vec::new(),
                ..base.clone()
            },
            CreateOptions {
                host_loopback: true,
                ..base.clone()
            },
        ];
        for other in &changed {
            assert_ne!(key(&base), key(other), "{other:?}");
        }
    }
}
