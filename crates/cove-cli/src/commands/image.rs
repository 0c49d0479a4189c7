//! `cove image build|list|rm|prune`.

use crate::context::Ctx;
use crate::output;
use crate::views::BuildEvent;
use anyhow::{Context, Result, bail};
use cove_image::{ImageManifest, MinimalOptions, Progress, Pruned};
use cove_state::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build an image: `minimal` (built in) or a spec file (`image.toml`).
    Build(BuildArgs),
    /// List built images.
    #[command(alias = "ls")]
    List,
    /// Remove an image (refused while a VM uses it).
    #[command(alias = "remove")]
    Rm {
        #[arg(add = crate::complete::image())]
        name: String,
    },
    /// Remove the images no VM uses that rebuilds left behind (every build of a
    /// name but its newest); with `--all`, every image no VM uses.
    Prune {
        /// Also the newest build of each name, when no VM uses it.
        #[arg(long)]
        all: bool,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// `minimal`, or the path of an image spec (TOML).
    pub what: String,
    /// Tag for the image (default: `minimal`, or the spec's `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Kernel: an apt package name, a `.deb`, or a bzImage path.
    #[arg(long)]
    pub kernel: Option<String>,
    /// Guest architecture of `minimal`: `amd64` (default) or `arm64` (booted with
    /// qemu-system-aarch64 under TCG on an x86-64 host). A spec file says `arch = "arm64"`.
    #[arg(long)]
    pub arch: Option<cove_image::Arch>,
    /// The static `cove-agent` to install (default: the one built beside `cove`).
    #[arg(long, env = "COVE_AGENT")]
    pub agent: Option<PathBuf>,
    /// Size of the root filesystem, e.g. `512M` or `4G` (default: content plus headroom).
    #[arg(long, value_parser = super::create::parse_size)]
    pub size: Option<u64>,
    /// Load this kernel module too (repeatable); `-NAME` leaves out one of
    /// the defaults (e.g. `-virtio_console` to reproduce an agent that never answers).
    #[arg(long = "module", allow_hyphen_values = true)]
    pub modules: Vec<String>,
    /// Skip the check that the kernel and initramfs can boot this image
    /// and serve its agent (and the spec's `kernel_requires` profiles).
    #[arg(long)]
    pub skip_kernel_check: bool,
    /// Build without the agent (no `exec`, readiness by console marker only).
    #[arg(long, conflicts_with = "agent")]
    pub no_agent: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match args.command {
        ImageCommand::Build(b) => build(ctx, b),
        ImageCommand::List => list(ctx),
        ImageCommand::Rm { name } => remove(ctx, &name),
        ImageCommand::Prune { all, dry_run } => prune(ctx, all, dry_run),
    }
}

