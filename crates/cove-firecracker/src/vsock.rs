//! The host end of Firecracker's hybrid vsock: a unix socket Firecracker
//! listens on; a host-initiated connection says `CONNECT <port>\n` and gets
//! `OK <host port>\n` once the guest accepted on that vsock port. After that
//! line the socket carries the guest's stream.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The acknowledgement is `OK ` and a u32: far shorter than this.
const MAX_ACK: usize = 32;

/// Connects to guest vsock `port` through the hybrid socket at `uds_path`.
pub async fn connect(uds_path: &Path, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    let handshake = async {
        let mut stream = UnixStream::connect(uds_path).await?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await?;
        let line = read_line(&mut stream).await?;
        match line.strip_prefix("OK ").map(|p| p.parse::<u32>()) {
            Some(Ok(_)) => Ok(stream),
            _ => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "Firecracker answered {line:?} to CONNECT {port}; is the guest agent \
                     listening on vsock port {port}?"
                ),
            )),
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to CONNECT"))?
}

/// Reads one `\n`-terminated line, a byte at a time: what follows it is the
/// guest's stream and must stay in the socket.
async fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        if stream.read(&mut byte).await? == 0 {
            // Firecracker closes the connection when nothing listens on the
            // guest port.
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "Firecracker closed the connection: nothing listens on that guest port",
            ));
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
        if line.len() > MAX_ACK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the CONNECT acknowledgement is too long",
            ));
        }
    }
}
