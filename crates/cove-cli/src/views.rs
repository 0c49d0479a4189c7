//! The JSON shapes cove prints with `--json` and serves from `cove serve`:
//! one definition each, so the CLI and the API cannot drift. The OpenAPI
//! description (`docs/openapi.json`) is generated from these types.

use cove_state::{PortForward, VmRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One VM: what `cove show --json` and `cove list --json` print per VM,
/// and what `GET /v1/vms/{name}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    pub name: String,
    /// `created`, `starting`, `running`, `stopping`, `stopped` or `crashed`.
    pub state: String,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
    pub supervisor_pid: Option<u32>,
    pub cpus: u32,
    /// Guest memory in bytes.
    pub memory: u64,
    pub memory_mib: u64,
    /// The image tag the VM was created from.
    pub image: String,
    pub image_id: String,
    /// The guest architecture: `amd64` or `arm64`.
    pub arch: String,
    /// `kvm` or `tcg`, as chosen at the last start.
    pub accel: Option<String>,
    pub machine: String,
    pub ports: Vec<PortView>,
    pub data_disks: Vec<String>,
    /// How the VMM last ended, e.g. `exited with status 0`.
    pub last_exit: Option<String>,
    /// A one-line explanation of the last failure.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
}

/// A host port forwarded to a guest port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortView {
    pub host_addr: String,
    pub host_port: u16,
    pub guest_port: u16,
}

impl From<&PortForward> for PortView {
    fn from(p: &PortForward) -> Self {
        Self {
            host_addr: p.host_addr.clone(),
            host_port: p.host_port,
            guest_port: p.guest_port,
        }
    }
}

impl From<&VmRecord> for VmView {
    fn from(r: &VmRecord) -> Self {
        Self {
            name: r.name.to_string(),
            state: r.state.to_string(),
            pid: r.vmm_pid,
            supervisor_pid: r.supervisor_pid,
            cpus: r.cpus,
            memory: r.memory_mib * 1024 * 1024,
            memory_mib: r.memory_mib,
            image: r.image_name.clone(),
            image_id: r.image_id.clone(),
            arch: r.arch.to_string(),
            accel: r.accel.map(|a| a.to_string()),
            machine: r.machine.to_string(),
            ports: r.ports.iter().map(PortView::from).collect(),
            data_disks: r.data_disks.clone(),
            last_exit: r.last_exit.clone(),
            last_error: r.last_error.clone(),
            created_at: r.created_at,
            started_at: r.started_at,
        }
    }
}

/// An error as the API answers it (with an HTTP status that says its kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// What happened, with every cause.
    pub error: String,
}

/// What to run for `POST /v1/vms/{name}/exec` (the options of `cove exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// `KEY=VALUE` environment variables, as `cove exec -e`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory in the guest.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Guest user (name or uid, optionally `:group`).
    #[serde(default)]
    pub user: Option<String>,
    /// End the command after this many seconds (1..=86400); none by default.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// How an exec ended: the JSON of the exec stream's last (system) frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecEnd {
    /// The shell's convention, as `cove exec` exits: the code, or 128 + signal.
    pub exit_code: Option<i32>,
    /// The command's exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Why there is no status (the agent failed, the deadline passed), with every cause.
    pub error: Option<String>,
}

/// One step of an image build: the lines `POST /v1/images/build` streams
/// (newline-delimited JSON) and `cove image build --json` writes to stderr.
/// A build ends with exactly one `built` or `failed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent {
    /// A named stage (e.g. `download kernel`) began.
    StageStarted { stage: String },
    /// The stage finished after `seconds`.
    StageFinished { stage: String, seconds: f64 },
    /// Bytes processed within a stage (`total` when known). Sent at most
    /// as fast as the reader takes them: some may be left out.
    Bytes {
        stage: String,
        done: u64,
        total: Option<u64>,
    },
    /// A line of detail (a command run, a cache hit).
    Message { line: String },
    /// The image: the manifest `cove image build --json` prints on stdout.
    Built {
        #[schema(value_type = Object)]
        image: Box<cove_image::ImageManifest>,
        /// Found in the cache rather than built.
        cached: bool,
        seconds: f64,
    },
    /// The build failed; `kind` says what to fix.
    Failed { kind: BuildFailure, error: String },
}

/// What kind of thing stopped an image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildFailure {
    /// The request or the image spec is wrong.
    Spec,
    /// A package could not be downloaded.
    Download,
    /// A build tool failed or is missing.
    Tool,
    /// The kernel, its modules or the initramfs.
    Kernel,
    /// The agent binary is not usable in a guest.
    Agent,
    /// The built kernel cannot boot this image or serve its agent.
    KernelCheck,
    /// Anything else (files, the state store).
    Other,
}

impl BuildFailure {
    /// The kind of the first image error in `e`'s chain.
    pub fn of(e: &anyhow::Error) -> Self {
        use cove_image::ImageError as E;
        if e.downcast_ref::<crate::commands::image::KernelCheckFailed>()
            .is_some()
        {
            return BuildFailure::KernelCheck;
        }
        let Some(image) = e.chain().find_map(|c| c.downcast_ref::<E>()) else {
            return BuildFailure::Other;
        };
        match image {
            E::Spec { .. }
            | E::UnknownFragment(_)
            | E::KernelSourceConflict
            | E::TooSmall { .. } => BuildFailure::Spec,
            E::AptDownload { .. } | E::AptUnknown { .. } => BuildFailure::Download,
            E::Step { .. } | E::DebootstrapNeedsRoot => BuildFailure::Tool,
            E::KernelBuild(_)
            | E::NoKernelSource(_)
            | E::NoKernelInPackage { .. }
            | E::ModuleMissing { .. }
            | E::BadModule { .. }
            | E::ModuleCycle(_) => BuildFailure::Kernel,
            E::AgentNotStatic(_) | E::AgentNotElf { .. } => BuildFailure::Agent,
            _ => BuildFailure::Other,
        }
    }
}

/// What to build for `POST /v1/images/build` (the options of `cove image build`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildOptions {
    /// `minimal`, or the path of an image spec (TOML) on the server's host.
    pub what: String,
    /// Tag for the image (default: `minimal`, or the spec's `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// Kernel: an apt package name, a `.deb`, or a bzImage path.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Root filesystem size, e.g. `512M` (default: content plus headroom).
    #[serde(default)]
    pub size: Option<String>,
    /// Extra kernel modules; `-NAME` leaves out a default.
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub skip_kernel_check: bool,
    /// Build without the agent.
    #[serde(default)]
    pub no_agent: bool,
}
