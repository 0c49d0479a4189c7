//! Snapshots of the running VM, and the fixups a restored guest gets before anyone reaches it.

use super::{Phase, Shared, StopKind, vmm};
use crate::snapshot::{self, MEMORY, ROOT, STATE};
use cove_api::Response;
use cove_state::Store;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

/// Why a snapshot was not taken, or the VM not resumed after it.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(
        "`{0}` runs from a snapshot, whose memory it maps privately; restart it cold \
         (`cove stop {0}` then `cove start {0}`) to take a new snapshot"
    )]
    Restored(String),
    #[error("`{0}` is not running and ready; start it first")]
    NotReady(String),
    #[error(transparent)]
    Store(#[from] cove_state::StoreError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} backend cannot save a running VM")]
    Unsupported(cove_backend::BackendKind),
    /// Saving the device state, or resuming the vCPUs after the save.
    #[error(transparent)]
    Vmm(#[from] cove_backend::BackendError),
    /// Copying the memory or a disk into the snapshot.
    #[error(transparent)]
    Copy(#[from] crate::error::LifecycleError),
    /// Reading, writing or renaming a file of the snapshot (the message has always been the
    /// OS's own; `path` says which file).
    #[error("{source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] serde_json::Error),
}

/// Why a restored guest could not be fixed up (see [`fixup`]).
#[derive(Debug, thiserror::Error)]
pub enum FixupError {
    #[error(transparent)]
    Store(#[from] cove_state::StoreError),
    #[error(
        "`{0}` resumed with another VM's MACs and addresses on its cove networks, and without \
         an agent nothing can move them; start it cold"
    )]
    NoAgent(String),
    /// Reading `/dev/urandom`.
    #[error("reading host entropy")]
    Entropy(#[source] std::io::Error),
    /// No answer within [`vmm::FIXUP_TIMEOUT`].
    #[error("the restored guest's agent did not apply the fixups in time")]
    FixupTimeout,
    #[error("the restored guest's agent refused the fixups")]
    FixupRefused(#[source] cove_agent_link::LinkError),
    /// Which NICs the guest must move could not be worked out.
    #[error(transparent)]
    Moves(#[from] cove_net::NetError),
    /// No answer within [`vmm::FIXUP_TIMEOUT`].
    #[error("the restored guest's agent did not move its NICs in time")]
    MoveTimeout,
    /// The agent's answer sits mid-sentence, before the next step.
    #[error(
        "the restored guest's agent did not move its NICs to `{vm}`'s own MACs and addresses \
         ({source}); an agent older than this cove cannot: start it cold \
         (`cove stop {vm}; cove start {vm}`)"
    )]
    MoveRefused {
        vm: String,
        source: cove_agent_link::LinkError,
    },
    #[error("lifting the hold on the clone's TAPs")]
    Release(#[source] cove_net::NetError),
    /// The blocking task that lifts the hold panicked or was cancelled.
    #[error("lifting the hold on the clone's TAPs")]
    ReleaseTask(#[source] tokio::task::JoinError),
}

/// Saves device state, memory and every disk as snapshot `tag`, consistent with each other (the
/// vCPUs are paused and the disks flushed from the first step to the last), then resumes the VM
/// or ends it.
pub async fn snapshot(shared: &Shared, tag: &str, resume: bool) -> Response {
    match save(shared, tag, resume).await {
        Ok(detail) => Response::Done { detail },
        Err(e) => super::control::failed(super::error_chain(&e)),
    }
}

async fn save(shared: &Shared, tag: &str, resume: bool) -> Result<String, SaveError> {
    let name = &shared.name;
    if shared.restored {
        return Err(SaveError::Restored(name.clone()));
    }
    if !matches!(*shared.phase.borrow(), Phase::Ready { .. }) {
        return Err(SaveError::NotReady(name.clone()));
    }
    let began = Instant::now();
    let record = Store::open(&shared.paths).and_then(|s| s.get_vm(name))?;
    let vm = shared.paths.vm(name);
    let target = vm.snapshot(tag);
    if target.exists() {
        return Err(snapshot::SnapshotError::Exists {
            vm: name.clone(),
            tag: tag.to_owned(),
        }
        .into());
    }
    // Written beside the target and renamed at the end: a failed or killed save leaves no
    // snapshot that looks whole, and what a killed one left goes now.
    snapshot::remove_stale_staging(&vm.snapshots());
    let tmp = snapshot::staging_dir(&vm.snapshots(), tag, std::process::id());
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|source| SaveError::CreateDir {
        path: tmp.clone(),
        source,
    })?;
    // An I/O failure on a file of the snapshot, kept with the path it concerns.
    let io = |path: PathBuf| move |source| SaveError::Io { path, source };
    let result = async {
        if !shared.backend.capabilities().snapshots {
            return Err(SaveError::Unsupported(shared.backend.kind()));
        }
        shared.control.save_state(&tmp.join(STATE)).await?;
        let paused_ms = began.elapsed().as_millis();
        // The VMM flushed and released the disks when the save completed; copy them while the
        // vCPUs stay paused.
        let copy = |from: &std::path::Path, to: &str| snapshot::copy_sparse(from, &tmp.join(to));
        copy(&vm.memory_file(), MEMORY)?;
        copy(&vm.root_disk(), ROOT)?;
        for disk in &record.data_disks {
            copy(
                &crate::data_disk::path_for(&shared.paths, &record, disk),
                &snapshot::data_disk_file(disk),
            )?;
        }
        let manifest = snapshot::manifest_for(&tmp, &record, tag).map_err(io(tmp.clone()))?;
        let json = serde_json::to_vec_pretty(&manifest)?;
        let manifest_file = tmp.join(snapshot::MANIFEST);
        std::fs::write(&manifest_file, json).map_err(io(manifest_file))?;
        std::fs::rename(&tmp, &target).map_err(io(target.clone()))?;
        Ok::<_, SaveError>(paused_ms)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let after = if resume {
        // Resuming after a completed save re-activates the disks and runs the vCPUs.
        shared.control.resume().await?;
        "resumed"
    } else {
        *shared.stop.lock().await = Some((StopKind::Graceful, Instant::now()));
        let _ = shared.control.quit().await;
        "stopped"
    };
    let state_ms = result?;
    Ok(format!(
        "saved `{name}` as snapshot `{tag}` in {:.2}s (device state in {:.2}s), {after}",
        began.elapsed().as_secs_f64(),
        state_ms as f64 / 1000.0
    ))
}

/// 64 fresh bytes from the host's RNG.
fn host_entropy() -> Result<Vec<u8>, FixupError> {
    let mut bytes = vec![0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(FixupError::Entropy)?;
    Ok(bytes)
}

/// Clock, entropy and (for a clone) identity, sent to a guest just restored.
pub async fn fixup(shared: &Shared) -> Result<(), FixupError> {
    let record = Store::open(&shared.paths).and_then(|s| s.get_vm(&shared.name))?;
    let Some(link) = &shared.agent else {
        if nic_moves(&shared.paths, &record).is_ok_and(|m| m.is_empty()) {
            return Ok(());
        }
        return Err(FixupError::NoAgent(shared.name.clone()));
    };
    let entropy = host_entropy()?;
    let clone = record.cloned_from.is_some();
    let machine_id = clone.then(|| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&entropy[..16]);
        hex::encode(id)
    });
    // The clone's id must not be derivable from what the guest is given: fresh bytes for it.
    let entropy = if clone { host_entropy()? } else { entropy };
    let unix_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let req = cove_proto::FixupRequest {
        unix_nanos,
        entropy,
        hostname: clone.then(|| shared.name.clone()),
        machine_id,
    };
    tokio::time::timeout(vmm::FIXUP_TIMEOUT, cove_agent_link::fixup(link, req))
        .await
        .map_err(|_| FixupError::FixupTimeout)?
        .map_err(FixupError::FixupRefused)?;
    move_nics(shared, link, &record).await
}

/// What a guest restored into `record` must move on its cove networks: each NIC resumed with
/// the MAC and address of the snapshot's owner there, which is another VM for a clone.
pub fn nic_moves(
    paths: &cove_state::Paths,
    record: &cove_state::VmRecord,
) -> Result<Vec<cove_net::NicMove>, cove_net::NetError> {
    let Some(owner) = record
        .restored_from
        .as_deref()
        .and_then(|from| from.split_once('@'))
        .map(|(owner, _)| owner)
    else {
        return Ok(Vec::new());
    };
    cove_net::restore_moves(paths, record.name.as_str(), owner, &record.networks)
}

/// Moves a restored clone's NICs to its own MACs and addresses (its TAPs are held until
/// then, see `cove_net::prepare_vm`), then lets its traffic onto the networks.
async fn move_nics(
    shared: &Shared,
    link: &cove_agent_link::AgentLink,
    record: &cove_state::VmRecord,
) -> Result<(), FixupError> {
    let moves = nic_moves(&shared.paths, record)?;
    if !moves.is_empty() {
        send_moves(shared, link, &moves).await?;
    }
    // Whatever held its TAPs (this start, or one whose supervisor died mid-fixup) is lifted
    // only now that its NICs are its own.
    let (paths, name) = (shared.paths.clone(), shared.name.clone());
    tokio::task::spawn_blocking(move || cove_net::release_vm(&paths, &name))
        .await
        .map_err(FixupError::ReleaseTask)?
        .map_err(FixupError::Release)
}

async fn send_moves(
    shared: &Shared,
    link: &cove_agent_link::AgentLink,
    moves: &[cove_net::NicMove],
) -> Result<(), FixupError> {
    let nics = moves
        .iter()
        .map(|m| cove_proto::NicMove {
            from_mac: m.from_mac.clone(),
            mac: m.to.mac.clone(),
            address: m.to.ip,
            prefix: m.prefix,
            router: m.router,
        })
        .collect();
    tokio::time::timeout(vmm::FIXUP_TIMEOUT, cove_agent_link::move_nics(link, nics))
        .await
        .map_err(|_| FixupError::MoveTimeout)?
        .map_err(|source| FixupError::MoveRefused {
            vm: shared.name.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::super::{BootFailure, error_chain};
    use super::*;
    use std::time::Duration;

    fn io(text: &str) -> std::io::Error {
        std::io::Error::other(text.to_owned())
    }

    /// Typed, the errors read as the strings they replaced: on the control API, in the record
    /// and in `cove start`'s and `cove why`'s output.
    #[test]
    fn typed_failures_render_as_the_messages_they_replaced() {
        let unresponsive = cove_agent_link::LinkError::AgentUnresponsive {
            waited: Duration::from_secs(3),
        };
        let cases: Vec<(Box<dyn std::error::Error>, String)> = vec![
            (
                Box::new(SaveError::CreateDir {
                    path: "/s/.t.1".into(),
                    source: io("No space left"),
                }),
                "cannot create /s/.t.1: No space left".into(),
            ),
            (
                Box::new(SaveError::Io {
                    path: "/s/t".into(),
                    source: io("Permission denied"),
                }),
                "Permission denied".into(),
            ),
            (
                Box::new(BootFailure::Fixup(FixupError::Entropy(io("EIO")))),
                "the restored guest could not be fixed up: reading host entropy: EIO".into(),
            ),
            (
                Box::new(BootFailure::Fixup(FixupError::FixupRefused(
                    unresponsive.clone(),
                ))),
                format!(
                    "the restored guest could not be fixed up: the restored guest's agent \
                     refused the fixups: {unresponsive}"
                ),
            ),
            (
                Box::new(BootFailure::Fixup(FixupError::MoveRefused {
                    vm: "c1".into(),
                    source: unresponsive.clone(),
                })),
                format!(
                    "the restored guest could not be fixed up: the restored guest's agent did \
                     not move its NICs to `c1`'s own MACs and addresses ({unresponsive}); an \
                     agent older than this cove cannot: start it cold (`cove stop c1; cove \
                     start c1`)"
                ),
            ),
            (
                Box::new(FixupError::Release(cove_net::NetError::InUse(
                    "n1".into(),
                    "c1".into(),
                ))),
                "lifting the hold on the clone's TAPs: network `n1` still has VMs on it: c1; \
                 `cove delete` them first"
                    .into(),
            ),
        ];
        for (err, text) in cases {
            assert_eq!(error_chain(&*err), text);
        }
    }
}
