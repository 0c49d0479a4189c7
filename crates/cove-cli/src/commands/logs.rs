//! `cove logs NAME [-f] [--tail N]`: the serial console log, also of a
//! stopped or crashed VM (it is persisted from the first byte).

use crate::context::Ctx;
use anyhow::{Context, Result};
use cove_vm::{lifecycle, liveness};
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Keep printing new output until the VM stops.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print only the last N lines.
    #[arg(long, short = 'n')]
    pub tail: Option<usize>,
    /// The boot before the current one.
    #[arg(long)]
    pub previous: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    // Fails with a clear message for an unknown VM.
    lifecycle::show(&ctx.paths, &args.name)?;
    let vm = ctx.paths.vm(&args.name);
    let path = if args.previous {
        vm.previous_console_log()
    } else {
        vm.console_log()
    };
    let mut out = std::io::stdout().lock();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            eprintln!("{} has no console log yet: it was never started", args.name);
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let start = match args.tail {
        Some(n) => tail_offset(&mut file, n)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    copy_available(&mut file, &mut out)?;
    if args.follow {
        let lock = vm.supervisor_lock();
        loop {
            let running = liveness::is_locked(&lock)?;
            // The supervisor dropped the middle of a log over its cap:
            // carry on from the new end rather than wait past it forever.
            let len = file.metadata()?.len();
            if len < file.stream_position()? {
                eprintln!("cove logs: the console log passed its cap; some output was skipped");
                file.seek(SeekFrom::Start(len))?;
            }
            let copied = copy_available(&mut file, &mut out)?;
            if copied == 0 {
                if !running {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn copy_available(file: &mut std::fs::File, out: &mut impl Write) -> Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            out.flush()?;
            return Ok(total);
        }
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The offset where the last `n` lines start, found by reading backwards.
fn tail_offset(file: &mut std::fs::File, n: usize) -> Result<u64> {
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; 8192];
    // A trailing newline ends the last line; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let chunk = (pos as usize).min(buf.len());
        pos -= chunk as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offset_finds_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let off = tail_offset(&mut f, 2).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[off as usize..], b"c\nd\n");
        assert_eq!(tail_offset(&mut f, 10).unwrap(), 0);
    }
}
