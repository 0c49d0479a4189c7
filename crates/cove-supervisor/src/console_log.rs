//! Reading the persisted console log.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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
