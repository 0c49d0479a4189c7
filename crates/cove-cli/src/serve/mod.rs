//! The HTTP API of `cove serve`: routing and the unix-socket listener here,
//! the handlers (one per verb, each annotated for the OpenAPI description)
//! in `routes.rs`. Verbs run the same `lifecycle` calls as the CLI, on
//! blocking threads, so the API and the CLI behave alike.

mod build;
mod routes;
mod streams;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use std::path::Path;
use utoipa::OpenApi;

pub use routes::ApiDoc;

/// The OpenAPI description, as kept in `docs/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// Listens on `socket` until the process is ended.
pub async fn serve(paths: cove_state::Paths, socket: &Path) -> Result<()> {
    let listener = bind_private(socket)?;
    eprintln!("cove: serving the API on {}", socket.display());
    loop {
        let (stream, _) = listener.accept().await?;
        let paths = paths.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let paths = paths.clone();
                async move { Ok::<_, std::convert::Infallible>(route(paths, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                // A client that never finishes its headers is dropped.
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                // exec and console switch the connection to their own protocol.
                .with_upgrades()
                .await;
        });
    }
}

/// Binds with umask 0177 so the socket is 0600 from its first moment (a
/// chmod after bind would leave a window for other users to connect).
/// A socket file nobody listens on is a leftover and is replaced.
fn bind_private(socket: &Path) -> Result<tokio::net::UnixListener> {
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "something already serves on {}; stop it, or pick another --socket",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = tokio::net::UnixListener::bind(socket);
    rustix::process::umask(old);
    bound.with_context(|| format!("listening on {}", socket.display()))
}

/// A reply: a whole JSON body, or a stream (image build events).
type Reply = Response<BoxBody<Bytes, std::convert::Infallible>>;

async fn route(paths: cove_state::Paths, req: Request<hyper::body::Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, ["v1", "openapi.json"]) => {
            respond(StatusCode::OK, openapi_json().into_bytes())
        }
        (&Method::GET, ["v1", "vms"]) => routes::list_vms(paths).await,
        (&Method::GET, ["v1", "vms", name]) => routes::show_vm(paths, name.to_string()).await,
        (&Method::POST, ["v1", "vms", name, "start"]) => {
            routes::start_vm(paths, name.to_string()).await
        }
        (&Method::POST, ["v1", "vms", name, "stop"]) => {
            routes::stop_vm(paths, name.to_string()).await
        }
        (&Method::POST, ["v1", "vms", name, "kill"]) => {
            routes::kill_vm(paths, name.to_string()).await
        }
        (&Method::POST, ["v1", "images", "build"]) => build::build_image(paths, req).await,
        (&Method::POST, ["v1", "vms", name, "exec"]) => {
            let name = name.to_string();
            streams::exec(paths, name, req).await
        }
        (&Method::POST, ["v1", "vms", name, "console"]) => {
            let name = name.to_string();
            streams::console(paths, name, req).await
        }
        _ => routes::error(
            StatusCode::NOT_FOUND,
            format!("no route {} {path}; see GET /v1/openapi.json", req.method()),
        ),
    }
}

fn respond(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)).boxed());
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    reply
}

#[cfg(test)]
mod tests {
    /// The description in the repository is the one the types generate.
    #[test]
    fn docs_openapi_json_is_current() {
        let kept = include_str!("../../../../docs/openapi.json");
        assert!(
            kept.trim_end() == super::openapi_json().trim_end(),
            "docs/openapi.json is stale: run `cove serve --openapi > docs/openapi.json`"
        );
    }
}
