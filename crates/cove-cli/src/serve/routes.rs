//! One handler per verb. Each runs the CLI's own `lifecycle` call on a
//! blocking thread and answers with the `--json` types of `views.rs`.

use super::{Reply, respond};
use crate::views::{
    ApiError, BuildEvent, BuildFailure, BuildOptions, ExecEnd, ExecOptions, PortView, VmView,
};
use cove_state::StoreError;
use cove_vm::LifecycleError;
use cove_vm::lifecycle::{self, StartOptions};
use hyper::StatusCode;
use std::time::Duration;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cove",
        description = "cove's VM verbs over HTTP+JSON on a unix socket (`cove serve --socket PATH`). \
                       The bodies are the shapes `cove --json` prints."
    ),
    paths(
        list_vms,
        show_vm,
        start_vm,
        stop_vm,
        kill_vm,
        super::streams::exec,
        super::streams::console,
        super::build::build_image
    ),
    components(schemas(
        VmView,
        PortView,
        ApiError,
        ExecOptions,
        ExecEnd,
        BuildOptions,
        BuildEvent,
        BuildFailure
    ))
)]
pub struct ApiDoc;

/// How long a started guest may take to become ready (as `cove start`).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped guest gets to shut down before it is forced (as `cove stop`).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Every VM and its true state (`cove list --json`).
#[utoipa::path(get, path = "/v1/vms", responses((status = 200, body = [VmView])))]
pub async fn list_vms(paths: cove_state::Paths) -> Reply {
    blocking(move || {
        let vms = lifecycle::list(&paths)?;
        Ok(vms.iter().map(VmView::from).collect::<Vec<_>>())
    })
    .await
}

/// One VM (`cove show --json`).
#[utoipa::path(
    get,
    path = "/v1/vms/{name}",
    params(("name" = String, Path, description = "the VM's name")),
    responses((status = 200, body = VmView), (status = 404, body = ApiError))
)]
pub async fn show_vm(paths: cove_state::Paths, name: String) -> Reply {
    blocking(move || Ok(VmView::from(&lifecycle::show(&paths, &name)?))).await
}

/// Boots a VM and answers when its agent answers (`cove start`).
#[utoipa::path(
    post,
    path = "/v1/vms/{name}/start",
    params(("name" = String, Path, description = "the VM's name")),
    responses(
        (status = 200, body = VmView),
        (status = 404, body = ApiError),
        (status = 409, description = "already running", body = ApiError),
        (status = 500, description = "the boot failed; the error says why", body = ApiError)
    )
)]
pub async fn start_vm(paths: cove_state::Paths, name: String) -> Reply {
    blocking(move || {
        let opts = StartOptions {
            boot_timeout: BOOT_TIMEOUT,
            from: None,
        };
        Ok(VmView::from(
            &lifecycle::start(&paths, &name, &opts)?.record,
        ))
    })
    .await
}

/// Shuts a VM down gracefully, forced after 30 s (`cove stop`).
#[utoipa::path(
    post,
    path = "/v1/vms/{name}/stop",
    params(("name" = String, Path, description = "the VM's name")),
    responses((status = 200, body = VmView), (status = 404, body = ApiError))
)]
pub async fn stop_vm(paths: cove_state::Paths, name: String) -> Reply {
    blocking(move || {
        lifecycle::stop(&paths, &name, STOP_TIMEOUT)?;
        Ok(VmView::from(&lifecycle::show(&paths, &name)?))
    })
    .await
}

/// Ends a VM's VMM at once (`cove kill`).
#[utoipa::path(
    post,
    path = "/v1/vms/{name}/kill",
    params(("name" = String, Path, description = "the VM's name")),
    responses((status = 200, body = VmView), (status = 404, body = ApiError))
)]
pub async fn kill_vm(paths: cove_state::Paths, name: String) -> Reply {
    blocking(move || {
        lifecycle::kill(&paths, &name)?;
        Ok(VmView::from(&lifecycle::show(&paths, &name)?))
    })
    .await
}

/// Runs a lifecycle call off the async threads (it blocks on the
/// supervisor) and turns its result into a reply.
async fn blocking<T: serde::Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Reply {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => match serde_json::to_vec_pretty(&value) {
            Ok(body) => respond(StatusCode::OK, body),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(Err(e)) => lifecycle_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A lifecycle failure as a reply: its status says its kind.
pub fn lifecycle_error(e: &LifecycleError) -> Reply {
    error(status_of(e), chain(e))
}

fn status_of(e: &LifecycleError) -> StatusCode {
    match e {
        LifecycleError::Store(StoreError::NoSuchVm(_)) => StatusCode::NOT_FOUND,
        LifecycleError::AlreadyRunning(..) | LifecycleError::Running(..) => StatusCode::CONFLICT,
        LifecycleError::BadResources(_) | LifecycleError::PortTaken { .. } => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error and every cause, as the CLI prints them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn error(status: StatusCode, message: String) -> Reply {
    let body = serde_json::to_vec_pretty(&ApiError { error: message }).unwrap_or_default();
    respond(status, body)
}
