//! What can go wrong at the VMM boundary; each message names the cause and
//! the next step.

use std::path::PathBuf;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The VMM binary is not installed.
    #[error("{binary} was not found on $PATH; install it (on Debian: `apt-get install {package}`)")]
    BinaryNotFound {
        binary: &'static str,
        package: &'static str,
    },
    #[error("unknown backend {0:?}; use `qemu` or `firecracker`")]
    UnknownBackend(String),
    #[error("unknown machine type {0:?}; use `microvm` or `q35` (amd64), `virt` (arm64)")]
    UnknownMachine(String),
    #[error("unknown accelerator {0:?}; use `kvm` or `tcg`")]
    UnknownAccel(String),
    /// The backend cannot run any VM on this host (e.g. Firecracker without
    /// a working KVM). Said before anything is created or launched.
    #[error("the {backend} backend cannot boot VMs on this host: {reason}; {hint}")]
    CannotBoot {
        backend: &'static str,
        reason: String,
        hint: String,
    },
    /// The spec or the call asks for something this backend cannot do.
    #[error("the {backend} backend cannot {what}; {hint}")]
    Unsupported {
        backend: &'static str,
        what: String,
        hint: String,
    },
    /// A value of the spec cannot be passed on safely (e.g. a path containing
    /// a character the VMM's option syntax cannot carry).
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// A disk tool (e.g. the backend's image tool) could not run or failed;
    /// the source names the command, its status and its output.
    #[error("a disk tool failed ({fix})")]
    Tool {
        #[source]
        source: Source,
        fix: &'static str,
    },
    /// The VMM's control channel refused or broke during `what`.
    #[error("the VMM could not {what}")]
    Control {
        what: &'static str,
        #[source]
        source: Source,
    },
    /// One of the VMM's sockets never accepted (the VMM failed to start or
    /// exited).
    #[error("the VMM's {channel} socket {path}")]
    Connect {
        channel: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot launch {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl BackendError {
    /// A control-channel failure with its typed cause kept.
    pub fn control(what: &'static str, source: impl Into<Source>) -> Self {
        BackendError::Control {
            what,
            source: source.into(),
        }
    }
}
