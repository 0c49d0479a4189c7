//! Small JSON facts about the host, valid until it reboots.
//!
//! Keyed by `/proc/sys/kernel/random/boot_id`: a new boot (new kernel, KVM
//! module reloaded, different CPU frequency) invalidates them by itself.

use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    boot_id: String,
    value: T,
}

pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The cached value if it was written during this boot of the host.
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let boot = boot_id()?;
    let text = std::fs::read(path).ok()?;
    let entry: Entry<T> = serde_json::from_slice(&text).ok()?;
    (entry.boot_id == boot).then_some(entry.value)
}

/// Best effort: a cache that cannot be written only costs the next start
/// another measurement, so failures are logged, not returned.
pub(crate) fn store<T: Serialize>(path: &Path, value: T) {
    let Some(boot_id) = boot_id() else { return };
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(&Entry { boot_id, value })?;
        // Write then rename so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write host cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_from_another_boot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fact.json");
        store(&path, 42u64);
        assert_eq!(load::<u64>(&path), Some(42));
        let stale = serde_json::json!({"boot_id": "another-boot", "value": 7});
        std::fs::write(&path, stale.to_string()).unwrap();
        assert_eq!(load::<u64>(&path), None);
    }
}