fn build(ctx: &Ctx, args: BuildArgs) -> Result<ExitCode> {
    let built = if ctx.json {
        // The same events `POST /v1/images/build` streams, one JSON line each.
        let events = EventProgress(|event: BuildEvent| {
            if let Ok(line) = serde_json::to_string(&event) {
                eprintln!("{line}");
            }
        });
        run_build(&ctx.paths, args, &events)?
    } else {
        let progress = BuildProgress::new(false);
        let built = run_build(&ctx.paths, args, &progress);
        progress.finish();
        built?
    };
    let Built {
        manifest,
        cached,
        seconds,
    } = built;
    if ctx.json {
        output::print_json(&manifest)?;
    } else {
        println!(
            "image {} ({}) {} {:.1}s: kernel {}, {} modules, agent {}",
            manifest.name,
            &manifest.id[..12],
            if cached {
                "unchanged, found in the cache in"
            } else {
                "built in"
            },
            seconds,
            manifest.kernel_version,
            manifest.modules.len(),
            if manifest.agent { "included" } else { "absent" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A finished image build.
pub struct Built {
    pub manifest: ImageManifest,
    /// Found in the cache rather than built.
    pub cached: bool,
    pub seconds: f64,
}

/// The kernel check of a built image failed (a typed context, so callers
/// can tell this failure from the build's own).
#[derive(Debug)]
pub struct KernelCheckFailed;

impl std::fmt::Display for KernelCheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the image was built, but its kernel cannot boot it as asked")
    }
}

/// Builds an image as `cove image build` does, reporting to `progress`:
/// the one build path of the CLI and the API.
pub fn run_build(
    paths: &cove_state::Paths,
    args: BuildArgs,
    progress: &dyn Progress,
) -> Result<Built> {
    let mut store = Store::open(paths)?;
    // The spec's architecture, when building one, picks the agent as `--arch` does for minimal.
    let arch = match (&args.arch, args.what.as_str()) {
        (Some(a), _) => *a,
        (None, "minimal") => cove_image::Arch::Amd64,
        (None, spec) => crate::up_spec::load_image_spec(Path::new(spec))
            .map(|s| s.arch)
            .unwrap_or_default(),
    };
    if args.arch.is_some() && args.what != "minimal" {
        bail!("--arch is for `minimal`; a spec file says `arch = \"{arch}\"` itself");
    }
    let agent = if args.no_agent {
        None
    } else {
        Some(match args.agent {
            Some(path) => path,
            None => locate_agent(arch)?,
        })
    };
    let began = std::time::Instant::now();
    let mut kernel_requires = Vec::new();
    let manifest = if args.what == "minimal" {
        let mut opts = MinimalOptions {
            agent,
            size: args.size,
            extra_modules: args.modules.clone(),
            ..MinimalOptions::for_arch(arch)
        };
        if let Some(name) = args.name {
            opts.name = name;
        }
        if let Some(kernel) = &args.kernel {
            opts.kernel = cove_image::kernel_source_from_arg(kernel);
        }
        cove_image::build_minimal(paths, &mut store, &opts, progress).map_err(Into::into)
    } else {
        let path = Path::new(&args.what);
        if !path.exists() {
            bail!(
                "`{}` is neither `minimal` nor an image spec file; see examples/ for specs",
                args.what
            );
        }
        build_spec(
            paths,
            &mut store,
            path,
            args.name,
            agent,
            progress,
            &mut kernel_requires,
        )
    };
    let seconds = began.elapsed().as_secs_f64();
    let manifest = manifest?;
    if !args.skip_kernel_check {
        crate::image_check::verify(paths, &mut store, &manifest, &kernel_requires)
            .context(KernelCheckFailed)?;
    }
    // A build that found its result in the cache says so: the manifest's
    // build time is that of the original build.
    let cached = seconds < manifest.build_seconds / 2.0;
    Ok(Built {
        manifest,
        cached,
        seconds,
    })
}

fn build_spec(
    paths: &cove_state::Paths,
    store: &mut Store,
    path: &Path,
    name: Option<String>,
    agent: Option<PathBuf>,
    progress: &dyn Progress,
    kernel_requires: &mut Vec<String>,
) -> Result<ImageManifest> {
    let mut spec = crate::up_spec::load_image_spec(path)?;
    kernel_requires.clone_from(&spec.kernel_requires);
    if let Some(name) = name {
        spec.name = name;
    }
    let opts = cove_image::BuildOptions {
        agent,
        ..cove_image::BuildOptions::default()
    };
    Ok(cove_image::build_image(
        paths, store, &spec, &opts, progress,
    )?)
}

/// The static agent for `arch` built by `scripts/build`, found relative to this binary
/// (`target/release/cove` → `target/x86_64-unknown-linux-gnu/release/cove-agent`, or
/// `aarch64-unknown-linux-gnu` for arm64) or, for amd64, installed beside it.
pub fn locate_agent(arch: cove_image::Arch) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the cove binary")?;
    let dir = exe.parent().context("cove binary has no directory")?;
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let mut candidates = Vec::new();
    if arch == cove_image::Arch::Amd64 {
        candidates.push(dir.join("cove-agent-static"));
        candidates.push(dir.join("../lib/cove/cove-agent"));
    } else {
        candidates.push(dir.join(format!("../lib/cove/{arch}/cove-agent")));
    }
    if let Some(target) = dir.parent() {
        candidates.push(
            target
                .join(arch.rust_target())
                .join(profile)
                .join("cove-agent"),
        );
        if arch == cove_image::Arch::Amd64 {
            candidates.push(
                target
                    .join("x86_64-unknown-linux-musl")
                    .join(profile)
                    .join("cove-agent"),
            );
        }
    }
    if arch == cove_image::Arch::Amd64 {
        candidates.push(PathBuf::from("/usr/lib/cove/cove-agent"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no static {arch} cove-agent found (looked in {}); build it with `scripts/build` \
                 (as root for arm64: it cross-compiles in a Debian root), pass --agent PATH, \
                 or --no-agent",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn list(ctx: &Ctx) -> Result<ExitCode> {
    let store = Store::open(&ctx.paths)?;
    let images = cove_image::list(&store)?;
    if ctx.json {
        output::print_json(&images)?;
        return Ok(ExitCode::SUCCESS);
    }
    if images.is_empty() {
        println!("no images; build one with `cove image build minimal`");
        return Ok(ExitCode::SUCCESS);
    }
    let users = users_by_image(&store)?;
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|m| {
            let users = users.get(&m.id).map(Vec::as_slice).unwrap_or_default();
            vec![
                m.name.clone(),
                m.id[..12].to_owned(),
                m.arch.to_string(),
                m.base.clone(),
                m.kernel_version.clone(),
                output::mib(m.sizes.rootfs / (1024 * 1024)),
                if m.agent { "yes".into() } else { "no".into() },
                if users.is_empty() {
                    "-".into()
                } else {
                    users.join(",")
                },
            ]
        })
        .collect();
    output::print_table(
        &[
            "NAME", "ID", "ARCH", "BASE", "KERNEL", "ROOTFS", "AGENT", "USED BY",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// The VMs that use each image, by image id, names in order: what `rm`, `prune` and a failed
/// kernel check must not take from under them, and `list`'s USED BY column.
pub(crate) fn users_by_image(store: &Store) -> Result<HashMap<String, Vec<String>>> {
    let mut users: HashMap<String, Vec<String>> = HashMap::new();
    for vm in store.list_vms()? {
        users
            .entry(vm.image_id)
            .or_default()
            .push(vm.name.to_string());
    }
    Ok(users)
}

/// `cove_image::prune` with the images this installation's VMs use kept.
pub(crate) fn prune_unused(ctx: &Ctx, all: bool, dry_run: bool) -> Result<Vec<Pruned>> {
    let mut store = Store::open(&ctx.paths)?;
    let in_use = users_by_image(&store)?.into_keys().collect();
    Ok(cove_image::prune(
        &ctx.paths, &mut store, &in_use, all, dry_run,
    )?)
}

fn prune(ctx: &Ctx, all: bool, dry_run: bool) -> Result<ExitCode> {
    let pruned = prune_unused(ctx, all, dry_run)?;
    if ctx.json {
        output::print_json(&pruned)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for p in &pruned {
        let size = output::mib(p.bytes / (1024 * 1024));
        println!("{verb} image {} ({}), {size}", p.name, &p.id[..12]);
    }
    if pruned.is_empty() {
        let kept = if all {
            "every image is used by a VM"
        } else {
            "every image is used by a VM or is the newest build of its name (`--all` for those)"
        };
        println!("nothing to remove: {kept}");
    } else {
        let total = output::mib(pruned.iter().map(|p| p.bytes).sum::<u64>() / (1024 * 1024));
        let freed = if dry_run { "would free" } else { "freed" };
        let n = pruned.len();
        println!(
            "{freed} {total} in {n} image{}",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let mut store = Store::open(&ctx.paths)?;
    let image = cove_image::resolve(&store, name)?;
    let used_by = users_by_image(&store)?
        .remove(&image.id)
        .unwrap_or_default();
    let removed = cove_image::remove(&ctx.paths, &mut store, &image.id, &used_by)?;
    if ctx.json {
        output::print_json(&removed)?;
    } else {
        println!("removed image {} ({})", removed.name, &removed.id[..12]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows build stages as a spinner on a terminal, nothing with `--json`.
pub struct BuildProgress {
    bar: Option<ProgressBar>,
}

impl BuildProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for BuildProgress {
    fn stage_started(&self, stage: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(stage.to_owned());
        }
    }
    fn stage_finished(&self, stage: &str, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.println(format!("  {stage} ({:.1}s)", elapsed.as_secs_f64()));
        }
    }
    fn bytes(&self, stage: &str, done: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            bar.set_message(match total {
                Some(t) => format!("{stage}: {} / {} KiB", done / 1024, t / 1024),
                None => format!("{stage}: {} KiB", done / 1024),
            });
        }
    }
    fn message(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(line.to_owned());
        }
    }
}

/// Reports a build as [`BuildEvent`]s to a sink: the `--json` lines and the
/// API's event stream.
pub struct EventProgress<F: Fn(BuildEvent) + Sync>(pub F);

impl<F: Fn(BuildEvent) + Sync> Progress for EventProgress<F> {
    fn stage_started(&self, stage: &str) {
        (self.0)(BuildEvent::StageStarted {
            stage: stage.to_owned(),
        });
    }
    fn stage_finished(&self, stage: &str, elapsed: Duration) {
        (self.0)(BuildEvent::StageFinished {
            stage: stage.to_owned(),
            seconds: elapsed.as_secs_f64(),
        });
    }
    fn bytes(&self, stage: &str, done: u64, total: Option<u64>) {
        (self.0)(BuildEvent::Bytes {
            stage: stage.to_owned(),
            done,
            total,
        });
    }
    fn message(&self, line: &str) {
        (self.0)(BuildEvent::Message {
            line: line.to_owned(),
        });
    }
}
