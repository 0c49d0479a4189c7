//! The Firecracker backend's requests against a double of Firecracker's
//! published API contract (see `common`): the configuration a launch sends,
//! start, power-off, pause, snapshots, refusals, and the hybrid-vsock agent
//! transport. Nothing here boots a guest (Firecracker needs KVM).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ApiDouble, serve_vsock, short_dir};
use cove_backend::{
    Accel, AccelChoice, Backend, BackendError, ConnectMode, HostProbe, Machine, Memory,
    PortForward, Tap, Transports, VmSpec,
};
use cove_firecracker::Firecracker;
use cove_firecracker::api::{AGENT_VSOCK_PORT, VmConfig};
use cove_firecracker::http::HttpError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn spec(dir: &Path) -> VmSpec {
    VmSpec {
        name: "fc".into(),
        cpus: 2,
        memory_mib: 256,
        kernel: "/img/bzImage".into(),
        vmlinux: Some("/img/vmlinux".into()),
        initrd: Some("/img/initrd".into()),
        cmdline_extra: "quiet".into(),
        root_disk: dir.join("root.img"),
        data_disks: vec![],
        ports: vec![],
        machine: Machine::Microvm,
        accel: Accel::Kvm,
        transports: Transports {
            vmm: dir.join("vmm.sock"),
            console: dir.join("console.sock"),
            agent: dir.join("agent.sock"),
        },
        memory: Memory::Anonymous,
        incoming: false,
        shares: vec![],
        taps: vec![],
        user_net: Default::default(),
        run_as: None,
    }
}

fn always() -> bool {
    true
}

#[tokio::test]
async fn a_launch_configures_everything_and_resume_starts_it() {
    let (_keep, dir) = short_dir();
    let spec = spec(&dir);
    let api = ApiDouble::serve(&spec.transports.vmm);
    let connected = Firecracker
        .connect(&spec.transports, ConnectMode::Launched(&spec), &always)
        .await
        .unwrap();
    // Configured, not started: the vCPUs wait for resume, as the boundary asks.
    assert_eq!(
        api.calls(),
        [
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /vsock"
        ]
    );
    assert!(
        connected.console.is_none(),
        "the console is the VMM's stdio"
    );
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.status == 204), "{seen:#?}");
    let boot = &seen[1].body;
    assert_eq!(boot["kernel_image_path"], "/img/vmlinux");
    assert!(boot["boot_args"].as_str().unwrap().ends_with(" quiet"));
    assert_eq!(seen[2].body["cache_type"], "Writeback");
    assert_eq!(
        seen[2].body["path_on_host"],
        dir.join("root.img").to_str().unwrap()
    );
    assert_eq!(
        seen[3].body["uds_path"],
        dir.join("agent.sock").to_str().unwrap()
    );

    let control = connected.control;
    control.resume().await.unwrap();
    control.power_off().await.unwrap();
    control.pause().await.unwrap();
    control.resume().await.unwrap();
    let calls = api.calls();
    assert_eq!(
        calls[4..],
        ["PUT /actions", "PUT /actions", "PATCH /vm", "PATCH /vm"]
    );
    let seen = api.seen();
    assert_eq!(seen[4].body["action_type"], "InstanceStart");
    assert_eq!(seen[5].body["action_type"], "SendCtrlAltDel");
    assert_eq!(seen[6].body["state"], "Paused");
    assert_eq!(seen[7].body["state"], "Resumed");
    assert!(seen.iter().all(|s| s.status == 204), "{seen:#?}");
    // Firecracker's API has no quit: the caller kills the process instead.
    assert!(matches!(
        control.quit().await,
        Err(BackendError::Control { .. })
    ));
}

fn taps() -> Vec<Tap> {
    vec![
        Tap {
            ifname: "cvt1-2".into(),
            mac: "52:56:01:75:01:02".into(),
        },
        Tap {
            ifname: "cvt2-7".into(),
            mac: "52:56:02:75:02:07".into(),
        },
    ]
}

