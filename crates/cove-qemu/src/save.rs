//! Saving a VM's device state to a file and restoring it, over QMP migration.
//!
//! Guest RAM lives in a file-backed memory backend (`share=on` while a VM runs from a cold
//! boot), and the `x-ignore-shared` capability leaves that RAM out of the migration stream: the
//! state file holds only device state (about 70 KiB for the minimal VM) and the memory file is
//! copied beside it. A restored VM maps the memory file `share=off` (private, copy-on-write), so
//! any number of clones share one page-cache copy of it. QEMU 7.2 has no `file:` migration URI;
//! `exec:cat` is what it offers for files.

use std::path::Path;
use std::time::{Duration, Instant};

use qapi::qmp;

use crate::qmp::{QmpClient, QmpError};

/// How long saving or loading the device state may take (it is small; this bounds a hang).
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error("the path {0:?} cannot be passed to QEMU (it contains a quote or a newline)")]
    BadPath(String),
}

/// `exec:` URIs run through `/bin/sh -c`: single-quote the path, refusing what cannot be quoted.
fn sh_quoted(path: &Path) -> Result<String, SaveError> {
    let s = path
        .to_str()
        .filter(|s| !s.contains(['\'', '\n']))
        .ok_or_else(|| SaveError::BadPath(path.display().to_string()))?;
    Ok(format!("'{s}'"))
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
        let uri = format!("exec:cat > {}", sh_quoted(path)?);
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
        self.wait_migration("save", path).await
    }

    /// Loads device state from `path` into a VMM started with `-incoming defer` (and its memory
    /// backend over the saved memory file). The VM stays paused; `cont` runs it.
    pub async fn restore_state(&self, path: &Path) -> Result<(), SaveError> {
        let uri = format!("exec:cat {}", sh_quoted(path)?);
        self.ignore_shared().await?;
        self.run(
            "migrate-incoming",
            qmp::migrate_incoming {
                uri: Some(uri),
                channels: None,
                exit_on_error: None,
            },
        )
        .await?;
        self.wait_migration("restore", path).await
    }

    async fn wait_migration(&self, what: &'static str, path: &Path) -> Result<(), SaveError> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        loop {
            let info = self.run("query-migrate", qmp::query_migrate {}).await?;
            match info.status {
                Some(qmp::MigrationStatus::completed) => return Ok(()),
                Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                    return Err(SaveError::Failed {
                        what,
                        path: path.display().to_string(),
                        reason: info.error_desc.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                _ if Instant::now() >= deadline => return Err(SaveError::Timeout { what }),
                // QEMU emits no event this client listens to: poll; the state is small, so
                // this takes a few rounds.
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell_or_refused() {
        assert_eq!(sh_quoted(Path::new("/a b/state")).unwrap(), "'/a b/state'");
        assert!(sh_quoted(Path::new("/a'b")).is_err());
        assert!(sh_quoted(Path::new("/a\nb")).is_err());
    }
}
