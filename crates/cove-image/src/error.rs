//! The errors of image building and the image cache. Each message says what
//! went wrong and what the user can do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "`apt-get download {package}` failed in {dir}:\n{output}\n\
         the package lists may be stale or missing: run `apt-get update` (as root) and try again"
    )]
    AptDownload {
        package: String,
        dir: PathBuf,
        output: String,
    },
    #[error(
        "apt does not know the package `{package}`:\n{output}\n\
         run `apt-get update` (as root), or check the package name"
    )]
    AptUnknown { package: String, output: String },
    /// The tool's error is part of this message (not a `#[source]`) so the step and the
    /// tool's output read as one sentence, without the CLI printing the tool's part twice.
    #[error("build step `{step}`: {tool}")]
    Step {
        step: String,
        tool: cove_util::ToolError,
    },
    #[error(
        "debootstrap needs root; install mmdebstrap (which works without root) or build as root"
    )]
    DebootstrapNeedsRoot,
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the agent binary {0} is dynamically linked (it has an ELF interpreter) and would not run \
         in the guest; build it static (`--target x86_64-unknown-linux-musl`, or \
         `RUSTFLAGS='-C target-feature=+crt-static'`)"
    )]
    AgentNotStatic(PathBuf),
    #[error(
        "the agent binary {path} is not an x86-64 ELF executable: {reason}; pass the built `cove-agent` binary"
    )]
    AgentNotElf { path: PathBuf, reason: String },
    #[error(
        "unknown kernel fragment `{0}`; built-in fragments are tun, postgres and netfilter, or name a file (a path with `/` or `.`)"
    )]
    UnknownFragment(String),
    #[error("a kernel build takes `source` (a Debian package) or `tree` (a directory), not both")]
    KernelSourceConflict,
    /// Its message already says what failed and what to do.
    #[error(transparent)]
    KernelBuild(#[from] cove_diagnose::kernel::BuildError),
    #[error(
        "the package {0} holds no usr/src/linux-source-*.tar.xz with a kernel tree; name a `linux-source-*` package"
    )]
    NoKernelSource(PathBuf),
    #[error(
        "the kernel package {deb} contains no /boot/vmlinuz-*; name a `linux-image-*` package or a bzImage"
    )]
    NoKernelInPackage { deb: PathBuf },
    #[error(
        "kernel module `{module}` is neither in {dir} nor built in (modules.builtin); \
         use a kernel that has it, or drop it from the module list"
    )]
    ModuleMissing { module: String, dir: PathBuf },
    #[error(
        "kernel module {path} is unreadable: {reason}; the kernel package may be corrupt, delete it from the download cache"
    )]
    BadModule { path: PathBuf, reason: String },
    #[error(
        "kernel modules depend on each other in a cycle: {0}; the kernel package is inconsistent"
    )]
    ModuleCycle(String),
    #[error("no image named or with id `{0}`; `cove image list` shows the images that exist")]
    NotFound(String),
    #[error("image `{name}` ({id}) is used by {}; delete those VMs first", used_by.join(", "))]
    InUse {
        name: String,
        id: String,
        used_by: Vec<String>,
    },
    #[error(
        "the stored manifest of image {id} is corrupt ({reason}); `cove image rm {id}` and rebuild it"
    )]
    CorruptManifest { id: String, reason: String },
    #[error(
        "image `{name}` ({id}) is missing its file {path}; rebuild it (`cove image build`) \
         or remove it (`cove image rm {id}`)"
    )]
    FilesMissing {
        name: String,
        id: String,
        path: PathBuf,
    },
    #[error("invalid image spec {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error(
        "the root filesystem needs about {needed_mib} MiB but the size is {size_mib} MiB; \
         raise `size` or drop the option to let cove size it"
    )]
    TooSmall { needed_mib: u64, size_mib: u64 },
    #[error(transparent)]
    Store(#[from] cove_state::StoreError),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Shorthand for wrapping an `io::Error` with the path it concerns.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}
