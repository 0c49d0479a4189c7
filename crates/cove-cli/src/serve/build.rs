//! `POST /v1/images/build`: an image build whose progress streams back as
//! newline-delimited JSON [`BuildEvent`]s, ending with `built` or `failed`.
//! The build is `cove image build`'s own (`commands::image::run_build`),
//! reported through the same `EventProgress` as `--json`.
//!
//! The build never waits for the client: events go into a bounded queue
//! without blocking (progress bytes and messages are left out when the
//! queue is nearly full; stage events keep a reserve), so a slow or gone
//! client costs at most the queue, and the build's result lands in the
//! cache either way.

use super::{Reply, routes, streams::read_json};
use crate::commands::image::{BuildArgs, EventProgress, run_build};
use crate::views::{BuildEvent, BuildFailure, BuildOptions};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Events queued for the client at most.
const QUEUE: usize = 256;
/// Free places kept for stage events: bytes and messages are dropped below it.
const RESERVE: usize = 32;
/// How long the last event may wait for room in the queue.
const LAST_EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds an image and streams its progress (`cove image build`).
#[utoipa::path(
    post,
    path = "/v1/images/build",
    request_body = BuildOptions,
    responses(
        (status = 200, content_type = "application/x-ndjson", body = [BuildEvent],
         description = "One BuildEvent per line as the build goes; the last is `built` (with the \
                        image's manifest, as `cove image build --json` prints it) or `failed` \
                        (with its kind)."),
        (status = 400, description = "a bad request body, or a spec file that does not exist", body = crate::views::ApiError),
    )
)]
pub async fn build_image(paths: cove_state::Paths, req: Request<Incoming>) -> Reply {
    let options: BuildOptions = match read_json(req.into_body()).await {
        Ok(options) => options,
        Err(message) => return routes::error(StatusCode::BAD_REQUEST, message),
    };
    let args = match build_args(options) {
        Ok(args) => args,
        Err(message) => return routes::error(StatusCode::BAD_REQUEST, message),
    };
    let (tx, rx) = mpsc::channel::<BuildEvent>(QUEUE);
    let progress_tx = tx.clone();
    let build = tokio::task::spawn_blocking(move || {
        let events = EventProgress(move |event: BuildEvent| {
            let droppable = matches!(event, BuildEvent::Bytes { .. } | BuildEvent::Message { .. });
            if droppable && progress_tx.capacity() <= RESERVE {
                return;
            }
            // Never blocks: a full queue loses this event, not the build.
            let _ = progress_tx.try_send(event);
        });
        run_build(&paths, args, &events)
    });
    tokio::spawn(async move {
        let last = match build.await {
            Ok(Ok(built)) => BuildEvent::Built {
                image: Box::new(built.manifest),
                cached: built.cached,
                seconds: built.seconds,
            },
            Ok(Err(e)) => BuildEvent::Failed {
                kind: BuildFailure::of(&e),
                error: format!("{e:#}"),
            },
            Err(e) => BuildEvent::Failed {
                kind: BuildFailure::Other,
                error: format!("the build thread failed: {e}"),
            },
        };
        let _ = tokio::time::timeout(LAST_EVENT_TIMEOUT, tx.send(last)).await;
    });
    let mut reply = Response::new(EventBody(rx).boxed());
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    reply
}

/// The request as `cove image build`'s arguments; a spec that does not
/// exist is refused before anything streams.
fn build_args(options: BuildOptions) -> Result<BuildArgs, String> {
    if options.what != "minimal" && !std::path::Path::new(&options.what).exists() {
        return Err(format!(
            "`{}` is neither `minimal` nor an image spec file on this host",
            options.what
        ));
    }
    let size = options
        .size
        .as_deref()
        .map(crate::commands::create::parse_size)
        .transpose()?;
    Ok(BuildArgs {
        what: options.what,
        name: options.name,
        kernel: options.kernel,
        arch: None,
        agent: None,
        size,
        modules: options.modules,
        skip_kernel_check: options.skip_kernel_check,
        no_agent: options.no_agent,
    })
}

/// The response body: one JSON line per event until the build's sender closes.
struct EventBody(mpsc::Receiver<BuildEvent>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|event| {
            event.map(|event| {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                Ok(Frame::data(Bytes::from(line)))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(what: &str, size: Option<&str>) -> BuildOptions {
        BuildOptions {
            what: what.into(),
            name: None,
            kernel: None,
            size: size.map(str::to_owned),
            modules: vec![],
            skip_kernel_check: false,
            no_agent: false,
        }
    }

    #[test]
    fn bad_requests_are_refused_before_the_stream() {
        assert!(
            build_args(options("/no/such/spec.toml", None))
                .unwrap_err()
                .contains("/no/such")
        );
        assert!(
            build_args(options("minimal", Some("4096"))).is_err(),
            "a size needs a unit"
        );
        assert_eq!(
            build_args(options("minimal", Some("1G"))).unwrap().size,
            Some(1 << 30)
        );
    }

    #[test]
    fn events_are_tagged_json_lines() {
        let event = BuildEvent::StageFinished {
            stage: "kernel".into(),
            seconds: 1.5,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"stage_finished","stage":"kernel","seconds":1.5}"#
        );
        let failed = BuildEvent::Failed {
            kind: BuildFailure::KernelCheck,
            error: "x".into(),
        };
        assert!(
            serde_json::to_string(&failed)
                .unwrap()
                .contains(r#""kind":"kernel_check""#)
        );
    }
}
