//! The persisted console log: written with a size cap that keeps the
//! boot's first lines, and read in bounded pieces.
//!
//! A guest printing in a loop must not fill the host's disk, nor make
//! `cove why` read gigabytes into memory. So the log holds at most
//! [`CAP`] bytes: the first [`HEAD`] bytes of the boot (the kernel and init
//! lines `why` needs) stay; when the file reaches the cap, everything after
//! the head except the last [`KEEP`] bytes is replaced by one marker line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The most bytes a console log file holds.
pub const CAP: u64 = 16 << 20;
/// The boot's first bytes, never dropped.
pub const HEAD: u64 = 1 << 20;
/// The latest output kept when the middle is dropped.
pub const KEEP: u64 = 2 << 20;
/// Starts the line that replaces dropped output.
pub const CUT_MARKER: &str = "[cove: console log over its cap";

/// A console log that never grows past [`CAP`].
pub struct CappedLog {
    file: File,
    len: u64,
    /// Bytes dropped so far, for the marker line.
    dropped: u64,
}

impl CappedLog {
    /// Continues `file` (opened to read and write, not append: the cut
    /// rewrites it in place) from its current end.
    pub fn new(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            dropped: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `chunk`, dropping the middle of the log first if it would
    /// pass the cap.
    pub fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.len + chunk.len() as u64 > CAP && self.len > HEAD + KEEP {
            self.cut()?;
        }
        // A single chunk larger than what remains (never from a 16 KiB
        // read buffer, but bound it anyway): keep its end.
        let room = (CAP - self.len) as usize;
        let chunk = &chunk[chunk.len().saturating_sub(room)..];
        self.file.write_all_at(chunk, self.len)?;
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Replaces bytes `HEAD..len-KEEP` with a marker line.
    fn cut(&mut self) -> std::io::Result<()> {
        let keep_from = self.len.saturating_sub(KEEP).max(HEAD);
        let mut kept = vec![0u8; (self.len - keep_from) as usize];
        self.file.read_exact_at(&mut kept, keep_from)?;
        self.dropped += keep_from - HEAD;
        let marker = format!(
            "\n{CUT_MARKER}: {} bytes of output dropped here; the boot's start is above, its latest output below]\n",
            self.dropped
        );
        self.file.write_all_at(marker.as_bytes(), HEAD)?;
        let at = HEAD + marker.len() as u64;
        self.file.write_all_at(&kept, at)?;
        self.len = at + kept.len() as u64;
        self.file.set_len(self.len)
    }
}

/// Reads a log for analysis with bounded memory: all of it when it is
/// small, else its first [`HEAD`] and last [`KEEP`] bytes around a marker
/// line (a log written by another tool can be any size).
pub fn read_bounded(path: &Path) -> std::io::Result<String> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let read = |from: u64, n: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n as usize];
        let got = file.read_at(&mut buf, from)?;
        buf.truncate(got);
        Ok(buf)
    };
    if len <= HEAD + KEEP {
        return Ok(String::from_utf8_lossy(&read(0, len)?).into_owned());
    }
    let mut text = String::from_utf8_lossy(&read(0, HEAD)?).into_owned();
    text.push_str(&format!(
        "\n{CUT_MARKER}: {} bytes not read]\n",
        len - HEAD - KEEP
    ));
    text.push_str(&String::from_utf8_lossy(&read(len - KEEP, KEEP)?));
    Ok(text)
}

/// The last `n` lines of a log, read from its end (a console log can be
/// large), with terminal escapes made visible (see [`clean_line`]).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let window = (n as u64 * 256).max(4096).min(len);
    if file.seek(SeekFrom::Start(len - window)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::with_capacity(window as usize);
    if file.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<String> = text
        .lines()
        .map(clean_line)
        .filter(|l| !l.trim().is_empty())
        .collect();
    // The first line of the window may be cut mid-way.
    let skip_first = window < len;
    let start = lines
        .len()
        .saturating_sub(n)
        .max(usize::from(skip_first && lines.len() > n));
    lines[start.min(lines.len())..].to_vec()
}

/// A console line to quote: trailing `\r` dropped, escape sequences and control characters made
/// visible by the one sanitizer ([`cove_untrusted::terminal_line`]).
pub fn clean_line(line: &str) -> String {
    cove_untrusted::terminal_line(line.trim_end_matches('\r')).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest printing in a loop: the file never passes the cap, the
    /// boot's first lines and the latest line are kept, and a bounded read
    /// sees both.
    #[test]
    fn a_flooding_guest_is_capped_and_the_boot_start_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let mut log = CappedLog::new(open()).unwrap();
        log.write(b"[    0.000000] Linux version 6.1.0\ncove-init: initramfs started\n")
            .unwrap();
        let line = [b'x'; 4095];
        let mut written = 0u64;
        let mut n = 0u64;
        while written < 5 * CAP {
            let text = format!("flood {n} {}\n", std::str::from_utf8(&line[..100]).unwrap());
            log.write(text.as_bytes()).unwrap();
            written += text.len() as u64;
            n += 1;
            assert!(log.len() <= CAP);
        }
        log.write(b"last words\n").unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= CAP, "{size}");
        assert_eq!(size, log.len());
        let text = read_bounded(&path).unwrap();
        assert!(text.len() as u64 <= HEAD + KEEP + 200);
        assert!(
            text.starts_with("[    0.000000] Linux version"),
            "{}",
            &text[..80]
        );
        assert!(text.contains("cove-init: initramfs started"));
        assert!(text.contains(CUT_MARKER));
        assert!(text.ends_with(&format!(
            "flood {} {}\nlast words\n",
            n - 1,
            std::str::from_utf8(&line[..100]).unwrap()
        )));
        // A new log of an existing file continues at its end.
        let again = CappedLog::new(open()).unwrap();
        assert_eq!(again.len(), size);
    }

    #[test]
    fn small_logs_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(read_bounded(&path).unwrap(), "a\nb\n");
    }

    #[test]
    fn tail_returns_the_last_lines_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("line {i}\r\n"));
        }
        text.push_str("\u{1b}[1;31mKernel panic\u{1b}[0m\r\n");
        std::fs::write(&path, text).unwrap();
        let tail = tail_lines(&path, 3);
        assert_eq!(
            tail,
            vec!["line 998", "line 999", "\\x1b[1;31mKernel panic\\x1b[0m"]
        );
        assert!(tail_lines(&dir.path().join("missing"), 3).is_empty());
    }
}
