//! `cove cp SRC DST`: copy files or directories into (`NAME:/path` as DST)
//! or out of (`NAME:/path` as SRC) a running VM, streamed, modes kept.

use super::agent_client;
use crate::context::Ctx;
use crate::output;
use anyhow::{Result, bail};
use cove_state::VmName;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A local path, or `NAME:/path` in a VM.
    #[arg(add = crate::complete::vm_path())]
    pub src: String,
    /// A local path, or `NAME:/path` in a VM.
    #[arg(add = crate::complete::vm_path())]
    pub dst: String,
    /// Show bytes copied as they go.
    #[arg(long, short = 'P')]
    pub progress: bool,
}

/// `NAME:/abs/path` → (NAME, /abs/path); anything else is a local path.
fn remote(spec: &str) -> Option<(String, String)> {
    let (name, path) = spec.split_once(':')?;
    (VmName::new(name).is_ok() && path.starts_with('/')).then(|| (name.to_owned(), path.to_owned()))
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let (name, remote_path, local, inbound) = match (remote(&args.src), remote(&args.dst)) {
        (None, Some((n, p))) => (n, p, PathBuf::from(&args.src), true),
        (Some((n, p)), None) => (n, p, PathBuf::from(&args.dst), false),
        (Some(_), Some(_)) => {
            bail!("copying between two VMs is not supported; copy through the host")
        }
        (None, None) => bail!(
            "neither `{}` nor `{}` names a VM path; write one side as NAME:/absolute/path",
            args.src,
            args.dst
        ),
    };
    let opener = agent_client::opener(ctx, &name)?;
    let bar = (args.progress && !ctx.json).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {bytes} copied ({bytes_per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    let report = |n: u64| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    };
    let progress: cove_agent_link::Progress<'_> = bar.as_ref().map(|_| &report as _);
    let started = Instant::now();
    let bytes = crate::rt::block_on(async {
        if inbound {
            cove_agent_link::copy_in(&opener, &local, &remote_path, progress).await
        } else {
            cove_agent_link::copy_out(&opener, &remote_path, &local, progress).await
        }
    })??;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        output::print_json(&serde_json::json!({"bytes": bytes, "seconds": secs}))?;
    } else if args.progress {
        println!(
            "copied {:.1} MiB in {secs:.2}s ({:.1} MiB/s)",
            bytes as f64 / 1048576.0,
            bytes as f64 / 1048576.0 / secs.max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::remote;

    #[test]
    fn vm_paths_are_told_from_local_ones() {
        assert_eq!(
            remote("web:/etc/hosts"),
            Some(("web".into(), "/etc/hosts".into()))
        );
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/x"), None);
        assert_eq!(remote("web:relative"), None);
    }
}
