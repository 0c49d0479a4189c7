//! The control socket: one request per connection (see cove-api).

use super::{Phase, Shared, StopKind, vmm};
use cove_api::{Failure, Request, Response, Status, read_message, write_message};
use cove_state::VmPaths;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

/// How long a CLI may take to send its stream request after connecting.
const RELAY_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket, readable and writable by its owner only.
pub fn bind(vm: &VmPaths) -> std::io::Result<UnixListener> {
    std::fs::create_dir_all(&vm.run)?;
    std::fs::set_permissions(&vm.run, std::fs::Permissions::from_mode(0o700))?;
    let path = vm.control_socket();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until the VM has exited; returns the handlers still
/// running so their answers can be delivered.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) -> JoinSet<()> {
    let mut handlers = JoinSet::new();
    let mut phase = shared.phase.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    handlers.spawn(handle(stream, Arc::clone(&shared)));
                }
            }
            _ = phase.wait_for(|p| matches!(p, Phase::Exited { .. })) => break,
        }
        while handlers.try_join_next().is_some() {}
    }
    handlers
}

/// Waits (bounded) for handlers to answer after the VM exited.
pub async fn drain(server: tokio::task::JoinHandle<JoinSet<()>>, grace: Duration) {
    let Ok(Ok(mut handlers)) = tokio::time::timeout(grace, server).await else {
        return;
    };
    let _ = tokio::time::timeout(grace, async {
        while handlers.join_next().await.is_some() {}
    })
    .await;
}

async fn handle(stream: UnixStream, shared: Arc<Shared>) {
    let mut stream = BufReader::new(stream);
    let request: Request = match read_message(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let _ = write_message(stream.get_mut(), &failed(format!("bad request: {e}"))).await;
            return;
        }
    };
    let response = match request {
        Request::Status => Response::Status(status(&shared)),
        Request::WaitReady => wait_ready(&shared).await,
        Request::Stop { timeout_secs } => {
            let detail = vmm::stop(&shared, Duration::from_secs(timeout_secs)).await;
            Response::Done { detail }
        }
        Request::Kill => {
            *shared.stop.lock().await = Some((StopKind::Kill, Instant::now()));
            vmm::kill(&shared);
            let mut phase = shared.phase.subscribe();
            let _ = phase.wait_for(|p| matches!(p, Phase::Exited { .. })).await;
            Response::Done {
                detail: "killed".into(),
            }
        }
        Request::Snapshot { tag, resume } => super::save::snapshot(&shared, &tag, resume).await,
        Request::Console { replay_bytes } => {
            if write_message(stream.get_mut(), &Response::Streaming)
                .await
                .is_ok()
            {
                shared
                    .console
                    .attach(stream.into_inner(), replay_bytes)
                    .await;
            }
            return;
        }
        Request::Agent => match &shared.agent {
            Some(link) => {
                if write_message(stream.get_mut(), &Response::Streaming)
                    .await
                    .is_ok()
                {
                    // The reader itself, not its inner stream: bytes it already
                    // buffered past the request line belong to the relayed stream.
                    let _ = cove_agent_link::relay(stream, link, RELAY_OPEN_TIMEOUT).await;
                }
                return;
            }
            None => failed(format!(
                "the image of `{}` has no cove agent; rebuild it with the agent (`cove image build`)",
                shared.name
            )),
        },
    };
    let _ = write_message(stream.get_mut(), &response).await;
}

pub(super) fn failed(message: String) -> Response {
    Response::Failed(Failure {
        message,
        hint: None,
        console_tail: Vec::new(),
    })
}

fn status(shared: &Shared) -> Status {
    let phase = shared.phase.borrow().clone();
    Status {
        api_version: cove_api::API_VERSION,
        phase: match phase {
            Phase::Booting => cove_api::Phase::Booting,
            Phase::Ready { .. } => cove_api::Phase::Ready,
            Phase::Stopping => cove_api::Phase::Stopping,
            Phase::Exited { .. } => cove_api::Phase::Exited,
        },
        vmm_pid: Some(shared.vmm_pid),
        accel: shared.accel.map(|a| a.to_string()).unwrap_or_default(),
        machine: shared.machine.to_string(),
        agent_version: shared
            .agent
            .as_ref()
            .and_then(|l| l.info())
            .map(|i| i.version),
        boot_ms: match phase {
            Phase::Ready { boot_ms } => Some(boot_ms),
            _ => None,
        },
        console_viewers: shared.console.viewers(),
    }
}

async fn wait_ready(shared: &Shared) -> Response {
    let mut phase = shared.phase.subscribe();
    let settled = phase
        .wait_for(|p| !matches!(p, Phase::Booting))
        .await
        .map(|p| p.clone());
    match settled {
        Ok(Phase::Ready { boot_ms }) => Response::Ready { boot_ms },
        Ok(Phase::Exited {
            failure: Some(f), ..
        }) => Response::Failed(f),
        Ok(Phase::Exited { detail, .. }) => failed(format!("the VM exited during boot: {detail}")),
        Ok(Phase::Stopping) => failed("the VM is being stopped".into()),
        Ok(Phase::Booting) | Err(_) => failed("the supervisor is shutting down".into()),
    }
}
