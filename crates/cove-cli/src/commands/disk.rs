//! `cove disk ls|cat|get|info NAME:/path`: read files from a stopped VM's
//! disk without mounting it and without root (seed 000: a team pulled the
//! rootfs off the device and ran e2fsck and fuse2fs by hand to read
//! /var/log/init.log). The reading itself is `cove-disk`.

use crate::context::Ctx;
use crate::output;
use anyhow::{Context, Result, bail};
use cove_disk::{DiskImage, Entry, FileKind, Fs};
use cove_vm::lifecycle;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DiskCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DiskCommand {
    /// List a directory (or show one file) like `ls -la`.
    Ls(Target),
    /// Print a file to stdout (symlinks are followed inside the disk).
    Cat(Target),
    /// Copy a file or directory tree to the host, keeping modes and mtimes.
    Get {
        #[command(flatten)]
        target: Target,
        /// Host destination (default: the current directory).
        dest: Option<PathBuf>,
    },
    /// Show the disk's layers (overlay, backing files) and formats.
    Info {
        /// VM name, or the path of an image file (anything with a `/`).
        #[arg(add = crate::complete::vm())]
        source: String,
        /// Read this data disk of the VM instead of its root disk.
        #[arg(long)]
        disk: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// `NAME:/path` for a VM, or `./image.qcow2:/path` for an image file
    /// (`ls` also takes a bare `NAME`, meaning `NAME:/`).
    #[arg(add = crate::complete::vm_path())]
    pub spec: String,
    /// Read this data disk of the VM instead of its root disk.
    #[arg(long)]
    pub disk: Option<String>,
    /// Read this partition (1-based) of a partitioned disk; by default the
    /// filesystem at byte 0, else the only partition that holds one.
    #[arg(long)]
    pub partition: Option<usize>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    match args.command {
        DiskCommand::Ls(t) => ls(ctx, &t),
        DiskCommand::Cat(t) => cat(ctx, &t),
        DiskCommand::Get { target, dest } => get(ctx, &target, dest),
        DiskCommand::Info { source, disk } => info(ctx, &source, disk.as_deref()),
    }
}

/// Splits `NAME:/path` at its last colon (image paths may contain colons).
/// `ls` passes a default path, so `cove disk ls web` lists `/`.
fn split_spec<'a>(spec: &'a str, default_path: Option<&'a str>) -> Result<(&'a str, &'a str)> {
    match (spec.rsplit_once(':'), default_path) {
        (Some((source, path)), _) if !source.is_empty() && !path.is_empty() => Ok((source, path)),
        (None, Some(path)) if !spec.is_empty() => Ok((spec, path)),
        _ => bail!("expected NAME:/path (for example `web:/var/log/init.log`), got {spec:?}"),
    }
}

/// The image file to open and how to name it in messages. A VM must not be
/// running: its disk changes under us and the guest's page cache holds
/// writes not yet on disk.
fn locate(ctx: &Ctx, source: &str, data_disk: Option<&str>) -> Result<(PathBuf, String)> {
    if source.contains('/') {
        if data_disk.is_some() {
            bail!("--disk selects a data disk of a VM; {source} is an image file");
        }
        return Ok((PathBuf::from(source), format!("image {source}")));
    }
    let record = lifecycle::show(&ctx.paths, source)?;
    if record.state.is_active() {
        bail!(
            "VM {source} is {}: its disk is in use and changing. Read files of a running VM with \
             `cove exec {source} -- cat /path` or `cove cp {source}:/path .`, or stop it first \
             with `cove stop {source}`",
            record.state
        );
    }
    match data_disk {
        None => Ok((
            ctx.paths.vm(source).root_disk(),
            format!("VM {source}'s disk"),
        )),
        Some(d) if record.data_disks.iter().any(|x| x == d) => Ok((
            cove_vm::data_disk::path_for(&ctx.paths, &record, d),
            format!("VM {source}'s data disk {d}"),
        )),
        Some(d) => bail!(
            "VM {source} has no data disk {d:?} (it has: {})",
            if record.data_disks.is_empty() {
                "none".to_string()
            } else {
                record.data_disks.join(", ")
            }
        ),
    }
}

