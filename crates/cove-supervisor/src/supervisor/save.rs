//! Snapshots of the running VM, and the fixups a restored guest gets before anyone reaches it.

use super::{Phase, Shared, StopKind, vmm};
use crate::snapshot::{self, MEMORY, ROOT, STATE};
use cove_api::Response;
use cove_state::Store;
use std::io::Read;
use std::time::Instant;

/// Saves device state, memory and every disk as snapshot `tag`, consistent with each other (the
/// vCPUs are paused and the disks flushed from the first step to the last), then resumes the VM
/// or ends it.
pub async fn snapshot(shared: &Shared, tag: &str, resume: bool) -> Response {
    match save(shared, tag, resume).await {
        Ok(detail) => Response::Done { detail },
        Err(message) => super::control::failed(message),
    }
}

async fn save(shared: &Shared, tag: &str, resume: bool) -> Result<String, String> {
    let name = &shared.name;
    if shared.restored {
        return Err(format!(
            "`{name}` runs from a snapshot, whose memory it maps privately; restart it cold \
             (`cove stop {name}` then `cove start {name}`) to take a new snapshot"
        ));
    }
    if !matches!(*shared.phase.borrow(), Phase::Ready { .. }) {
        return Err(format!("`{name}` is not running and ready; start it first"));
    }
    let began = Instant::now();
    let record = Store::open(&shared.paths)
        .and_then(|s| s.get_vm(name))
        .map_err(|e| e.to_string())?;
    let vm = shared.paths.vm(name);
    let target = vm.snapshot(tag);
    if target.exists() {
        return Err(snapshot::SnapshotError::Exists {
            vm: name.clone(),
            tag: tag.to_owned(),
        }
        .to_string());
    }
    // Written beside the target and renamed at the end: a failed or killed save leaves no
    // snapshot that looks whole.
    let tmp = vm
        .snapshots()
        .join(format!(".{tag}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = async {
        if !shared.backend.capabilities().snapshots {
            return Err(format!(
                "the {} backend cannot save a running VM",
                shared.backend.kind()
            ));
        }
        shared
            .control
            .save_state(&tmp.join(STATE))
            .await
            .map_err(|e| super::error_chain(&e))?;
        let paused_ms = began.elapsed().as_millis();
        // The VMM flushed and released the disks when the save completed; copy them while the
        // vCPUs stay paused.
        let copy = |from: &std::path::Path, to: &str| {
            snapshot::copy_sparse(from, &tmp.join(to)).map_err(|e| e.to_string())
        };
        copy(&vm.memory_file(), MEMORY)?;
        copy(&vm.root_disk(), ROOT)?;
        for disk in &record.data_disks {
            copy(
                &crate::data_disk::path_for(&shared.paths, &record, disk),
                &snapshot::data_disk_file(disk),
            )?;
        }
        let manifest = snapshot::manifest_for(&tmp, &record, tag).map_err(|e| e.to_string())?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        std::fs::write(tmp.join(snapshot::MANIFEST), json).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &target).map_err(|e| e.to_string())?;
        Ok::<_, String>(paused_ms)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let after = if resume {
        // Resuming after a completed save re-activates the disks and runs the vCPUs.
        shared
            .control
            .resume()
            .await
            .map_err(|e| super::error_chain(&e))?;
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

/// Clock, entropy and (for a clone) identity, sent to a guest just restored.
pub async fn fixup(shared: &Shared) -> Result<(), String> {
    let record = Store::open(&shared.paths)
        .and_then(|s| s.get_vm(&shared.name))
        .map_err(|e| e.to_string())?;
    let Some(link) = &shared.agent else {
        if nic_moves(&shared.paths, &record).is_ok_and(|m| m.is_empty()) {
            return Ok(());
        }
        return Err(format!(
            "`{}` resumed with another VM's MACs and addresses on its cove networks, and \
             without an agent nothing can move them; start it cold",
            shared.name
        ));
    };
    let mut entropy = vec![0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut entropy))
        .map_err(|e| format!("reading host entropy: {e}"))?;
    let clone = record.cloned_from.is_some();
    let machine_id = clone.then(|| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&entropy[..16]);
        hex::encode(id)
    });
    // The clone's id must not be derivable from what the guest is given: fresh bytes for it.
    let entropy = if clone {
        let mut more = vec![0u8; 64];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut more))
            .map_err(|e| format!("reading host entropy: {e}"))?;
        more
    } else {
        entropy
    };
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
        .map_err(|_| "the restored guest's agent did not apply the fixups in time".to_owned())?
        .map_err(|e| format!("the restored guest's agent refused the fixups: {e}"))?;
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
) -> Result<(), String> {
    let moves = nic_moves(&shared.paths, record).map_err(|e| e.to_string())?;
    if !moves.is_empty() {
        send_moves(shared, link, &moves).await?;
    }
    // Whatever held its TAPs (this start, or one whose supervisor died mid-fixup) is lifted
    // only now that its NICs are its own.
    let (paths, name) = (shared.paths.clone(), shared.name.clone());
    tokio::task::spawn_blocking(move || cove_net::release_vm(&paths, &name))
        .await
        .map_err(|e| format!("lifting the hold on the clone's TAPs: {e}"))?
        .map_err(|e| format!("lifting the hold on the clone's TAPs: {e}"))
}

async fn send_moves(
    shared: &Shared,
    link: &cove_agent_link::AgentLink,
    moves: &[cove_net::NicMove],
) -> Result<(), String> {
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
        .map_err(|_| "the restored guest's agent did not move its NICs in time".to_owned())?
        .map_err(|e| {
            format!(
                "the restored guest's agent did not move its NICs to `{}`'s own MACs and \
                 addresses ({e}); an agent older than this cove cannot: start it cold \
                 (`cove stop {0}; cove start {0}`)",
                shared.name
            )
        })
        .map(drop)
}