/// A VM on cove networks: each TAP becomes an interface with the TAP's name and the MAC the
/// guest and the network's DHCP server know it by, before start.
#[tokio::test]
async fn taps_are_configured_as_network_interfaces_before_start() {
    let (_keep, dir) = short_dir();
    let mut spec = spec(&dir);
    spec.taps = taps();
    spec.cmdline_extra = "cove.net=52:56:01:75:01:02 cove.net=52:56:02:75:02:07".into();
    let api = ApiDouble::serve(&spec.transports.vmm);
    let control = Firecracker
        .connect(&spec.transports, ConnectMode::Launched(&spec), &always)
        .await
        .unwrap()
        .control;
    assert_eq!(
        api.calls(),
        [
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /network-interfaces/tap0",
            "PUT /network-interfaces/tap1",
            "PUT /vsock"
        ]
    );
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.status == 204), "{seen:#?}");
    for (i, tap) in taps().iter().enumerate() {
        let body = &seen[3 + i].body;
        assert_eq!(body["iface_id"], format!("tap{i}"));
        assert_eq!(body["host_dev_name"], tap.ifname.as_str());
        assert_eq!(body["guest_mac"], tap.mac.as_str());
    }
    // The guest finds its NICs by MAC on its command line, as under QEMU.
    let args = seen[1].body["boot_args"].as_str().unwrap();
    assert!(args.contains("cove.net=52:56:02:75:02:07"), "{args}");
    control.resume().await.unwrap();
    assert_eq!(
        api.seen().last().unwrap().body["action_type"],
        "InstanceStart"
    );
    // The double holds the API to its contract: a MAC that is none is refused.
    let (_keep2, dir2) = short_dir();
    let mut bad = spec.clone();
    bad.transports = self::spec(&dir2).transports;
    bad.taps[0].mac = "52:56:01:75:01".into();
    let api2 = ApiDouble::serve(&bad.transports.vmm);
    let refused = Firecracker
        .connect(&bad.transports, ConnectMode::Launched(&bad), &always)
        .await;
    assert!(refused.is_err());
    assert!(
        api2.seen().iter().any(|s| s.status == 400),
        "{:#?}",
        api2.seen()
    );
}

#[tokio::test]
async fn saving_pauses_then_snapshots_and_a_restore_loads_it_paused() {
    let (_keep, dir) = short_dir();
    let spec1 = spec(&dir);
    let api = ApiDouble::serve(&spec1.transports.vmm);
    let control = Firecracker
        .connect(&spec1.transports, ConnectMode::Launched(&spec1), &always)
        .await
        .unwrap()
        .control;
    control.resume().await.unwrap();
    let state = dir.join("state");
    control.save_state(&state).await.unwrap();
    let seen = api.seen();
    let n = seen.len();
    assert_eq!(seen[n - 2].body["state"], "Paused");
    assert_eq!(seen[n - 1].path, "/snapshot/create");
    assert_eq!(seen[n - 1].status, 204);
    assert_eq!(
        seen[n - 1].body["mem_file_path"],
        format!("{}.mem", state.display())
    );
    drop(api);

    // A new VMM restores it: no configuration, a load that stays paused,
    // then resume is a PATCH (not InstanceStart).
    let (_keep2, dir2) = short_dir();
    let mut spec2 = spec(&dir2);
    spec2.incoming = true;
    // Restored on TAPs of its own (a clone's), which the load names over the snapshot's.
    spec2.taps = taps();
    spec2.memory = Memory::PrivateFile(cove_firecracker::backend::memory_file(&state));
    let api = ApiDouble::serve(&spec2.transports.vmm);
    let control = Firecracker
        .connect(&spec2.transports, ConnectMode::Launched(&spec2), &always)
        .await
        .unwrap()
        .control;
    assert!(
        api.calls().is_empty(),
        "a VMM waiting for a state stays unconfigured"
    );
    control.restore_state(&state).await.unwrap();
    control.resume().await.unwrap();
    assert_eq!(api.calls(), ["PUT /snapshot/load", "PATCH /vm"]);
    let seen = api.seen();
    assert_eq!(seen[0].body["resume_vm"], false);
    assert_eq!(seen[0].body["mem_backend"]["backend_type"], "File");
    assert_eq!(
        seen[0].body["network_overrides"],
        serde_json::json!([
            {"iface_id": "tap0", "host_dev_name": "cvt1-2"},
            {"iface_id": "tap1", "host_dev_name": "cvt2-7"}
        ])
    );
    assert!(seen.iter().all(|s| s.status == 204), "{seen:#?}");
}

