//! The `-t` path of `cove exec`/`cove shell`: local terminal in raw mode (so Ctrl-C travels as a
//! byte to the guest PTY, whose line discipline turns it into SIGINT there), window-size changes
//! forwarded as Resize messages.

use std::os::fd::{AsFd, BorrowedFd};

use cove_proto::{ExecRequest, ExitStatus, StreamMsg, TtySize};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::ops::{ExecIo, Input, StreamOpener, exec, spawn_stdin_reader};

/// Restores the terminal's settings when dropped (also on error and panic unwinding).
pub struct RawModeGuard {
    saved: Termios,
}

impl RawModeGuard {
    /// Puts stdin's terminal in raw mode; `None` if stdin is not a terminal.
    pub fn enter() -> Option<RawModeGuard> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawModeGuard { saved })
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Size of the terminal on `fd`, if it is one.
pub fn terminal_size(fd: BorrowedFd<'_>) -> Option<TtySize> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some(TtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Runs `req` on a guest PTY attached to this process's terminal. Sets `req.tty` to the local
/// size (24x80 if stdout is not a terminal) and passes the local TERM unless `req.env` has one.
pub async fn exec_tty(
    opener: &impl StreamOpener,
    mut req: ExecRequest,
) -> Result<ExitStatus, LinkError> {
    let size = terminal_size(std::io::stdout().as_fd()).unwrap_or(TtySize { rows: 24, cols: 80 });
    req.tty = Some(size);
    if !req.env.iter().any(|(k, _)| k == "TERM")
        && let Ok(term) = std::env::var("TERM")
    {
        req.env.push(("TERM".into(), term));
    }
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    let winch = tokio::spawn(async move {
        let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            if let Some(sz) = terminal_size(std::io::stdout().as_fd())
                && ctl_tx.send(StreamMsg::Resize(sz)).await.is_err()
            {
                return;
            }
        }
    });
    let guard = RawModeGuard::enter();
    let io = ExecIo {
        stdin: Input::Chunks(spawn_stdin_reader()),
        stdout: Box::new(tokio::io::stdout()),
        stderr: Box::new(tokio::io::stderr()),
        control: Some(ctl_rx),
    };
    let res = exec(opener, req, io).await;
    drop(guard);
    winch.abort();
    res
}
