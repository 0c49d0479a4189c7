//! A minimal HTTP/1.1 client for Firecracker's API socket: one request per
//! connection, a JSON body out, a status and a small JSON body back.
//!
//! Why by hand: the API is a local unix socket with a handful of PUT/PATCH
//! calls; hyper plus a unix-socket connector would be most of this crate's
//! dependencies for that. Responses are parsed with `httparse` (the parser
//! under hyper) and bounded in size and time.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::api::{ApiError, ApiRequest};

/// The most of an answer read: Firecracker's bodies are a few hundred bytes.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// How long one request may take before the VMM counts as hung.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach the Firecracker API at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{method} {uri}` broke off")]
    Io {
        method: &'static str,
        uri: String,
        #[source]
        source: io::Error,
    },
    #[error("`{method} {uri}` got no answer within {REQUEST_TIMEOUT:?}; the VMM is hung")]
    Timeout { method: &'static str, uri: String },
    #[error("`{method} {uri}` got a malformed answer: {detail}")]
    Malformed {
        method: &'static str,
        uri: String,
        detail: String,
    },
    /// Firecracker refused the request (4xx/5xx), with its `fault_message`.
    #[error("Firecracker refused `{method} {uri}` ({status}): {fault}")]
    Refused {
        method: &'static str,
        uri: String,
        status: u16,
        fault: String,
    },
}

/// An answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `request` to the API socket at `socket`; a non-2xx answer is
/// [`HttpError::Refused`].
pub async fn send(socket: &Path, request: &ApiRequest) -> Result<Answer, HttpError> {
    let uri = request.path.clone();
    let method = request.method;
    let exchange = async {
        let mut stream =
            UnixStream::connect(socket)
                .await
                .map_err(|source| HttpError::Connect {
                    path: socket.to_owned(),
                    source,
                })?;
        let io_err = |source| HttpError::Io {
            method,
            uri: uri.clone(),
            source,
        };
        stream.write_all(&encode(request)).await.map_err(io_err)?;
        read_answer(&mut stream, method, &uri).await
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            method,
            uri: uri.clone(),
        })??;
    if (200..300).contains(&answer.status) {
        return Ok(answer);
    }
    let fault = serde_json::from_slice::<ApiError>(&answer.body)
        .map(|e| e.fault_message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&answer.body).into_owned());
    Err(HttpError::Refused {
        method,
        uri,
        status: answer.status,
        fault,
    })
}

/// The request's bytes: `Host` is required by HTTP/1.1; `Connection: close`
/// since each request has its own connection.
pub fn encode(request: &ApiRequest) -> Vec<u8> {
    let body = request
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).expect("a JSON value serializes"))
        .unwrap_or_default();
    let mut out = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n",
        request.method, request.path
    );
    if request.body.is_some() {
        out.push_str("Content-Type: application/json\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

async fn read_answer(
    stream: &mut UnixStream,
    method: &'static str,
    uri: &str,
) -> Result<Answer, HttpError> {
    let malformed = |detail: String| HttpError::Malformed {
        method,
        uri: uri.to_owned(),
        detail,
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| HttpError::Io {
                method,
                uri: uri.to_owned(),
                source,
            })?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(malformed(format!("longer than {MAX_RESPONSE} bytes")));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.unwrap_or_default();
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| malformed("a bad Content-Length".into()))
                    })
                    .transpose()?;
                let body = &buf[head..];
                match length {
                    Some(len) if len > MAX_RESPONSE => {
                        return Err(malformed(format!("a body of {len} bytes")));
                    }
                    Some(len) if body.len() >= len => {
                        return Ok(Answer {
                            status,
                            body: body[..len].to_vec(),
                        });
                    }
                    // No length: the body ends with the connection (or is
                    // empty, as in a 204).
                    None if n == 0 || status == 204 => {
                        return Ok(Answer {
                            status,
                            body: body.to_vec(),
                        });
                    }
                    _ if n == 0 => return Err(malformed("the body was cut short".into())),
                    _ => {}
                }
            }
            Ok(httparse::Status::Partial) if n == 0 => {
                return Err(malformed("the connection closed mid-header".into()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(malformed(e.to_string())),
        }
    }
}
