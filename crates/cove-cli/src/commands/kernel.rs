//! `cove kernel check|config|vmlinux|explain|profiles|merge|verify|build`.

use crate::context::Ctx;
use crate::output;
use anyhow::{Context, Result, bail};
use cove_diagnose::kernel::{self, KernelConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KernelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KernelCommand {
    /// Check a kernel (bzImage, vmlinux, Image[.gz]) or config file against requirement
    /// profiles; exits 1 when a requirement fails.
    Check(CheckArgs),
    /// Print the configuration embedded in a kernel image (IKCONFIG).
    Config {
        /// bzImage, vmlinux, Image or Image.gz (or a config file, printed as parsed).
        kernel: PathBuf,
    },
    /// Write the uncompressed ELF vmlinux from a bzImage (for PVH boot).
    Vmlinux {
        bzimage: PathBuf,
        /// Output file.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Name the kernel option behind a syscall: `shmget`, `ENOSYS shmget`, or a log line.
    Explain {
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
    },
    /// List the built-in requirement profiles (and those of a profile file).
    Profiles {
        /// A TOML profile file (format: `[[profile]] name=…, [[profile.require]] option|any_of, why, builtin`).
        #[arg(long)]
        profiles_file: Option<PathBuf>,
    },
    /// Merge config fragments over a base config like scripts/kconfig/merge_config.sh
    /// (later wins) and report every override.
    Merge {
        base: PathBuf,
        #[arg(required = true, num_args = 1..)]
        fragments: Vec<PathBuf>,
        /// Write the merged config here (default: stdout).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// List every value the fragments requested that the resulting config (after
    /// `make olddefconfig`) does not have; exits 1 if any was lost.
    Verify {
        /// The resulting `.config`.
        #[arg(long)]
        config: PathBuf,
        #[arg(required = true, num_args = 1..)]
        fragments: Vec<PathBuf>,
    },
    /// Build a guest kernel: Debian's `linux-source-*` (or a local tree), cove's microVM
    /// base config (or another) plus fragments; merge, `make olddefconfig`, verify (refusing
    /// dropped options, naming their unmet dependencies), compile. Cached by source, merged
    /// config and compiler under the cache dir: an unchanged spec rebuilds nothing.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Kernel image or config file (a `vmlinuz-<ver>` without IKCONFIG uses the
    /// `config-<ver>` beside it).
    #[arg(required_unless_present = "config")]
    pub kernel: Option<PathBuf>,
    /// A kernel config file to check (instead of, or to override, the kernel's own).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Profiles to check, comma-separated or repeated: virtio, agent-serial, agent-vsock,
    /// net, postgres, tailscale, microvm, pvh, or one from --profiles-file.
    /// Default: virtio, agent-serial.
    #[arg(
        long = "require",
        short = 'r',
        visible_alias = "profile",
        value_delimiter = ','
    )]
    pub profiles: Vec<String>,
    #[arg(long)]
    pub profiles_file: Option<PathBuf>,
    /// The initramfs: `=m` options count only when their modules (and dependencies) are in it.
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Print the fragment that fixes every failure (and nothing else).
    #[arg(long)]
    pub fragment: bool,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Debian kernel source package (default: linux-source-6.1), fetched with apt.
    #[arg(long, conflicts_with = "tree")]
    pub source: Option<String>,
    /// A local kernel source tree instead of the package.
    #[arg(long, visible_alias = "src")]
    pub tree: Option<PathBuf>,
    /// Base config: `cove` (the built-in microVM base, default) or a config file.
    #[arg(long)]
    pub base: Option<String>,
    /// Fragments applied in order (repeatable): tun, postgres, netfilter, or a file.
    #[arg(long = "fragment", short = 'f')]
    pub fragments: Vec<String>,
    /// Also copy vmlinux, bzImage and config into this directory.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Compile even if olddefconfig dropped requested values.
    #[arg(long)]
    pub allow_lost: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match args.command {
        KernelCommand::Check(a) => check(ctx, a),
        KernelCommand::Config { kernel } => config(&kernel),
        KernelCommand::Vmlinux { bzimage, output } => vmlinux(ctx, &bzimage, &output),
        KernelCommand::Explain { query } => explain(ctx, &query.join(" ")),
        KernelCommand::Profiles { profiles_file } => profiles(ctx, profiles_file.as_deref()),
        KernelCommand::Merge {
            base,
            fragments,
            output,
        } => merge(ctx, &base, &fragments, output.as_deref()),
        KernelCommand::Verify { config, fragments } => verify(ctx, &config, &fragments),
        KernelCommand::Build(a) => build(ctx, a),
    }
}

fn check(ctx: &Ctx, args: CheckArgs) -> Result<ExitCode> {
    let profiles = kernel::resolve_profiles(&args.profiles, args.profiles_file.as_deref())?;
    let config_path = match (&args.config, &args.kernel) {
        (Some(config), _) => config,
        (None, Some(kernel)) => kernel,
        (None, None) => bail!("name a kernel or `--config FILE` to check"),
    };
    let (config, source) = kernel::load_config(config_path)?;
    let initramfs = args
        .initramfs
        .as_deref()
        .map(kernel::InitramfsModules::read)
        .transpose()?;
    let mut report = kernel::check(&config, &profiles, initramfs.as_ref());
    report.source = Some(source);
    if ctx.json {
        output::print_json(&report)?;
    } else if args.fragment {
        print!("{}", report.fragment());
    } else {
        match &report.source {
            Some(kernel::ConfigSource::Embedded {
                path,
                image,
                elapsed_ms,
            }) => println!(
                "config: embedded in {} ({image:?}, read in {elapsed_ms:.0} ms)",
                path.display()
            ),
            Some(kernel::ConfigSource::File { path }) => {
                println!("config: {}", path.display())
            }
            None => {}
        }
        println!("{report}");
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn config(path: &Path) -> Result<ExitCode> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match kernel::extract_ikconfig(&data) {
        Ok(embedded) => print!("{}", embedded.text),
        Err(kernel::KernelError::NoIkconfig) => {
            // A config file, or a distribution kernel with its config beside it.
            let (cfg, _) = kernel::load_config(path)?;
            print!("{}", cfg.to_text());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

fn vmlinux(ctx: &Ctx, bzimage: &Path, output_path: &Path) -> Result<ExitCode> {
    let data = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let started = std::time::Instant::now();
    let (compression, elf) = kernel::decompress_bzimage(&data)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!(kernel::KernelError::NotElf);
    }
    std::fs::write(output_path, &elf)
        .with_context(|| format!("writing {}", output_path.display()))?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "output": output_path,
            "compression": compression,
            "bytes": elf.len(),
            "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
        }))?;
    } else {
        println!(
            "{}: {} bytes ({compression} payload, {:.0} ms)",
            output_path.display(),
            elf.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(ctx: &Ctx, query: &str) -> Result<ExitCode> {
    let Some(ex) = kernel::explain(query) else {
        bail!(
            "no kernel option is known to provide a syscall in `{query}`; name the syscall (e.g. `cove kernel explain shmget`)"
        );
    };
    if ctx.json {
        output::print_json(&ex)?;
    } else {
        println!("{} ({}) needs:", ex.syscall, ex.feature);
        for line in ex.fragment() {
            println!("  {line}");
        }
        if !ex.note.is_empty() {
            println!("note: {}", ex.note);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn profiles(ctx: &Ctx, file: Option<&Path>) -> Result<ExitCode> {
    let mut all: Vec<kernel::Profile> = kernel::BUILTIN_PROFILES
        .iter()
        .filter_map(|n| kernel::builtin_profile(n))
        .collect();
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        all.extend(kernel::parse_profiles(&text)?);
    }
    if ctx.json {
        return output::print_json(&all).map(|_| ExitCode::SUCCESS);
    }
    for p in &all {
        println!("{}: {}", p.name, p.description);
        for r in &p.requires {
            let opts = r.alternatives().join(" | ");
            let builtin = if r.builtin { " (=y)" } else { "" };
            println!("  {opts}{builtin}: {}", r.why);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn merge(ctx: &Ctx, base: &Path, fragments: &[PathBuf], out: Option<&Path>) -> Result<ExitCode> {
    let merged = kernel::merge_files(base, fragments)?;
    if let Some(out) = out {
        std::fs::write(out, merged.config.to_text())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if ctx.json {
        output::print_json(&serde_json::json!({
            "overrides": merged.overrides,
            "redundant": merged.redundant,
            "requested": merged.requested.options.len(),
        }))?;
    } else {
        for o in &merged.overrides {
            eprintln!(
                "override: CONFIG_{} {} ({}) -> {} ({})",
                o.option, o.previous, o.previous_from, o.new, o.fragment
            );
        }
        if out.is_none() {
            print!("{}", merged.config.to_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(ctx: &Ctx, config: &Path, fragments: &[PathBuf]) -> Result<ExitCode> {
    let mut requested = KernelConfig::default();
    for f in fragments {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        requested.options.extend(KernelConfig::parse(&text).options);
    }
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let lost = kernel::verify(&requested, &KernelConfig::parse(&text));
    if ctx.json {
        output::print_json(&lost)?;
    } else if lost.is_empty() {
        println!(
            "all {} requested values are in {}",
            requested.options.len(),
            config.display()
        );
    } else {
        for l in &lost {
            println!("LOST {l}");
        }
    }
    Ok(if lost.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build(ctx: &Ctx, a: BuildArgs) -> Result<ExitCode> {
    let abs = |f: String| -> String {
        let p = Path::new(&f);
        if p.is_file() {
            p.canonicalize()
                .map(|p| p.display().to_string())
                .unwrap_or(f)
        } else {
            f
        }
    };
    let spec = cove_image::KernelBuild {
        source: a.source,
        tree: a.tree,
        base: a.base.map(abs),
        fragments: a.fragments.into_iter().map(abs).collect(),
    };
    let opts = cove_image::KernelBuildOptions {
        jobs: a.jobs,
        allow_lost: a.allow_lost,
    };
    let progress = crate::commands::image::BuildProgress::new(ctx.json);
    let built = cove_image::build_kernel(&ctx.paths, &spec, &opts, &progress);
    progress.finish();
    let k = built?;
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (from, name) in [
            (&k.vmlinux, "vmlinux"),
            (&k.bzimage, "bzImage"),
            (&k.config, "config"),
        ] {
            let to = out.join(name);
            std::fs::copy(from, &to).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    if ctx.json {
        output::print_json(&serde_json::json!({
            "kernel": k,
            "cached": k.cached,
        }))?;
    } else {
        for n in &k.notes {
            println!("{n}");
        }
        println!(
            "kernel {} ({}) {}",
            k.release,
            &k.key[..16],
            if k.cached {
                "was up to date".to_owned()
            } else {
                format!("built in {:.0} s", k.build_seconds)
            }
        );
        println!("vmlinux: {}", k.vmlinux.display());
        println!("bzImage: {}", k.bzimage.display());
        println!("config:  {}", k.config.display());
        println!("log:     {}", k.log.display());
    }
    Ok(ExitCode::SUCCESS)
}
