//! Printing for people (tables, sentences) and for programs (`--json`).

use serde::Serialize;

/// Prints an error with its whole cause chain, one cause a line, so the
/// cause and the next step are never hidden behind a generic message.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A left-aligned text table; the last column is not padded.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    // Cells often hold guest text (process names, file names, link targets): one sanitizer
    // for all of them, before widths are measured.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| cove_untrusted::terminal_line(c).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `1536` MiB as `1.5G`, `256` as `256M`.
pub fn mib(m: u64) -> String {
    if m >= 1024 && m.is_multiple_of(1024) {
        format!("{}G", m / 1024)
    } else if m >= 1024 {
        format!("{:.1}G", m as f64 / 1024.0)
    } else {
        format!("{m}M")
    }
}
