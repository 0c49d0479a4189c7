//! Saving a VM's device state to a file and restoring it, over QMP migration.
//!
//! Guest RAM lives in a file-backed memory backend (`share=on` while a VM runs from a cold
//! boot), and the `x-ignore-shared` capability leaves that RAM out of the migration stream: the
//! state file holds only device state (about 70 KiB for the minimal VM) and the memory file is
//! copied beside it. A restored VM maps the memory file `share=off` (private, copy-on-write), so
//! any number of clones share one page-cache copy of it.
//!
//! QEMU 7.2 has no `file:` migration URI. The stream goes through one end of a socket pair
//! passed to QEMU over QMP (`getfd`, then `fd:` migration URIs), and the supervisor moves it
//! between its end and the file: QEMU opens no file and runs no program (`exec:cat` would need
//! a shell, which its sandbox then has to allow; see `crate::argv::sandbox`), and a QEMU that
//! dropped its privileges (`-runas`) needs no path it could reach.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use qapi::qmp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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
    /// Moving the state between QEMU and the file failed.
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

/// The name the migration's descriptor has in QEMU between `getfd` and the `fd:` URI.
const STATE_FD: &str = "cove-state";

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
    /// stays out). On return the VM is paused with its disks flushed and released (QEMU's
    /// `postmigrate`); `cont` resumes it.
    pub async fn save_state(&self, path: &Path) -> Result<(), SaveError> {
        self.stop().await?;
        let stream = self.state_channel(path).await?;
        self.run(
            "migrate",
            qmp::migrate {
                uri: Some(format!("fd:{STATE_FD}")),
                channels: None,
                detach: None,
                resume: None,
            },
        )
        .await?;
        // A VMM that stops sending mid-stream must not hold the supervisor forever; one that
        // fails before sending closes its end, which ends the stream as well.
        tokio::time::timeout(MIGRATION_TIMEOUT, receive(stream, path))
            .await
            .map_err(|_| SaveError::Timeout { what: "save" })??;
        self.wait_migration("save", path).await
    }

    /// Loads device state from `path` into a VMM started with `-incoming defer` (and its memory
    /// backend over the saved memory file). The VM stays paused; `cont` runs it.
    pub async fn restore_state(&self, path: &Path) -> Result<(), SaveError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io_err("open", path))?;
        let mut stream = self.state_channel(path).await?;
        self.run(
            "migrate-incoming",
            qmp::migrate_incoming {
                uri: Some(format!("fd:{STATE_FD}")),
                channels: None,
                exit_on_error: None,
            },
        )
        .await?;
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

    /// Readies a migration of the device state only (RAM stays in its shared file) through a
    /// socket pair: QEMU gets one end as [`STATE_FD`], the caller the other.
    async fn state_channel(&self, path: &Path) -> Result<UnixStream, SaveError> {
        self.ignore_shared().await?;
        let (ours, theirs) = UnixStream::pair().map_err(io_err("make a socket pair for", path))?;
        self.pass_fd(STATE_FD, theirs.as_fd()).await?;
        // QEMU has its own copy now; this one must go, or the stream never ends for its peer.
        drop(theirs);
        Ok(ours)
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