#[tokio::test]
async fn a_refusal_is_a_typed_error_with_firecrackers_reason() {
    let (_keep, dir) = short_dir();
    let spec = spec(&dir);
    let api = ApiDouble::serve(&spec.transports.vmm);
    api.refuse("/boot-source", "Invalid kernel path: No such file");
    let err = match Firecracker
        .connect(&spec.transports, ConnectMode::Launched(&spec), &always)
        .await
    {
        Ok(_) => panic!("a refused configuration must fail the connect"),
        Err(e) => e,
    };
    let BackendError::Control { source, .. } = &err else {
        panic!("{err:?}")
    };
    match source.downcast_ref::<HttpError>() {
        Some(HttpError::Refused { status, fault, .. }) => {
            assert_eq!(*status, 400);
            assert_eq!(fault, "Invalid kernel path: No such file");
        }
        other => panic!("{other:?}"),
    }
    // Nothing after the refusal was sent.
    assert_eq!(api.calls(), ["PUT /machine-config", "PUT /boot-source"]);
}

#[tokio::test]
async fn the_api_socket_not_appearing_is_a_connect_error() {
    let (_keep, dir) = short_dir();
    let spec = spec(&dir);
    let gone = || false;
    let err = match Firecracker
        .connect(&spec.transports, ConnectMode::Launched(&spec), &gone)
        .await
    {
        Ok(_) => panic!("no API socket exists"),
        Err(e) => e,
    };
    assert!(
        matches!(err, BackendError::Connect { channel: "API", .. }),
        "{err:?}"
    );
}

#[test]
fn what_firecracker_cannot_do_is_refused_before_anything_runs() {
    let dir = Path::new("/tmp/x");
    let mut s = spec(dir);
    s.vmlinux = None;
    let err = VmConfig::for_spec(&s).unwrap_err().to_string();
    assert!(err.contains("vmlinux"), "{err}");
    let mut s = spec(dir);
    s.cpus = 3;
    assert!(
        VmConfig::for_spec(&s)
            .unwrap_err()
            .to_string()
            .contains("even")
    );
    let mut s = spec(dir);
    s.ports = vec![PortForward {
        host_addr: "127.0.0.1".into(),
        host_port: 1,
        guest_port: 2,
    }];
    assert!(
        VmConfig::for_spec(&s)
            .unwrap_err()
            .to_string()
            .contains("TAP")
    );
}

#[test]
fn the_json_config_uses_the_api_paths_as_keys_and_round_trips() {
    let config = VmConfig::for_spec(&spec(Path::new("/tmp/x"))).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    for key in [
        "boot-source",
        "drives",
        "machine-config",
        "vsock",
        "network-interfaces",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    let back: VmConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, config);
}

/// Without a KVM that runs vCPUs, Firecracker says it cannot boot, and why;
/// a launch is refused with that reason. (The host probe's result is built
/// here: no test asserts what this host has.)
#[test]
fn without_kvm_it_says_it_cannot_boot_and_launches_nothing() {
    let host = HostProbe {
        accel: AccelChoice {
            accel: Accel::Tcg,
            reason: "KVM opens but its vCPUs make no progress; using TCG".into(),
        },
        tsc_khz: None,
        cannot_boot: None,
    };
    let reason = cove_firecracker::backend::cannot_boot(&host, Ok("/usr/bin/firecracker".into()))
        .expect("no KVM, no Firecracker");
    assert!(reason.contains("only under KVM"), "{reason}");
    assert!(reason.contains("make no progress"), "{reason}");
    let host = HostProbe {
        cannot_boot: Some(reason),
        ..host
    };
    let err = Firecracker
        .launch(&spec(Path::new("/tmp/x")), &host)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("the firecracker backend cannot boot VMs on this host"),
        "{err}"
    );
    let kvm_host = HostProbe {
        accel: AccelChoice {
            accel: Accel::Kvm,
            reason: "a KVM vCPU ran the probe code".into(),
        },
        tsc_khz: None,
        cannot_boot: None,
    };
    assert_eq!(
        cove_firecracker::backend::cannot_boot(&kvm_host, Ok("/usr/bin/firecracker".into())),
        None
    );
}

#[tokio::test]
async fn the_agent_is_reached_through_the_hybrid_vsock_handshake() {
    let (_keep, dir) = short_dir();
    let transports = spec(&dir).transports;
    let _vsock = serve_vsock(&transports.agent, AGENT_VSOCK_PORT);
    let mut stream = Firecracker.connect_agent(&transports).await.unwrap();
    // After `OK <port>\n` the socket is the guest's stream, byte for byte.
    stream.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"hello");
}

#[tokio::test]
async fn a_guest_port_nobody_listens_on_is_refused() {
    let (_keep, dir) = short_dir();
    let transports = spec(&dir).transports;
    let _vsock = serve_vsock(&transports.agent, AGENT_VSOCK_PORT + 1);
    let err = Firecracker.connect_agent(&transports).await.unwrap_err();
    let BackendError::Connect { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        source.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{err:?}"
    );
}
