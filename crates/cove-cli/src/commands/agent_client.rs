//! Reaching a running VM's agent: through its supervisor's control socket,
//! which relays one agent stream per connection.

use crate::context::Ctx;
use anyhow::{Result, bail};
use cove_agent_link::{FnOpener, LinkError, OpenRequest, RemoteStream, Stream, StreamOpener};
use cove_api::{Client, ClientError, Request};
use cove_state::VmState;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long opening one stream may take (the agent answers in milliseconds).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the VM is running and returns an opener for streams to its agent.
///
/// The supervisor is asked first (one status round trip, which is also the API version check):
/// a supervisor that says its guest is ready needs no state store read, which keeps `cove exec`
/// cheap. Anything else (no answer, still booting, stopping) goes through the store, which says
/// why there is no agent and adopts a running VM whose supervisor died.
pub fn opener(ctx: &Ctx, name: &str) -> Result<impl StreamOpener + use<>> {
    let client = Client::new(name, ctx.paths.vm(name).control_socket());
    match client.status() {
        Ok(status) if status.phase == cove_api::Phase::Ready => return Ok(client_opener(client)),
        Err(e @ ClientError::VersionMismatch { .. }) => return Err(e.into()),
        _ => {}
    }
    let record = cove_vm::lifecycle::show(&ctx.paths, name)?;
    if let Some(why) = not_running(name, record.state) {
        bail!("{why}");
    }
    Ok(client_opener(client))
}

/// Why a VM in `state` has no agent to reach, with the next step; `None`
/// when it is running. `cove exec` and the API's exec say the same.
pub fn not_running(name: &str, state: VmState) -> Option<String> {
    match state {
        VmState::Running => None,
        VmState::Starting => Some(format!(
            "`{name}` is still starting; wait for `cove start {name}` to return"
        )),
        state => Some(format!(
            "`{name}` is {state}, so there is nothing to run commands in; start it with \
             `cove start {name}` (a stopped VM's files can be read with `cove disk cat {name}:/path`)"
        )),
    }
}

/// Streams to the agent through the supervisor listening on `socket`: the
/// one way the CLI and `cove serve` reach a guest's agent. The supervisor's API version is
/// checked once, on the first stream.
pub fn socket_opener(name: &str, socket: PathBuf) -> impl StreamOpener + Send + 'static + use<> {
    client_opener(Client::new(name, socket))
}

fn client_opener(client: Client) -> impl StreamOpener + Send + 'static {
    FnOpener(move |req: OpenRequest| open(client.clone(), req))
}

async fn open(client: Client, req: OpenRequest) -> Result<Stream, LinkError> {
    let conn = client
        .open_stream(&Request::Agent)
        .await
        .map_err(|e| match e {
            ClientError::Unreachable { socket, source, .. } => LinkError::Connect {
                path: socket,
                source: Arc::new(source),
            },
            other => LinkError::Local {
                what: "the VM's supervisor refused".into(),
                source: Arc::new(std::io::Error::other(other)),
            },
        })?;
    // The reader itself: the relay's first bytes may already be in its buffer.
    RemoteStream::open(conn, req, OPEN_TIMEOUT).await
}
