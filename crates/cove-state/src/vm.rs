//! The typed VM record and its lifecycle state.

pub use cove_backend::PortForward;
use cove_backend::{Accel, BackendKind, Machine};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Lifecycle of a VM as recorded in the store.
///
/// `Starting`, `Running` and `Stopping` are claims that a supervisor is alive;
/// every read checks the claim against reality (see `cove-vm`'s
/// reconcile) and turns a dead claim into `Stopped` or `Crashed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Crashed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Crashed => "crashed",
        }
    }

    /// True when a supervisor process is supposed to exist.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping
        )
    }

    pub fn can_start(self) -> bool {
        !self.is_active()
    }

    /// Resources may only change while nothing runs the VM.
    pub fn can_reconfigure(self) -> bool {
        !self.is_active()
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown VM state {0:?}")]
pub struct UnknownState(String);

impl FromStr for VmState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "created" => VmState::Created,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "stopped" => VmState::Stopped,
            "crashed" => VmState::Crashed,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

/// Why a VM name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("VM name is empty; pick a name such as `web` or `pg-1`")]
    Empty,
    #[error("VM name {0:?} is longer than {max} characters", max = VmName::MAX_LEN)]
    TooLong(String),
    #[error(
        "VM name {0:?} may only contain ASCII letters, digits, `-` and `_`, and must start with a letter or digit"
    )]
    BadCharacters(String),
}

/// A validated VM name: safe as a directory name and a socket path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VmName(String);

