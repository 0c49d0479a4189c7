//! QEMU itself accepts every option and device of the argv, for each
//! machine: fast enough for every `cargo test` (the guest never runs, thanks
//! to `-S`), while `tests/boot.rs` proves that a kernel boots with it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cove_backend::{Accel, DataDisk, Machine, PortForward, UserNet, VmSpec};
use cove_backend::{process, sockets};
use cove_qemu::{Qemu, QmpClient, RunState};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The descriptor QEMU finds its user-mode NIC's socket on.
const NET_FD: i32 = 4;

/// The smallest file QEMU's Linux loader takes as a bzImage: boot protocol
/// 2.15 header ("HdrS" at 0x202), one setup sector, loaded high. Never run.
fn fake_bzimage(path: &Path) {
    let mut image = vec![0u8; 4096];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version
    image[0x211] = 0x01; // loadflags: LOADED_HIGH
    image[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    std::fs::write(path, image).unwrap();
}

fn qcow2(path: &Path) {
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("16M")
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

async fn starts_paused(machine: Machine) {
    let dir = tempfile::Builder::new()
        .prefix("cq")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    fake_bzimage(&d.join("bzImage"));
    std::fs::write(d.join("initrd"), b"not a real initrd").unwrap();
    qcow2(&d.join("root.qcow2"));
    qcow2(&d.join("data, with comma.qcow2"));
    let spec = VmSpec {
        name: "argv-test".into(),
        cpus: 2,
        memory_mib: 128,
        kernel: d.join("bzImage"),
        vmlinux: None,
        initrd: Some(d.join("initrd")),
        cmdline_extra: "quiet".into(),
        root_disk: d.join("root.qcow2"),
        data_disks: vec![DataDisk {
            path: d.join("data, with comma.qcow2"),
            serial: "cove-data1".into(),
        }],
        ports: vec![PortForward {
            host_addr: "127.0.0.1".into(),
            host_port: 0,
            guest_port: 22,
        }],
        machine,
        accel: Accel::Tcg,
        transports: cove_backend::Transports {
            vmm: d.join("qmp.sock"),
            console: d.join("console.sock"),
            agent: d.join("agent.sock"),
        },
        memory: Default::default(),
        incoming: false,
        shares: vec![],
        taps: vec![],
        // What the supervisor gives it: one end of a socket pair whose other end passt holds.
        user_net: UserNet::StreamFd(NET_FD),
    };
    let qemu = Qemu::find_for(machine, Some(2_000_000)).unwrap();
    let mut cmd = qemu.command(&spec).unwrap();
    let (net, qemu_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let qemu_end = std::os::fd::OwnedFd::from(qemu_end);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&qemu_end);
    // SAFETY: inherit_as only calls dup2/fcntl between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            process::inherit_as(raw, NET_FD)
        });
    }
    process::supervise(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("stderr")).unwrap());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = || unsafe { libc::kill(pid, 0) == 0 };
    let refused = |e: &dyn std::fmt::Display| -> ! {
        let stderr = std::fs::read_to_string(d.join("stderr")).unwrap_or_default();
        panic!("QEMU refused the {machine} argv: {e}\n{stderr}")
    };
    let stream = sockets::connect_when_ready(&spec.transports.vmm, TIMEOUT, alive)
        .await
        .unwrap_or_else(|e| refused(&e));
    // QEMU opens its sockets before it creates the devices, so a refused
    // option shows as the connection dropping here.
    let qmp = QmpClient::from_stream(stream, &spec.transports.vmm)
        .await
        .unwrap_or_else(|e| refused(&e));
    let status = qmp.query_status().await.unwrap_or_else(|e| refused(&e));
    assert_eq!(status, RunState::Prelaunch);
    // The other two sockets listen too.
    for sock in [&spec.transports.console, &spec.transports.agent] {
        tokio::net::UnixStream::connect(sock).await.unwrap();
    }
    drop(qemu_end);
    qmp.quit().await.unwrap();
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    // QEMU held the NIC's socket: its exit closed it, as passt sees.
    net.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(std::io::Read::read(&mut &net, &mut [0u8; 1]).unwrap(), 0);
}

#[tokio::test]
async fn microvm_argv_is_accepted() {
    starts_paused(Machine::Microvm).await;
}

/// arm64 (`qemu-system-aarch64 -M virt`): the fake bzImage is loaded as a raw Image, never run.
#[tokio::test]
async fn virt_argv_is_accepted() {
    starts_paused(Machine::Virt).await;
}

#[tokio::test]
async fn q35_argv_is_accepted() {
    starts_paused(Machine::Q35).await;
}
