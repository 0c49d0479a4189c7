//! The serial console: every byte the guest writes goes to the persisted log
//! first, then to any attached viewers; viewers' keystrokes go back to the
//! guest. When nobody is attached the supervisor answers the terminal's
//! cursor-position query itself, so shells on the serial line do not wait
//! for an answer that never comes (seed 003: a shell crashed on `ESC[6n`).

use crate::console_log::CappedLog;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, watch};

/// How much recent output a newly attached viewer can replay.
const HISTORY_BYTES: usize = 64 * 1024;

/// The query a terminal answers with its cursor position.
const CURSOR_QUERY: &[u8] = b"\x1b[6n";
/// A plausible answer: row 1, column 1. Any answer unblocks the asker.
const CURSOR_REPLY: &[u8] = b"\x1b[1;1R";

/// The line the image's init prints when it reached its ready point.
pub const READY_MARKER: &str = cove_guest::marker::READY;
use cove_guest::marker::KERNEL_PANIC;

pub struct ConsoleHub {
    history: Mutex<VecDeque<u8>>,
    output: broadcast::Sender<Arc<[u8]>>,
    input: mpsc::Sender<Vec<u8>>,
    viewers: AtomicU32,
    /// Set once the ready marker was seen on this boot.
    pub marker_seen: watch::Sender<bool>,
    /// Set once the guest kernel panicked: waiting for the guest is pointless from then on.
    pub panic_seen: watch::Sender<bool>,
}

impl ConsoleHub {
    pub fn viewers(&self) -> u32 {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Sends keystrokes to the guest.
    pub async fn send_input(&self, bytes: Vec<u8>) {
        let _ = self.input.send(bytes).await;
    }

    fn record(&self, chunk: &[u8]) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.extend(chunk);
        let excess = history.len().saturating_sub(HISTORY_BYTES);
        history.drain(..excess);
    }

    /// Attaches a viewer to `client` until either side closes: replays
    /// `replay_bytes` of history, then streams live output.
    pub async fn attach(self: &Arc<Self>, client: UnixStream, replay_bytes: u64) {
        let (mut reader, mut writer) = client.into_split();
        // Subscribe before copying history, so no byte falls in between.
        let mut live = self.output.subscribe();
        let replay: Vec<u8> = {
            let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let skip = history.len().saturating_sub(replay_bytes as usize);
            history.iter().skip(skip).copied().collect()
        };
        self.viewers.fetch_add(1, Ordering::Relaxed);
        let hub = Arc::clone(self);
        let to_guest = async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                hub.send_input(buf[..n].to_vec()).await;
            }
        };
        let to_viewer = async move {
            if writer.write_all(&replay).await.is_err() {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(chunk) => {
                        if writer.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    // A viewer too slow to keep up skips ahead; the log file has everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        tokio::select! {
            _ = to_guest => {}
            _ = to_viewer => {}
        }
        self.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts pumping the console socket into `log` (opened to read and
/// write, not append), capped at [`crate::console_log::CAP`]; returns the hub.
pub fn start(stream: UnixStream, log: std::fs::File) -> std::io::Result<Arc<ConsoleHub>> {
    let mut log = CappedLog::new(log)?;
    // Viewers that fall behind skip ahead (the log has everything), so a
    // short queue bounds memory even with a chatty console.
    let (output, _) = broadcast::channel(32);
    let (input, mut input_rx) = mpsc::channel::<Vec<u8>>(64);
    let (marker_seen, _) = watch::channel(false);
    let (panic_seen, _) = watch::channel(false);
    let hub = Arc::new(ConsoleHub {
        history: Mutex::new(VecDeque::with_capacity(HISTORY_BYTES)),
        output,
        input,
        viewers: AtomicU32::new(0),
        marker_seen,
        panic_seen,
    });
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        while let Some(bytes) = input_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let pump_hub = Arc::clone(&hub);
    tokio::spawn(async move {
        let hub = pump_hub;
        let mut buf = vec![0u8; 16 * 1024];
        let mut scanner = Scanner::default();
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            // The log comes first: if anything below fails, the evidence is kept.
            let _ = log.write(chunk);
            hub.record(chunk);
            let _ = hub.output.send(Arc::from(chunk));
            let found = scanner.feed(chunk);
            if found.ready {
                hub.marker_seen.send_replace(true);
            }
            if found.panic {
                hub.panic_seen.send_replace(true);
            }
            if found.cursor_queries > 0 && hub.viewers() == 0 {
                for _ in 0..found.cursor_queries {
                    hub.send_input(CURSOR_REPLY.to_vec()).await;
                }
            }
        }
    });
    Ok(hub)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    ready: bool,
    panic: bool,
    cursor_queries: usize,
}

/// Finds markers in a byte stream that arrives in arbitrary chunks, so a
/// marker split across two reads is still found exactly once.
#[derive(Default)]
struct Scanner {
    tail: Vec<u8>,
}

impl Scanner {
    fn feed(&mut self, chunk: &[u8]) -> Found {
        let keep = READY_MARKER
            .len()
            .max(KERNEL_PANIC.len())
            .max(CURSOR_QUERY.len())
            - 1;
        let mut window = std::mem::take(&mut self.tail);
        let old = window.len();
        window.extend_from_slice(chunk);
        // Count only matches that end inside the new chunk.
        let ends_in_new = |needle: &[u8]| {
            window
                .windows(needle.len())
                .enumerate()
                .filter(|(i, w)| *w == needle && i + needle.len() > old)
                .count()
        };
        let found = Found {
            ready: ends_in_new(READY_MARKER.as_bytes()) > 0,
            panic: ends_in_new(KERNEL_PANIC.as_bytes()) > 0,
            cursor_queries: ends_in_new(CURSOR_QUERY),
        };
        let start = window.len().saturating_sub(keep);
        self.tail = window[start..].to_vec();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_panic_is_seen_even_split_across_reads() {
        let mut s = Scanner::default();
        assert!(!s.feed(b"[ 8.1] Kernel panic - not sy").panic);
        assert!(s.feed(b"ncing: System is deadlocked on memory\r\n").panic);
        assert!(!s.feed(b"more\r\n").panic);
    }

    #[test]
    fn markers_split_across_reads_are_found_once() {
        let mut s = Scanner::default();
        assert_eq!(s.feed(b"boot... cove-init: re"), Found::default());
        assert_eq!(
            s.feed(b"ady\r\n$ \x1b[6"),
            Found {
                ready: true,
                ..Found::default()
            }
        );
        assert_eq!(
            s.feed(b"n"),
            Found {
                cursor_queries: 1,
                ..Found::default()
            }
        );
        assert_eq!(
            s.feed(b"x\x1b[6n\x1b[6n"),
            Found {
                cursor_queries: 2,
                ..Found::default()
            }
        );
    }

    #[tokio::test]
    async fn unanswered_cursor_queries_get_a_reply_and_the_log_gets_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("console.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&log_path)
            .unwrap();
        let (guest, host) = UnixStream::pair().unwrap();
        let _hub = start(host, log).unwrap();
        let (mut gr, mut gw) = guest.into_split();
        gw.write_all(b"prompt\x1b[6n").await.unwrap();
        let mut reply = [0u8; 6];
        tokio::time::timeout(std::time::Duration::from_secs(5), gr.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply, CURSOR_REPLY);
        assert_eq!(std::fs::read(&log_path).unwrap(), b"prompt\x1b[6n");
    }
}
