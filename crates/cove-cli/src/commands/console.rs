//! `cove console NAME`: attach to the serial console. Several viewers may
//! attach at once; each sees the recent history, then live output. When no
//! viewer is attached, the supervisor answers the guest's cursor-position
//! queries itself (see cove-vm's `supervisor::console`).

use crate::context::Ctx;
use anyhow::{Context, Result, bail};
use cove_api::Request;
use cove_state::VmState;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Why a VM in `state` has no live console, with the next step; `None`
/// when it has one. `cove console` and the API's console say the same.
pub fn no_console(name: &str, state: VmState) -> Option<String> {
    (!state.is_active() || state == VmState::Stopping).then(|| {
        format!("`{name}` is {state}; its console log is still readable with `cove logs {name}`")
    })
}

/// Asks the supervisor listening on `socket` for the console, with
/// `replay` bytes of history first. The connection then carries the serial
/// console both ways; bytes already read with the answer are in its buffer.
/// `cove console` and the API's console attach through this one way.
pub async fn connect(
    name: &str,
    socket: &Path,
    replay: u64,
) -> Result<BufReader<UnixStream>, cove_api::ClientError> {
    cove_api::Client::new(name, socket)
        .open_stream(&Request::Console {
            replay_bytes: replay,
        })
        .await
}

/// Ctrl-], as in telnet and `virsh console`.
const DETACH_BYTE: u8 = 0x1d;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = crate::complete::vm())]
    pub name: String,
    /// Bytes of recent console output to show first.
    #[arg(long, default_value_t = 2048)]
    pub replay: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<ExitCode> {
    let record = cove_vm::lifecycle::show(&ctx.paths, &args.name)?;
    if let Some(why) = no_console(&args.name, record.state) {
        bail!("{why}");
    }
    let socket = ctx.paths.vm(&args.name).control_socket();
    crate::rt::block_on(async {
        let conn = connect(&args.name, &socket, args.replay)
            .await
            .with_context(|| format!("attaching to the console of `{}`", args.name))?;
        eprint!(
            "attached to {}'s console; detach with Ctrl-]\r\n",
            args.name
        );
        let _raw = cove_agent_link::RawModeGuard::enter();
        // Console bytes that arrived with the answer are already buffered.
        let early = conn.buffer().to_vec();
        let (mut from_vm, mut to_vm) = conn.into_inner().into_split();
        let mut keys = cove_agent_link::spawn_stdin_reader();
        let input = async {
            while let Some(chunk) = keys.recv().await {
                if let Some(at) = chunk.iter().position(|b| *b == DETACH_BYTE) {
                    let _ = to_vm.write_all(&chunk[..at]).await;
                    return;
                }
                if to_vm.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        };
        let output = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut stdout = std::io::stdout();
            if stdout
                .write_all(&early)
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return;
            }
            loop {
                match from_vm.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stdout
                            .write_all(&buf[..n])
                            .and_then(|_| stdout.flush())
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = input => eprint!("\r\ndetached from {}\r\n", args.name),
            _ = output => eprint!("\r\nthe console of {} closed (the VM stopped)\r\n", args.name),
        }
        Ok(ExitCode::SUCCESS)
    })?
}
