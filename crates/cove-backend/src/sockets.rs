//! Connecting to the unix sockets a freshly started VMM listens on.
//!
//! QEMU creates its sockets a few milliseconds after it starts; connecting
//! earlier fails with ENOENT or ECONNREFUSED. Callers wait for the socket to
//! accept, bounded by a deadline, and stop early if the VMM died.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;

/// Connects to `path`, retrying while the socket does not exist or does not
/// accept yet, until `timeout`. `alive` is asked between attempts; when it
/// says the VMM is gone, waiting stops with `ErrorKind::BrokenPipe`.
pub async fn connect_when_ready(
    path: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    // Start fast (QEMU is usually there within 20 ms), back off to 50 ms.
    let mut pause = Duration::from_millis(2);
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                if !alive() {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!("the VMM exited before {} accepted", path.display()),
                    ));
                }
                if Instant::now() + pause > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} did not accept within {timeout:?}: {e}", path.display()),
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_socket_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let p2 = path.clone();
        let listener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let l = tokio::net::UnixListener::bind(&p2).unwrap();
            l.accept().await.unwrap()
        });
        connect_when_ready(&path, Duration::from_secs(5), || true)
            .await
            .unwrap();
        listener.await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_when_the_vmm_is_gone_or_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never.sock");
        let err = connect_when_ready(&path, Duration::from_secs(5), || false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let err = connect_when_ready(&path, Duration::from_millis(20), || true)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
