//! Guest text shown on a terminal.
//!
//! A guest controls kernel messages, process names and arguments, file names, symlink targets
//! and agent error messages. Printed raw, an escape sequence in any of them can rewrite the
//! screen, retitle the window, hide text or (on some terminals) inject input. Everything that
//! a terminal would interpret is turned into visible text instead: C0 controls and DEL as
//! `\xNN` (so `ESC [ 2 J` prints as `\x1b[2J`), C1 controls and the bidirectional overrides
//! that reorder what is shown as `\u{…}`, and invalid UTF-8 as `\xNN`. `cove logs` and
//! `cove console` stay raw by design: they are the guest's own terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters a terminal interprets or that reorder what is displayed.
fn dangerous(c: char, keep_layout: bool) -> bool {
    match c {
        '\n' | '\t' => !keep_layout,
        // Bidirectional embeddings, overrides and isolates ("Trojan Source").
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => true,
        c => c.is_control(),
    }
}

fn escape_into(out: &mut String, c: char) {
    if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

fn clean(s: &str, keep_layout: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| dangerous(c, keep_layout)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if dangerous(c, keep_layout) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Multi-line guest text (an error message, a `why` fix): newlines and tabs kept, every other
/// control character and escape sequence made visible.
///
/// ```
/// assert_eq!(cove_untrusted::terminal("a\x1b]0;pwned\x07\nb"), "a\\x1b]0;pwned\\x07\nb");
/// ```
pub fn terminal(s: &str) -> Cow<'_, str> {
    clean(s, true)
}

/// One field on one line (a `ps` column, a file name, a log line quoted as evidence): newlines
/// and tabs are made visible too, so a guest cannot forge extra rows.
///
/// ```
/// assert_eq!(cove_untrusted::terminal_line("x\nroot  1"), "x\\x0aroot  1");
/// ```
pub fn terminal_line(s: &str) -> Cow<'_, str> {
    clean(s, false)
}

/// [`terminal_line`] for raw bytes (ext4 names, symlink targets): invalid UTF-8 is shown as
/// `\xNN` instead of being replaced, so two different names never print the same.
pub fn terminal_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&terminal_line(chunk.valid()));
        for x in chunk.invalid() {
            let _ = write!(out, "\\x{x:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_become_visible() {
        assert_eq!(terminal_line("\x1b[2Jclear"), "\\x1b[2Jclear");
        assert_eq!(terminal_line("bell\x07"), "bell\\x07");
        assert_eq!(terminal_line("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(terminal_line("rtl\u{202e}gpj.exe"), "rtl\\u{202e}gpj.exe");
        assert_eq!(terminal_line("del\x7f"), "del\\x7f");
        assert_eq!(terminal_line("cr\rover"), "cr\\x0dover");
        assert_eq!(terminal("two\nlines\ttab"), "two\nlines\ttab");
        assert_eq!(terminal_line("two\nlines"), "two\\x0alines");
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(terminal_line("plain ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_utf8_is_shown_byte_by_byte() {
        assert_eq!(terminal_bytes(b"a\xffb\x1b"), "a\\xffb\\x1b");
        assert_ne!(terminal_bytes(b"\xff"), terminal_bytes(b"\xfe"));
    }
}
