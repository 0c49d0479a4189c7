//! The checks file `cove up` writes and `cove test` reads (`VmPaths::checks_file`, JSON), and
//! reading `[[check]]` tables from TOML.

use crate::spec::Check;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing the file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The checks file is not a JSON list of checks.
    #[error(
        "{} is not a valid checks file ({source}); run `cove up` with the spec again to rewrite it",
        path.display()
    )]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The TOML has a `[[check]]` table cove does not understand.
    #[error("invalid [[check]] table: {0}")]
    Toml(String),
}

/// Writes `checks` to `path` as JSON, replacing it atomically (a reader never sees half a file).
pub fn save(path: &Path, checks: &[Check]) -> Result<(), FileError> {
    let io = |what, source| FileError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(checks).map_err(|e| FileError::Json {
        path: path.to_owned(),
        source: e,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| io("cannot create a file next to", e))?;
    tmp.write_all(&json)
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("cannot write", e))?;
    tmp.persist(path)
        .map(|_| ())
        .map_err(|e| io("cannot replace", e.error))
}

/// Reads the checks stored at `path`; `None` when the file does not exist (no checks declared).
pub fn load(path: &Path) -> Result<Option<Vec<Check>>, FileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FileError::Io {
                what: "cannot read",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| FileError::Json {
            path: path.to_owned(),
            source,
        })
}

/// Reads the `[[check]]` tables of a TOML document (other keys are ignored, so a whole VM spec
/// can be passed).
pub fn from_toml(text: &str) -> Result<Vec<Check>, FileError> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        check: Vec<Check>,
    }
    toml::from_str::<Doc>(text)
        .map(|d| d.check)
        .map_err(|e| FileError::Toml(e.to_string()))
}
