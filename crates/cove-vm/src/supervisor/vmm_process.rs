//! The VMM process the supervisor watches: its own child, or one it
//! adopted after the previous supervisor died (the VM keeps running when
//! its supervisor dies; the next cove command starts a new one).

use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub enum VmmProcess {
    Child(tokio::process::Child),
    /// Not our child: we cannot reap it or learn its exit status, but a
    /// pidfd tells us when it is gone.
    Adopted {
        pid: u32,
    },
}

impl VmmProcess {
    /// Waits for the VMM to exit; the status is known only for a child.
    pub async fn wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            VmmProcess::Child(child) => child.wait().await.map(Some),
            VmmProcess::Adopted { pid } => {
                let pid = rustix::process::Pid::from_raw(*pid as i32)
                    .ok_or_else(|| std::io::Error::other("invalid pid"))?;
                let fd: OwnedFd =
                    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
                        Ok(fd) => fd,
                        // Already gone.
                        Err(rustix::io::Errno::SRCH) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    };
                // A pidfd becomes readable when its process exits.
                // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor
                // stays open and unchanged for the AsyncFd's whole life.
                let watched = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let _ = watched.readable().await?;
                Ok(None)
            }
        }
    }

    pub fn start_kill(&mut self) {
        match self {
            VmmProcess::Child(child) => {
                let _ = child.start_kill();
            }
            VmmProcess::Adopted { pid } => {
                let _ = cove_backend::process::kill_group(*pid, libc::SIGKILL);
            }
        }
    }
}
