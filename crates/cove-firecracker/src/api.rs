//! The request bodies of Firecracker's API (its swagger `firecracker.yaml`),
//! as typed serde values, and the pre-boot configuration of a [`VmSpec`] as
//! the sequence of requests that sets it up.
//!
//! The same types make the JSON config file (`--config-file`), whose keys are
//! the API's paths; cove writes it beside the VM for humans and for
//! reproducing a launch by hand.

use std::path::PathBuf;

use cove_backend::{BackendError, VmSpec};
use serde::{Deserialize, Serialize};

/// The guest-side vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// The guest's vsock context id; 3 is the first a guest may have.
pub const GUEST_CID: u32 = 3;
/// Firecracker's vCPU limit (`MachineConfiguration.vcpu_count` maximum).
pub const MAX_VCPUS: u32 = 32;

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `PUT /drives/{drive_id}` (a virtio-block drive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
    pub path_on_host: PathBuf,
    /// `Writeback` honours the guest's flushes (the default, `Unsafe`,
    /// drops them: data the guest synced could be lost in a host crash).
    pub cache_type: CacheType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// `PUT /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    pub smt: bool,
    pub track_dirty_pages: bool,
}

/// `PUT /vsock`: the hybrid vsock device, whose host end is a unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// `PUT /network-interfaces/{iface_id}`: a TAP device on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// The `iface_id` of the VM's `i`th TAP (the same at a restore, so an override names it).
pub fn iface_id(i: usize) -> String {
    format!("tap{i}")
}

/// One of `SnapshotLoadParams.network_overrides`: the restored interface `iface_id` opens
/// `host_dev_name` instead of the TAP it had when the snapshot was taken (a clone's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

/// `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub state: VmRunState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRunState {
    Paused,
    Resumed,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
    pub snapshot_type: SnapshotType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// `PUT /snapshot/load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    pub resume_vm: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    File,
    Uffd,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub fault_message: String,
}

/// The whole pre-boot configuration (the `--config-file` format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    pub drives: Vec<Drive>,
    #[serde(rename = "machine-config")]
    pub machine_config: MachineConfiguration,
    pub vsock: Vsock,
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
}

/// One API request: method, path, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Option<serde_json::Value>,
}

impl ApiRequest {
    pub fn new(method: &'static str, path: impl Into<String>, body: &impl Serialize) -> Self {
        Self {
            method,
            path: path.into(),
            body: Some(serde_json::to_value(body).expect("API bodies always serialize")),
        }
    }
}

/// The kernel arguments of a Firecracker guest, before the image's own:
/// the serial console (Firecracker's UART is on the VMM's stdio), a reboot
/// that ends the VMM (Firecracker exits on the guest's reset) and a panic
/// that reboots at once.
const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off";

fn unsupported(what: &str, hint: &str) -> BackendError {
    BackendError::Unsupported {
        backend: "firecracker",
        what: what.into(),
        hint: hint.into(),
    }
}

impl VmConfig {
    /// The configuration of `spec`, or what Firecracker cannot do of it.
    pub fn for_spec(spec: &VmSpec) -> Result<Self, BackendError> {
        let kernel = spec.vmlinux.clone().ok_or_else(|| {
            unsupported(
                "boot a compressed kernel (bzImage)",
                "Firecracker boots an uncompressed vmlinux on x86; rebuild the image so it \
                 keeps one (cove's images do by default)",
            )
        })?;
        if !(1..=MAX_VCPUS).contains(&spec.cpus) || (spec.cpus > 1 && spec.cpus % 2 == 1) {
            return Err(unsupported(
                &format!("run {} vCPUs", spec.cpus),
                "Firecracker takes 1 or an even number up to 32 (`cove set --cpus`)",
            ));
        }
        if !spec.ports.is_empty() {
            return Err(unsupported(
                "forward host ports",
                "Firecracker has no user-mode networking (only TAP devices); use the qemu backend",
            ));
        }
        if !spec.data_disks.is_empty() {
            return Err(unsupported(
                "attach data disks",
                "cove's data disks are qcow2 files, which Firecracker cannot open; use the \
                 qemu backend",
            ));
        }
        let mut boot_args = BASE_CMDLINE.to_owned();
        let extra = spec.cmdline_extra.trim();
        if !extra.is_empty() {
            boot_args.push(' ');
            boot_args.push_str(extra);
        }
        Ok(Self {
            boot_source: BootSource {
                kernel_image_path: kernel,
                initrd_path: spec.initrd.clone(),
                boot_args: Some(boot_args),
            },
            drives: vec![Drive {
                drive_id: "rootfs".into(),
                // The root is found by label by cove's initramfs, like under QEMU.
                is_root_device: false,
                is_read_only: false,
                path_on_host: spec.root_disk.clone(),
                cache_type: CacheType::Writeback,
            }],
            machine_config: MachineConfiguration {
                vcpu_count: spec.cpus,
                mem_size_mib: spec.memory_mib,
                smt: false,
                track_dirty_pages: false,
            },
            vsock: Vsock {
                guest_cid: GUEST_CID,
                uds_path: spec.transports.agent.clone(),
            },
            // cove's TAPs (made and put on their bridges by cove-net), in NIC order; the guest
            // finds each by its MAC (`cove.net=` in `cmdline_extra`), as under QEMU.
            network_interfaces: spec
                .taps
                .iter()
                .enumerate()
                .map(|(i, tap)| NetworkInterface {
                    iface_id: iface_id(i),
                    host_dev_name: tap.ifname.clone(),
                    guest_mac: Some(tap.mac.clone()),
                })
                .collect(),
        })
    }

    /// The API requests that set this configuration up, in an order
    /// Firecracker accepts (all are pre-boot; `InstanceStart` comes later).
    pub fn requests(&self) -> Vec<ApiRequest> {
        let mut out = vec![
            ApiRequest::new("PUT", "/machine-config", &self.machine_config),
            ApiRequest::new("PUT", "/boot-source", &self.boot_source),
        ];
        for drive in &self.drives {
            out.push(ApiRequest::new(
                "PUT",
                format!("/drives/{}", drive.drive_id),
                drive,
            ));
        }
        for iface in &self.network_interfaces {
            out.push(ApiRequest::new(
                "PUT",
                format!("/network-interfaces/{}", iface.iface_id),
                iface,
            ));
        }
        out.push(ApiRequest::new("PUT", "/vsock", &self.vsock));
        out
    }
}
