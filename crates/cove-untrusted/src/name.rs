//! Entry names inside a tree a guest sends (the tar stream of `cove cp VM:/dir .`).

use std::path::{Component, Path, PathBuf};

/// An entry name that would land outside the destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeName {
    /// `/etc/passwd`: a guest may only name paths relative to the destination.
    #[error("the guest sent an absolute path {0:?}; refusing to write outside the destination")]
    Absolute(String),
    /// `../x` or `a/../../x`.
    #[error("the guest sent a path with `..` ({0:?}); refusing to write outside the destination")]
    Parent(String),
    /// The entry would be written through a symlink (one the guest sent earlier, or one that
    /// was already in the destination).
    #[error(
        "the guest's entry {entry:?} would be written through the symlink {link:?}; refusing to follow it out of the destination"
    )]
    ThroughSymlink { entry: String, link: PathBuf },
}

/// Where `entry` lands under `dest`, refusing absolute names, `..` and any existing symlink on
/// the way (a tree's own symlinks are recreated as links, never written through).
pub fn inside(dest: &Path, entry: &Path) -> Result<PathBuf, UnsafeName> {
    let shown = || entry.to_string_lossy().into_owned();
    let mut out = dest.to_path_buf();
    let parts: Vec<_> = entry.components().collect();
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err(UnsafeName::Absolute(shown())),
            Component::ParentDir => return Err(UnsafeName::Parent(shown())),
            Component::CurDir => {}
            Component::Normal(p) => {
                out.push(p);
                // Every component but the entry itself must not be a symlink.
                let last = parts[i + 1..]
                    .iter()
                    .all(|c| matches!(c, Component::CurDir));
                if !last
                    && std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(UnsafeName::ThroughSymlink {
                        entry: shown(),
                        link: out,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_names_are_refused() {
        let d = tempfile_dir();
        assert!(matches!(
            inside(&d, Path::new("/etc/passwd")),
            Err(UnsafeName::Absolute(_))
        ));
        assert!(matches!(
            inside(&d, Path::new("a/../../x")),
            Err(UnsafeName::Parent(_))
        ));
        std::os::unix::fs::symlink("/etc", d.join("link")).unwrap();
        assert!(matches!(
            inside(&d, Path::new("link/passwd")),
            Err(UnsafeName::ThroughSymlink { .. })
        ));
        // The link itself may be replaced (the unpacker unlinks, never follows).
        assert_eq!(inside(&d, Path::new("link")).unwrap(), d.join("link"));
        assert_eq!(inside(&d, Path::new("./a/b")).unwrap(), d.join("a/b"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("cove-untrusted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }
}
