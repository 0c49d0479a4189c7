//! Running an external program (`qemu-img`, `mkfs.ext4`, `mmdebstrap`, …) so that a failure
//! names the program, its arguments, its exit status and the end of what it printed.

use std::process::{Command, ExitStatus, Output, Stdio};

/// How much of a failed tool's output an error keeps: the end is where the cause usually is.
pub const TAIL_BYTES: usize = 4096;

/// A tool that could not be started or that failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run `{command}`: {source}; {install}")]
    NotRun {
        program: String,
        command: String,
        /// How to get the program (e.g. "apt-get install qemu-utils").
        install: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", render_tail(.output_tail))]
    Failed {
        program: String,
        command: String,
        status: ExitStatus,
        /// The last [`TAIL_BYTES`] of its stderr (of stdout when stderr was empty).
        output_tail: String,
    },
}

fn render_tail(tail: &str) -> String {
    let t = tail.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(":\n{t}")
    }
}

impl ToolError {
    /// The program that failed, as it was invoked.
    pub fn program(&self) -> &str {
        match self {
            Self::NotRun { program, .. } | Self::Failed { program, .. } => program,
        }
    }

    /// The error for `cmd` having produced `out` with a failing status.
    pub fn failed(cmd: &Command, out: &Output) -> Self {
        let stream = if out.stderr.iter().all(u8::is_ascii_whitespace) {
            &out.stdout
        } else {
            &out.stderr
        };
        Self::Failed {
            program: cmd.get_program().to_string_lossy().into_owned(),
            command: describe(cmd),
            status: out.status,
            output_tail: tail(&String::from_utf8_lossy(stream), TAIL_BYTES),
        }
    }
}

/// `cmd` as one line: the program and its arguments, each quoted where a shell would need it.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with stdin from `/dev/null`, capturing its output; no judgement of its status.
/// `install` says how to get the program when it cannot be started.
pub fn output(cmd: &mut Command, install: &'static str) -> Result<Output, ToolError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::NotRun {
            program: cmd.get_program().to_string_lossy().into_owned(),
            command: describe(cmd),
            install,
            source,
        })
}

/// Runs `cmd` and returns its output when it exits with status 0.
pub fn run(cmd: &mut Command, install: &'static str) -> Result<Output, ToolError> {
    let out = output(cmd, install)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ToolError::failed(cmd, &out))
    }
}

/// The last `max` bytes of `s` (on a character boundary), marked as cut when shortened.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut …]\n{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_program_arguments_status_and_stderr_tail() {
        let err = run(
            Command::new("sh").args(["-c", "echo out; echo 'the cause' >&2; exit 3"]),
            "install a shell",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.program(), "sh");
        assert!(
            text.starts_with(
                "`sh -c 'echo out; echo '\\''the cause'\\'' >&2; exit 3'` failed (exit status: 3)"
            ),
            "{text}"
        );
        assert!(text.ends_with(":\nthe cause"), "{text}");
    }

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let err = run(
            &mut Command::new("/nonexistent/cove-tool"),
            "apt-get install cove-tool",
        )
        .unwrap_err();
        assert!(matches!(err, ToolError::NotRun { .. }));
        assert!(
            err.to_string().ends_with("apt-get install cove-tool"),
            "{err}"
        );
    }

    #[test]
    fn success_returns_stdout_and_a_long_output_keeps_its_end() {
        assert_eq!(
            run(Command::new("echo").arg("hi"), "").unwrap().stdout,
            b"hi\n"
        );
        let t = tail(&format!("{}END", "x".repeat(10_000)), 100);
        assert!(t.ends_with("END") && t.len() < 200, "{t}");
    }
}