impl VmName {
    /// Short enough that `$XDG_RUNTIME_DIR/cove/<name>/control.sock` fits a unix socket.
    pub const MAX_LEN: usize = 40;

    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(NameError::TooLong(name.to_owned()));
        }
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !first_ok || !rest_ok {
            return Err(NameError::BadCharacters(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VmName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<VmName> for String {
    fn from(n: VmName) -> String {
        n.0
    }
}

impl FromStr for VmName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host directory shared into the guest (`--mount HOST:GUEST[:ro|rw]`), through virtiofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMount {
    /// Absolute, canonical host directory.
    pub host: std::path::PathBuf,
    /// Absolute guest path, of [`GUEST_PATH_CHARS`] only (it travels on the kernel command line).
    pub guest: String,
    /// Read-write; read-only (the default) is enforced on the host, not by the guest's mount.
    #[serde(default)]
    pub writable: bool,
}

/// What a shared folder's guest path may contain: it is written into the kernel command line
/// and read by the guest's init, so no space, quote, `=` or shell character can get through.
pub const GUEST_PATH_CHARS: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+@";

impl HostMount {
    /// Parses `HOST_DIR:GUEST_PATH[:ro|rw]`; relative host paths are taken from `base`.
    pub fn parse(text: &str, base: &std::path::Path) -> Result<Self, String> {
        let mut parts: Vec<&str> = text.split(':').collect();
        let writable = match parts.last().copied() {
            Some("ro") if parts.len() == 3 => {
                parts.pop();
                false
            }
            Some("rw") if parts.len() == 3 => {
                parts.pop();
                true
            }
            _ => false,
        };
        let [host, guest] = parts[..] else {
            return Err(format!(
                "`{text}` is not HOST_DIR:GUEST_PATH[:ro|rw] (e.g. `./build:/opt/build:ro`)"
            ));
        };
        Self::validate_guest(guest)?;
        let host = base.join(host);
        let host = host.canonicalize().map_err(|e| {
            format!(
                "shared folder {}: {e}; give an existing host directory",
                host.display()
            )
        })?;
        if !host.is_dir() {
            return Err(format!(
                "shared folder {} is not a directory",
                host.display()
            ));
        }
        Ok(HostMount {
            host,
            guest: guest.to_string(),
            writable,
        })
    }

    /// A guest path cove can put on the kernel command line and mount: absolute, no `..`.
    pub fn validate_guest(guest: &str) -> Result<(), String> {
        let bad = guest.chars().find(|c| !GUEST_PATH_CHARS.contains(*c));
        if !guest.starts_with('/') || guest == "/" || guest.len() > 200 {
            return Err(format!(
                "guest path `{guest}` must be an absolute directory other than / (at most 200 bytes)"
            ));
        }
        if let Some(c) = bad {
            return Err(format!(
                "guest path `{}` contains {c:?}; use letters, digits and / . _ - + @ only",
                guest.escape_debug()
            ));
        }
        if guest.split('/').any(|c| c == "..") {
            return Err(format!("guest path `{guest}` must not contain `..`"));
        }
        Ok(())
    }
}

/// Everything the store knows about one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: VmName,
    /// The image's content id (not its tag, so a rebuilt tag never changes a VM under it).
    pub image_id: String,
    /// The tag the user asked for, for display.
    pub image_name: String,
    /// The guest architecture, the image's; VMs recorded before arm64 support are `amd64`.
    #[serde(default)]
    pub arch: cove_guest::Arch,
    pub cpus: u32,
    pub memory_mib: u64,
    pub state: VmState,
    /// The supervisor's pid while one runs.
    pub supervisor_pid: Option<u32>,
    /// The VMM's pid while one runs.
    pub vmm_pid: Option<u32>,
    /// The VMM that runs this VM (records from before backends were
    /// recorded are QEMU's).
    #[serde(default)]
    pub backend: BackendKind,
    /// The accelerator chosen at the last start.
    pub accel: Option<Accel>,
    pub machine: Machine,
    pub ports: Vec<PortForward>,
    /// Names of persistent data disks attached in order after the root disk.
    pub data_disks: Vec<String>,
    /// Where the guest's init mounts each data disk (disk name → absolute path).
    #[serde(default)]
    pub disk_mounts: std::collections::BTreeMap<String, String>,
    /// Host folders shared into the guest, in order (tags `cove0`, `cove1`, …).
    #[serde(default)]
    pub host_mounts: Vec<HostMount>,
    /// The cove networks the VM sits on, in NIC order (`--network`); its addresses on them are
    /// attachments in the store (`net::Attachment`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Whether the guest may reach the host's loopback (its 127.0.0.1 as 10.0.2.2). Off unless
    /// asked for (`--host-loopback`): a guest is not trusted with the host's local services.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_loopback: bool,
    /// How the VMM last ended, e.g. `exit status 0` or `killed by signal 9`.
    pub last_exit: Option<String>,
    /// Whether the guest's agent completed its handshake during the last boot.
    #[serde(default)]
    pub agent_answered: bool,
    /// A one-line explanation of the last failure, if any.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    /// `NAME@TAG`: the snapshot this VM was cloned from (its root disk is backed by that
    /// snapshot's), so deleting the source can name the clones that depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloned_from: Option<String>,
    /// The tag this VM's current run was restored from; `None` after a cold boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mounts_parse_and_refuse_what_could_reach_the_kernel_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let m = HostMount::parse(".:/opt/build", dir.path()).unwrap();
        assert!(!m.writable && m.guest == "/opt/build" && m.host.is_absolute());
        assert!(
            HostMount::parse(".:/opt/b:rw", dir.path())
                .unwrap()
                .writable
        );
        assert!(
            !HostMount::parse(".:/opt/b:ro", dir.path())
                .unwrap()
                .writable
        );
        for bad in [
            ".:/opt/a b",
            ".:/opt/a\"init=/bin/sh",
            ".:relative",
            ".:/",
            ".:/a/../etc",
            ".:/a$(x)",
            ".:/a;b",
            "./missing:/a",
            ".:/a:rx",
            ".",
        ] {
            assert!(HostMount::parse(bad, dir.path()).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_that_could_escape_or_break_paths_are_refused() {
        assert_eq!(VmName::new(""), Err(NameError::Empty));
        assert!(matches!(
            VmName::new("../x"),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            VmName::new("-rf"),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            VmName::new("a b"),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            VmName::new(&"a".repeat(41)),
            Err(NameError::TooLong(_))
        ));
        assert_eq!(VmName::new("pg-1_a").unwrap().as_str(), "pg-1_a");
    }

    #[test]
    fn state_round_trips_through_text() {
        for s in [
            VmState::Created,
            VmState::Starting,
            VmState::Running,
            VmState::Stopping,
            VmState::Stopped,
            VmState::Crashed,
        ] {
            assert_eq!(s.as_str().parse::<VmState>().unwrap(), s);
        }
    }
}
