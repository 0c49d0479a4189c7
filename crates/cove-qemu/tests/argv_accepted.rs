//! QEMU itself accepts every option and device of the argv, for each
//! machine: fast enough for every `cargo test` (the guest never runs, thanks
//! to `-S`), while `tests/boot.rs` proves that a kernel boots with it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cove_backend::{Accel, DataDisk, Machine, Memory, PortForward, RunAs, UserNet, VmSpec};
use cove_backend::{process, sockets};
use cove_qemu::{Qemu, QmpClient, RunState};
use std::os::unix::process::CommandExt;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The descriptor QEMU finds its user-mode NIC's socket on.
const NET_FD: i32 = 4;

/// The smallest file QEMU's Linux loader takes as a bzImage: boot protocol
/// 2.15 header ("HdrS" at 0x202), one setup sector, loaded high; run, it loops forever.
fn fake_bzimage(path: &Path) {
    let mut image = vec![0u8; 4096];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    // The setup code's entry: `jmp .`, so a VM that is resumed spins in place.
    image[0x200..0x202].copy_from_slice(&[0xeb, 0xfe]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version
    image[0x211] = 0x01; // loadflags: LOADED_HIGH
    image[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    std::fs::write(path, image).unwrap();
}

/// A 16 MiB qcow2 at `path`, an overlay over the qcow2 `backing` when given (as a VM's root
/// disk is over its image's).
fn qcow2(path: &Path, backing: Option<&Path>) {
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        cmd.args(["-F", "qcow2", "-b"]).arg(b);
    }
    let ok = cmd.arg(path).arg("16M").status().unwrap().success();
    assert!(ok);
}

/// A scratch directory only root may enter (as cove's runtime directory), with a short path:
/// unix socket paths must stay under 108 bytes.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cq")
        .tempdir_in("/tmp")
        .unwrap()
}

async fn starts_paused(machine: Machine) {
    let dir = scratch();
    let d = dir.path();
    fake_bzimage(&d.join("bzImage"));
    std::fs::write(d.join("initrd"), b"not a real initrd").unwrap();
    qcow2(&d.join("root.qcow2"), None);
    qcow2(&d.join("data, with comma.qcow2"), None);
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
        run_as: None,
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

/// Under root, QEMU drops to its own uid and gid once its files are open, and a snapshot still
/// saves and restores: the state goes over a descriptor passed on QMP, since a QEMU that dropped
/// its privileges can open nothing in the (root-only) runtime directory.
#[tokio::test]
async fn a_qemu_that_dropped_privileges_saves_and_restores_its_state() {
    if !cove_util::process::is_root() {
        eprintln!("not root: cove runs QEMU as the caller, nothing to drop");
        return;
    }
    let dir = scratch();
    let d = dir.path();
    fake_bzimage(&d.join("bzImage"));
    qcow2(&d.join("base.qcow2"), None);
    qcow2(&d.join("root.qcow2"), Some(&d.join("base.qcow2")));
    let run_as = RunAs::for_supervisor(std::process::id());
    let spec = |incoming: bool| VmSpec {
        name: "runas-test".into(),
        cpus: 1,
        memory_mib: 64,
        kernel: d.join("bzImage"),
        vmlinux: None,
        initrd: None,
        cmdline_extra: String::new(),
        root_disk: d.join("root.qcow2"),
        data_disks: vec![],
        ports: vec![],
        machine: Machine::Microvm,
        accel: Accel::Tcg,
        transports: cove_backend::Transports {
            vmm: d.join("qmp.sock"),
            console: d.join("console.sock"),
            agent: d.join("agent.sock"),
        },
        memory: if incoming {
            Memory::PrivateFile(d.join("memory"))
        } else {
            Memory::SharedFile(d.join("memory"))
        },
        incoming,
        shares: vec![],
        taps: vec![],
        user_net: UserNet::Builtin,
        run_as: Some(run_as),
    };
    let qemu = Qemu::find_for(Machine::Microvm, Some(2_000_000)).unwrap();
    let spawn = |spec: &VmSpec| {
        let mut cmd = qemu.command(spec).unwrap();
        let _ = std::fs::remove_file(&spec.transports.vmm);
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr")).unwrap());
        tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let connect = |child: &tokio::process::Child| {
        let pid = child.id().unwrap() as i32;
        let vmm = spec(false).transports.vmm;
        async move {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = || unsafe { libc::kill(pid, 0) == 0 };
            let stream = sockets::connect_when_ready(&vmm, TIMEOUT, alive)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{e}: {}",
                        std::fs::read_to_string(d.join("stderr")).unwrap()
                    )
                });
            QmpClient::from_stream(stream, &vmm).await.unwrap()
        }
    };

    let mut first = spawn(&spec(false));
    let qmp = connect(&first).await;
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);
    let status = std::fs::read_to_string(format!("/proc/{}/status", first.id().unwrap())).unwrap();
    let expect = |key: &str, id: u32| {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        assert_eq!(
            line[key.len()..].split_whitespace().collect::<Vec<_>>(),
            vec![id.to_string().as_str(); 4],
            "{status}"
        );
    };
    expect("Uid:", run_as.uid);
    expect("Gid:", run_as.gid);
    assert!(
        status.contains(&format!("Groups:\t{} \n", run_as.gid)),
        "{status}"
    );

    // Running, as a VM is when it is snapshotted (its disks then opened for writing).
    qmp.cont().await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);
    qmp.save_state(&d.join("state")).await.unwrap();
    let state = std::fs::read(d.join("state")).unwrap();
    assert_eq!(&state[..4], b"QEVM", "QEMU's migration stream");
    qmp.quit().await.unwrap();
    tokio::time::timeout(TIMEOUT, first.wait())
        .await
        .unwrap()
        .unwrap();

    let mut second = spawn(&spec(true));
    let qmp = connect(&second).await;
    qmp.restore_state(&d.join("state")).await.unwrap();
    // Loaded and waiting for `cont`.
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Paused);
    qmp.cont().await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);
    qmp.quit().await.unwrap();
    tokio::time::timeout(TIMEOUT, second.wait())
        .await
        .unwrap()
        .unwrap();
}