fn open_fs(ctx: &Ctx, t: &Target, default_path: Option<&str>) -> Result<(Fs, String)> {
    let (source, path) = split_spec(&t.spec, default_path)?;
    let (image, label) = locate(ctx, source, t.disk.as_deref())?;
    let disk = DiskImage::open(&image)?;
    let fs = match t.partition {
        Some(n) => Fs::open_partition(disk, n)?,
        None => Fs::open(disk)?,
    };
    let fs = fs.with_label(label);
    Ok((fs, path.to_string()))
}

fn ls(ctx: &Ctx, t: &Target) -> Result<ExitCode> {
    let (fs, path) = open_fs(ctx, t, Some("/"))?;
    let entries = fs.list(&path)?;
    if ctx.json {
        output::print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries.iter().map(ls_row).collect();
    output::print_table(&["MODE", "UID", "GID", "SIZE", "MODIFIED", "NAME"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn ls_row(e: &Entry) -> Vec<String> {
    let name = match (&e.kind, &e.symlink_target) {
        (FileKind::Symlink, Some(t)) => format!("{} -> {t}", e.name),
        (FileKind::Dir, _) => format!("{}/", e.name),
        _ => e.name.clone(),
    };
    vec![
        e.mode_string(),
        e.uid.to_string(),
        e.gid.to_string(),
        e.size.to_string(),
        utc(e.mtime),
        name,
    ]
}

/// `2026-11-23 17:36:34` (UTC), without pulling in a date crate.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn cat(ctx: &Ctx, t: &Target) -> Result<ExitCode> {
    let (fs, path) = open_fs(ctx, t, None)?;
    let mut out = std::io::stdout().lock();
    match fs.read_to(&path, &mut out) {
        Ok(_) => {}
        // `cove disk cat ... | head` closes the pipe early: not an error.
        Err(cove_disk::Error::Host { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn get(ctx: &Ctx, t: &Target, dest: Option<PathBuf>) -> Result<ExitCode> {
    let (fs, path) = open_fs(ctx, t, None)?;
    let dest = dest.unwrap_or_else(|| PathBuf::from("."));
    let report = fs.copy_out(&path, &dest)?;
    if ctx.json {
        output::print_json(&report)?;
    } else {
        println!(
            "copied {path} to {}: {} files, {} directories, {} symlinks, {} bytes",
            report.dest.display(),
            report.files,
            report.dirs,
            report.symlinks,
            report.bytes
        );
        for s in &report.skipped {
            eprintln!("skipped {}", cove_untrusted::terminal_line(s));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn info(ctx: &Ctx, source: &str, data_disk: Option<&str>) -> Result<ExitCode> {
    let (image, label) = locate(ctx, source, data_disk)?;
    let disk = DiskImage::open(&image)?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "disk": label, "size": disk.size(), "layers": disk.layers(),
            "partitions": cove_disk::partitions(&disk),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{label}: {} bytes ({})",
        disk.size(),
        output::mib(disk.size() >> 20)
    );
    let rows: Vec<Vec<String>> = disk
        .layers()
        .iter()
        .map(|l| {
            vec![
                l.format.to_string(),
                l.qcow2_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                l.cluster_size
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                display(&l.path),
            ]
        })
        .collect();
    output::print_table(&["FORMAT", "VERSION", "CLUSTER", "FILE"], &rows);
    for p in cove_disk::partitions(&disk) {
        println!(
            "partition {} ({}): bytes {}..{} ({})",
            p.index,
            p.table,
            p.start,
            p.start + p.len,
            output::mib(p.len >> 20)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_splits_at_the_last_colon() {
        let ok = |spec, default| split_spec(spec, default).unwrap();
        assert_eq!(ok("web:/var/log", None), ("web", "/var/log"));
        assert_eq!(ok("./a:b.qcow2:/etc", None), ("./a:b.qcow2", "/etc"));
        assert_eq!(ok("web", Some("/")), ("web", "/"));
        assert!(split_spec("web", None).is_err());
        assert!(split_spec(":/etc", None).is_err());
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_614_834_367), "2021-03-04 05:06:07");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
    }
}
