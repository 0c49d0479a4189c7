//! Saving a VM's device state to a file and restoring it, over QMP migration.
//!
//! Guest RAM lives in a file-backed memory backend (`share=on` while a VM runs from a cold
//! boot), and the `x-ignore-shared` capability leaves that RAM out of the migration stream: the
//! state file holds only device state (about 70 KiB for the minimal VM) and the memory file is
//! copied beside it. A restored VM maps the memory file `share=off` (private, copy-on-write), so
//! any number of clones share one page-cache copy of it.
//!
//! QEMU 7.2 has no `file:` migration URI. The stream goes through a unix socket in the VM's
//! private runtime directory, and the supervisor moves it between the socket and the file:
//! QEMU opens no file and runs no program (`exec:cat` would need a shell, which its sandbox
//! then has to allow; see `crate::argv::SANDBOX`).

use std::path::Path;
use std::time::{Duration, Instant};

use qapi::qmp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::qmp::{QmpClient, QmpError};

/// How long saving or loading the device state may take (it is small; this bounds a hang).
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest device state accepted from QEMU (about 70-90 KiB in practice; RAM is not in it).
/// A VMM a guest took over could otherwise fill the host's disk through a snapshot.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Why a save or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("QEMU could not {what} the VM state ({path}): {reason}")]
    Failed {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "{what} of the VM state did not finish within {0:?}; the VMM is stuck, kill it",
        MIGRATION_TIMEOUT
    )]
    Timeout { what: &'static str },
    #[error("the path {0:?} cannot be passed to QEMU (it is not UTF-8)")]
    BadPath(String),
    /// Moving the state between QEMU's socket and the file failed.
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU sent over {} MiB of device state; refused (a VM's is well under 1 MiB)", MAX_STATE_BYTES >> 20)]
    TooLarge,
}

fn unix_uri(socket: &Path) -> Result<String, SaveError> {
    let s = socket
        .to_str()
        .ok_or_else(|| SaveError::BadPath(socket.display().to_string()))?;
    Ok(format!("unix:{s}"))
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SaveError + use<> {
    let path = path.to_owned();
    move |source| SaveError::Io { what, path, source }
}

impl QmpClient {
    /// Pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.run("stop", qmp::stop {}).await.map(drop)
    }

    async fn ignore_shared(&self) -> Result<(), QmpError> {
        self.run(
            "migrate-set-capabilities",
            qmp::migrate_set_capabilities {
                capabilities: vec![qmp::MigrationCapabilityStatus {
                    capability: qmp::MigrationCapability::x_ignore_shared,
                    state: true,
                }],
            },
        )
        .await
        .map(drop)
    }

    /// Pauses the VM and writes its device state to `path` (RAM in a shared memory backend
    /// stays out), through a unix socket at `socket` that QEMU connects to. On return the VM is
    /// paused with its disks flushed and released (QEMU's `postmigrate`); `cont` resumes it.
    pub async fn save_state(&self, path: &Path, socket: &Path) -> Result<(), SaveError> {
        let uri = unix_uri(socket)?;
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(io_err("listen on", socket))?;
        let result = async {
            self.stop().await?;
            self.ignore_shared().await?;
            self.run(
                "migrate",
                qmp::migrate {
                    uri: Some(uri),
                    channels: None,
                    detach: None,
                    resume: None,
                },
            )
            .await?;
            let stream = self.accept_vmm(&listener, socket, path).await?;
            // A VMM that stops sending mid-stream must not hold the supervisor forever.
            tokio::time::timeout(MIGRATION_TIMEOUT, receive(stream, path))
                .await
                .map_err(|_| SaveError::Timeout { what: "save" })??;
            self.wait_migration("save", path).await
        }
        .await;
        let _ = std::fs::remove_file(socket);
        result
    }

    /// Loads device state from `path` into a VMM started with `-incoming defer` (and its memory
    /// backend over the saved memory file), through a unix socket at `socket` that QEMU listens
    /// on. The VM stays paused; `cont` runs it.
    pub async fn restore_state(&self, path: &Path, socket: &Path) -> Result<(), SaveError> {
        let uri = unix_uri(socket)?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io_err("open", path))?;
        let _ = std::fs::remove_file(socket);
        let result = async {
            self.ignore_shared().await?;
            // QEMU listens before this returns.
            self.run(
                "migrate-incoming",
                qmp::migrate_incoming {
                    uri: Some(uri),
                    channels: None,
                    exit_on_error: None,
                },
            )
            .await?;
            let mut stream = UnixStream::connect(socket)
                .await
                .map_err(io_err("connect to QEMU on", socket))?;
            // QEMU reads until the end of the stream; an error here (QEMU refused the state and
            // closed) is what its migration status then says, so that is asked first.
            let sent = tokio::time::timeout(MIGRATION_TIMEOUT, async {
                tokio::io::copy(&mut file, &mut stream).await?;
                stream.shutdown().await
            })
            .await
            .map_err(|_| SaveError::Timeout { what: "restore" })?;
            self.wait_migration("restore", path).await?;
            sent.map_err(io_err("send the state to QEMU from", path))
        }
        .await;
        let _ = std::fs::remove_file(socket);
        result
    }

    /// Waits for QEMU's outgoing migration to connect to `listener`; a migration that fails
    /// before it connects is seen by asking its status between waits. (No QMP command may be
    /// cancelled while in flight: qapi then drops the whole connection.)
    async fn accept_vmm(
        &self,
        listener: &UnixListener,
        socket: &Path,
        path: &Path,
    ) -> Result<UnixStream, SaveError> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        loop {
            // `accept` is cancel-safe: a timeout loses no connection.
            if let Ok(accepted) =
                tokio::time::timeout(Duration::from_millis(20), listener.accept()).await
            {
                return Ok(accepted.map_err(io_err("accept QEMU on", socket))?.0);
            }
            self.migration_done("save", path).await?;
            if Instant::now() >= deadline {
                return Err(SaveError::Timeout { what: "save" });
            }
        }
    }

    async fn wait_migration(&self, what: &'static str, path: &Path) -> Result<(), SaveError> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        // QEMU emits no event this client listens to: poll; the state is small, so this takes
        // a few rounds.
        while !self.migration_done(what, path).await? {
            if Instant::now() >= deadline {
                return Err(SaveError::Timeout { what });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Asks the migration's status once: done, still going, or failed with QEMU's reason.
    async fn migration_done(&self, what: &'static str, path: &Path) -> Result<bool, SaveError> {
        let info = self.run("query-migrate", qmp::query_migrate {}).await?;
        match info.status {
            Some(qmp::MigrationStatus::completed) => Ok(true),
            Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                Err(SaveError::Failed {
                    what,
                    path: path.display().to_string(),
                    reason: info.error_desc.unwrap_or_else(|| "no reason given".into()),
                })
            }
            _ => Ok(false),
        }
    }
}

/// Writes what QEMU sends to `path`, at most [`MAX_STATE_BYTES`], and syncs it.
async fn receive(stream: UnixStream, path: &Path) -> Result<(), SaveError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io_err("create", path))?;
    let mut limited = stream.take(MAX_STATE_BYTES + 1);
    let n = tokio::io::copy(&mut limited, &mut file)
        .await
        .map_err(io_err("receive the state from QEMU into", path))?;
    if n > MAX_STATE_BYTES {
        return Err(SaveError::TooLarge);
    }
    file.sync_all().await.map_err(io_err("sync", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VMM that sends more than any device state is cut off, and nothing that size stays.
    #[tokio::test]
    async fn an_oversized_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let flood = tokio::spawn(async move {
            let chunk = vec![0u8; 1 << 20];
            while theirs.write_all(&chunk).await.is_ok() {}
        });
        let err = receive(ours, &path).await.unwrap_err();
        assert!(matches!(err, SaveError::TooLarge), "{err:?}");
        flood.abort();
    }

    #[tokio::test]
    async fn a_state_is_received_whole_and_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            theirs.write_all(b"QEVM and the rest").await.unwrap();
        });
        receive(ours, &path).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"QEVM and the rest");
    }
}
