//! cove networks (issue 14), each test inside a network namespace it makes itself: bridges,
//! TAPs, nftables rules, dnsmasq and all test traffic stay there, and the namespace goes
//! away with the test, pass or fail.

use cove_e2e::Cove;
use cove_e2e::netns::NetNs;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// Links, nftables tables and dnsmasq processes of cove in the namespace.
fn cove_objects(ns: &NetNs) -> (Vec<String>, Vec<String>, usize) {
    let links: Vec<String> = ns
        .ok(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("covebr") || n.starts_with("cvt"))
        .collect();
    let tables: Vec<String> = ns
        .ok(&["nft", "list", "tables"])
        .lines()
        .filter(|l| l.contains("cove_net"))
        .map(str::to_owned)
        .collect();
    let dnsmasq = ns
        .pids()
        .iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "dnsmasq")
        })
        .count();
    (links, tables, dnsmasq)
}

fn network<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no network {name} in {list}"))
}

#[test]
#[ignore = "needs root: makes a network namespace"]
fn networks_are_recorded_reconciled_after_a_reboot_and_removed_whole() {
    let ns = NetNs::new("netobj");
    let cove = Cove::in_netns(&ns);

    // Without the capabilities, cove names each one missing and creates nothing.
    let unprivileged = cove
        .command_via(&[
            "setpriv",
            "--bounding-set",
            "-net_admin,-net_raw,-net_bind_service",
        ])
        .args(["network", "create", "lab"])
        .output()
        .unwrap();
    assert!(!unprivileged.status.success());
    let err = String::from_utf8_lossy(&unprivileged.stderr);
    for cap in [
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_NET_BIND_SERVICE",
        "user-mode",
    ] {
        assert!(err.contains(cap), "{cap} not named in: {err}");
    }
    assert_eq!(cove_objects(&ns), (vec![], vec![], 0));

    cove.ok(&["network", "create", "lab"]);
    cove.ok(&[
        "network",
        "create",
        "iso",
        "--no-nat",
        "--subnet",
        "10.118.0.0/24",
    ]);
    let err = cove.fails(&["network", "create", "dup", "--subnet", "10.118.0.0/25"]);
    assert!(err.contains("overlaps network `iso`"), "{err}");
    let list = cove.json(&["network", "ls"]);
    assert_eq!(network(&list, "lab")["up"], true);
    assert_eq!(network(&list, "iso")["gateway"], "10.118.0.1");
    let (links, tables, dnsmasq) = cove_objects(&ns);
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(tables.len(), 2, "{tables:?}");
    assert_eq!(dnsmasq, 2);
    // The rules isolate: guests reach the host only at the network's own address.
    let rules = ns.ok(&["nft", "list", "table", "inet", "cove_net2"]);
    assert!(rules.contains("ip daddr 10.118.0.1 accept"), "{rules}");
    assert!(
        !rules.contains("masquerade"),
        "--no-nat must not masquerade: {rules}"
    );

    // `cove doctor` reports each network's bridge, dnsmasq and rules, and a bridge without
    // its rules as a failure: its VMs would not be isolated.
    let doctor = |cove: &Cove| -> Vec<Value> {
        let out = cove.run(&["--json", "doctor", "--cached"]);
        let report: Value = serde_json::from_slice(&out.stdout).expect("doctor printed JSON");
        report["checks"].as_array().unwrap().clone()
    };
    let check = |checks: &[Value], name: &str| -> Value {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} in {checks:?}"))
            .clone()
    };
    let checks = doctor(&cove);
    assert_eq!(check(&checks, "network privileges")["status"], "ok");
    let lab = check(&checks, "network lab");
    assert_eq!(lab["status"], "ok", "{lab}");
    let detail = lab["detail"].as_str().unwrap();
    for part in ["bridge covebr1 up", "dnsmasq pid", "cove_net1 present"] {
        assert!(detail.contains(part), "{part} not in {detail}");
    }
    // The rules go first (the reboot below takes the rest).
    ns.ok(&["nft", "delete", "table", "inet", "cove_net1"]);
    let lab = check(&doctor(&cove), "network lab");
    assert_eq!(lab["status"], "fail", "{lab}");
    assert!(
        lab["detail"].as_str().unwrap().contains("NOT isolated"),
        "{lab}"
    );
    // Unprivileged, doctor says exactly what is missing, and that it cannot see the rules.
    let out = cove
        .command_via(&["setpriv", "--bounding-set", "-net_admin"])
        .args(["--json", "doctor", "--cached"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor printed JSON");
    let checks = report["checks"].as_array().unwrap();
    let privileges = check(checks, "network privileges");
    assert_eq!(privileges["status"], "warn");
    // Exactly the one dropped: the list names it alone.
    let detail = privileges["detail"].as_str().unwrap();
    assert!(
        detail.contains("the capabilities CAP_NET_ADMIN ("),
        "{detail}"
    );
    assert!(
        check(checks, "network iso")["detail"]
            .as_str()
            .unwrap()
            .contains("unreadable")
    );

    // A host reboot, as far as the network goes: its devices, rules and dnsmasq vanish.
    ns.ok(&["ip", "link", "delete", "covebr1"]);
    let pid =
        std::fs::read_to_string(cove.root().join("state/cove/networks/lab/dnsmasq.pid")).unwrap();
    ns.ok(&["kill", "-9", pid.trim()]);
    cove.wait_for("the killed dnsmasq to go", Duration::from_secs(10), || {
        cove_objects(&ns).2 == 1
    });
    let list = cove.json(&["network", "ls"]);
    assert_eq!(network(&list, "lab")["up"], false, "{list}");
    assert_eq!(network(&list, "iso")["up"], true, "{list}");

    // rm removes what exists and forgets what the reboot took.
    cove.ok(&["network", "rm", "lab"]);
    cove.ok(&["network", "rm", "iso"]);
    assert_eq!(cove_objects(&ns), (vec![], vec![], 0));
    assert_eq!(cove.json(&["network", "ls"]), serde_json::json!([]));
    let err = cove.fails(&["network", "rm", "lab"]);
    assert!(err.contains("no network named `lab`"), "{err}");
}

/// A thread answering every connection with `hello`, so a guest's `nc` shows it got through.
fn serve_hello(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"hello\n");
        }
    });
}

/// Whether `vm` gets `hello` from `addr:port` (3 s to connect).
fn reaches(cove: &Cove, vm: &str, addr: &str, port: u16) -> bool {
    let out = cove.run(&[
        "exec",
        vm,
        "--",
        "sh",
        "-c",
        // `nc -w` bounds the connect, not a connection that opens and then says nothing (one
        // hung for 7 minutes here): the guest's `timeout` bounds the whole attempt.
        &format!("timeout 10 nc -w 3 {addr} {port} </dev/null"),
    ]);
    String::from_utf8_lossy(&out.stdout).contains("hello")
}

#[test]
#[ignore = "boots five VMs in a network namespace (needs root)"]
fn vms_reach_peers_by_name_and_nothing_the_network_does_not_give_them() {
    let ns = NetNs::new("netvm");
    let cove = Cove::in_netns(&ns);
    cove.minimal_image();
    cove.ok(&["network", "create", "lab", "--subnet", "10.119.1.0/24"]);
    cove.ok(&[
        "network",
        "create",
        "other",
        "--subnet",
        "10.119.2.0/24",
        "--no-nat",
    ]);
    cove.ok(&["create", "a", "--network", "lab"]);
    cove.ok(&["create", "b", "--network", "lab"]);
    cove.ok(&["create", "c", "--network", "other"]);
    // On no cove network: the default user-mode network (passt); `h` asked for the host.
    cove.ok(&["create", "u"]);
    cove.ok(&["create", "h", "--host-loopback"]);
    let err = cove.fails(&["create", "hl", "--host-loopback", "--network", "lab"]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = cove.fails(&["create", "d", "--network", "nope"]);
    assert!(err.contains("no network named `nope`"), "{err}");
    for vm in ["a", "b", "c", "u", "h"] {
        cove.ok(&["start", vm]);
    }
    let list = cove.json(&["network", "ls"]);
    let ip_of = |net: &str, vm: &str| -> String {
        network(&list, net)["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vm)
            .unwrap()["ip"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a_ip, c_ip) = (ip_of("lab", "a"), ip_of("other", "c"));

    // Peers by name, short and with the domain, through the network's dnsmasq.
    cove.ok(&["exec", "a", "--", "ping", "-c", "1", "-W", "5", "b"]);
    cove.ok(&["exec", "b", "--", "ping", "-c", "1", "-W", "5", "a.cove"]);
    // The host by name too: its resolver pointed at the network, as with Incus or libvirt.
    ns.use_resolver("10.119.1.1", "cove");
    let host_view = ns.ok(&["getent", "hosts", "a.cove"]);
    assert!(host_view.starts_with(&a_ip), "{host_view}");

    // Listeners in the namespace: on every address (so on the network's own address and on
    // one the network does not give), and on the host's loopback only.
    ns.ok(&["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]);
    // Where a cloud serves its instance metadata (and credentials), as an address of the
    // namespace's own.
    ns.ok(&["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"]);
    let any = ns.listen("0.0.0.0:0");
    let any_port = any.local_addr().unwrap().port();
    serve_hello(any);
    let lo = ns.listen("127.0.0.1:0");
    let lo_port = lo.local_addr().unwrap().port();
    serve_hello(lo);
    // The control case first: what the network gives works, so the refusals below are the
    // rules' doing and not a broken guest.
    assert!(reaches(&cove, "a", "10.119.1.1", any_port));
    assert!(reaches(&cove, "c", "10.119.2.1", any_port));
    assert!(
        !reaches(&cove, "a", "192.0.2.1", any_port),
        "another host address"
    );
    assert!(
        !reaches(&cove, "a", "10.0.2.2", lo_port),
        "host loopback via user-mode"
    );
    assert!(
        !reaches(&cove, "c", "192.0.2.1", any_port),
        "no-NAT network out"
    );
    // The default user-mode network goes out (here: to an address of the namespace that is
    // not its loopback) but never reaches the host's loopback, neither through the gateway
    // (slirp's 10.0.2.2 is the host's 127.0.0.1) nor through its DNS address.
    assert!(reaches(&cove, "u", "192.0.2.1", any_port), "user-mode out");
    for addr in ["10.0.2.2", "10.0.2.3", "192.0.2.1"] {
        assert!(
            !reaches(&cove, "u", addr, lo_port),
            "host loopback from the default user-mode network via {addr}"
        );
    }
    assert!(
        !reaches(&cove, "u", "10.0.2.2", any_port),
        "the gateway is not the host"
    );
    // Cloud metadata, from the default user-mode network (passt's sockets, refused by the
    // rules on the VMM identity passt runs as) and from a cove network.
    for vm in ["u", "h", "a"] {
        assert!(
            !reaches(&cove, vm, "169.254.169.254", any_port),
            "{vm} reached the link-local metadata address"
        );
    }
    let guard = ns.ok(&["nft", "list", "table", "inet", "cove_guard"]);
    assert!(guard.contains("169.254.0.0/16"), "{guard}");
    // Asked for, and only then: the host's loopback as the gateway.
    assert!(
        reaches(&cove, "h", "10.0.2.2", lo_port),
        "a VM created with --host-loopback reaches the host's 127.0.0.1"
    );
    assert!(
        cove.ok(&["show", "h"])
            .contains("reaches the host's 127.0.0.1"),
        "show says so"
    );
    // No network reaches another.
    let across = cove.run(&["exec", "a", "--", "ping", "-c", "1", "-W", "3", &c_ip]);
    assert!(!across.status.success(), "a reached c across networks");
    let across = cove.run(&["exec", "c", "--", "ping", "-c", "1", "-W", "3", &a_ip]);
    assert!(!across.status.success(), "c reached a across networks");

    // A clone on the network: an address, MAC, TAP and name of its own, moved to by the
    // post-restore fixup, while its source keeps its own and both answer by name.
    cove.ok(&["snapshot", "b", "base"]);
    let cloned = cove.ok(&["clone", "b@base", "b2"]);
    assert!(cloned.contains("restored from snapshot b@base"), "{cloned}");
    let list = cove.json(&["network", "ls"]);
    let vm_of = |vm: &str| -> Value {
        network(&list, "lab")["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vm)
            .unwrap_or_else(|| panic!("{vm} not on lab: {list}"))
            .clone()
    };
    let (b, b2) = (vm_of("b"), vm_of("b2"));
    assert_ne!(b["ip"], b2["ip"], "{list}");
    assert_ne!(b["mac"], b2["mac"], "{list}");
    let b2_ip = b2["ip"].as_str().unwrap().to_owned();
    let guest_addrs = |vm: &str| cove.ok(&["exec", vm, "--", "ip", "addr"]);
    let links = |vm: &str| cove.ok(&["exec", vm, "--", "sh", "-c", "cat /sys/class/net/*/address"]);
    assert!(
        guest_addrs("b2").contains(&format!("inet {b2_ip}/24")),
        "{}",
        guest_addrs("b2")
    );
    assert!(!guest_addrs("b2").contains(&format!("inet {}/", b["ip"].as_str().unwrap())));
    assert!(
        links("b2").contains(b2["mac"].as_str().unwrap()),
        "{}",
        links("b2")
    );
    assert!(
        links("b").contains(b["mac"].as_str().unwrap()),
        "{}",
        links("b")
    );
    for (from, to) in [
        ("a", "b2"),
        ("a", "b"),
        ("b2", "a"),
        ("b", "b2.cove"),
        ("b2", "b"),
    ] {
        cove.ok(&["exec", from, "--", "ping", "-c", "1", "-W", "5", to]);
    }
    assert!(ns.ok(&["getent", "hosts", "b2.cove"]).starts_with(&b2_ip));
    // The source's MAC was never seen on the clone's port (its TAP was held until the move).
    let b2_port = ns.ok(&["bridge", "fdb", "show", "dev", b2["tap"].as_str().unwrap()]);
    assert!(!b2_port.contains(b["mac"].as_str().unwrap()), "{b2_port}");
    let rules = ns.ok(&["nft", "list", "tables"]);
    assert!(
        !rules.contains("cove_hold"),
        "a hold outlived the move: {rules}"
    );

    // kill -9 of b2's supervisor in the middle of its fixup, as far as the host can tell: its
    // TAP held again and recorded as cove records it. The next command adopts b2, and the
    // adopting supervisor does the fixup again and only then lifts the hold.
    let b2_tap = b2["tap"].as_str().unwrap();
    let hold = format!("cove_hold_{}", b2_tap.replace('-', "_"));
    let mut paths = cove_state::Paths::under(cove.root());
    paths.state = cove.root().join("state/cove");
    let supervisor = cove_state::Store::open(&paths)
        .unwrap()
        .get_vm("b2")
        .unwrap()
        .supervisor_pid
        .expect("b2 has a supervisor");
    ns.ok(&["kill", "-9", &supervisor.to_string()]);
    ns.ok(&["nft", "add", "table", "netdev", &hold]);
    let chain =
        format!("{{ type filter hook ingress device \"{b2_tap}\" priority filter; policy drop; }}");
    ns.ok(&["nft", "add", "chain", "netdev", &hold, "ingress", &chain]);
    cove_state::Store::open(&paths)
        .unwrap()
        .record_object(&cove_state::net::HostObject {
            kind: cove_state::net::ObjectKind::Nft,
            name: hold.clone(),
            network: "lab".into(),
        })
        .unwrap();
    // Held, b2 answers nobody, while b does (the control case). `cove exec a` reconciles
    // only `a`: b2 is not adopted yet.
    let held = cove.run(&["exec", "a", "--", "ping", "-c", "1", "-W", "2", "b2"]);
    assert!(!held.status.success(), "a held TAP let b2 answer");
    cove.ok(&["exec", "a", "--", "ping", "-c", "1", "-W", "5", "b"]);
    cove.ok(&["show", "b2"]);
    cove.wait_for(
        "the adopting supervisor to lift the hold",
        Duration::from_secs(60),
        || !ns.ok(&["nft", "list", "tables"]).contains(&hold),
    );
    cove.ok(&["exec", "a", "--", "ping", "-c", "1", "-W", "5", "b2"]);
    assert!(guest_addrs("b2").contains(&format!("inet {b2_ip}/24")));

    // `test --fresh` on a throwaway clone of b: on the network while it runs, gone after.
    let fresh = cove.ok(&["test", "--fresh", "b"]);
    assert!(fresh.contains("PASS"), "{fresh}");
    let list = cove.json(&["network", "ls"]);
    let on_lab: Vec<&str> = network(&list, "lab")["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(on_lab, ["a", "b", "b2"], "{list}");
    cove.ok(&["exec", "a", "--", "ping", "-c", "1", "-W", "5", "b"]);

    // Stopped, a VM keeps its address and its name (as a libvirt or Incus reservation): the
    // clone's cold boot gets the same address by DHCP, with its own MAC.
    cove.ok(&["stop", "b2"]);
    assert!(ns.ok(&["getent", "hosts", "b2.cove"]).starts_with(&b2_ip));
    cove.ok(&["start", "b2"]);
    assert!(
        guest_addrs("b2").contains(&format!("inet {b2_ip}/24")),
        "{}",
        guest_addrs("b2")
    );
    cove.ok(&["exec", "a", "--", "ping", "-c", "1", "-W", "5", "b2"]);
    // Deleted, its name is gone at once.
    cove.ok(&["delete", "--force", "b2"]);
    assert!(!ns.run(&["getent", "hosts", "b2.cove"]).status.success());

    // A host reboot takes the network away; the next start of a VM on it brings it back.
    cove.ok(&["stop", "a"]);
    ns.ok(&["ip", "link", "delete", "cvt1-2"]);
    ns.ok(&["nft", "delete", "table", "inet", "cove_net1"]);
    cove.ok(&["start", "a"]);
    cove.ok(&["exec", "b", "--", "ping", "-c", "1", "-W", "5", "a"]);
    assert!(
        !reaches(&cove, "a", "192.0.2.1", any_port),
        "rules back after the start"
    );

    // Deleting VMs takes their TAPs and names; removing networks leaves nothing.
    for vm in ["a", "b", "c", "u"] {
        cove.ok(&["delete", "--force", vm]);
    }
    let hosts = std::fs::read_to_string(cove.root().join("state/cove/networks/lab/hosts")).unwrap();
    assert!(!hosts.contains("a.cove"), "{hosts}");
    // Nor does dnsmasq answer for it from the DHCP lease `a` held (it did: leases kept names).
    assert!(!ns.run(&["getent", "hosts", "a.cove"]).status.success());
    let (links, _, _) = cove_objects(&ns);
    assert!(links.iter().all(|l| l.starts_with("covebr")), "{links:?}");
    cove.ok(&["network", "rm", "lab"]);
    cove.ok(&["network", "rm", "other"]);
    assert_eq!(cove_objects(&ns), (vec![], vec![], 0));
}

#[test]
#[ignore = "boots two PostgreSQL VMs; builds a Debian image; needs root (a network namespace)"]
fn app_and_db_example_comes_up_in_order_and_queries_by_name() {
    let ns = NetNs::new("appdb");
    let cove = Cove::in_netns(&ns);
    let spec = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/app-and-db.toml"
    ));
    let spec = spec.to_str().unwrap();
    cove.image(&[spec]);
    let up = cove.ok(&["up", spec]);
    // The network first, then db before app (declared after it, `after = ["db"]`).
    let at = |s: &str| up.find(s).unwrap_or_else(|| panic!("no `{s}` in:\n{up}"));
    assert!(at("network appnet: created") < at("db: created and started"));
    assert!(at("db: created and started") < at("app: created and started"));
    assert_eq!(up.matches("CHECKS PASSED").count(), 2, "{up}");

    // From the host, by name: the namespace's resolver asks the network's dnsmasq.
    let list = cove.json(&["network", "ls"]);
    let gateway = network(&list, "appnet")["gateway"]
        .as_str()
        .unwrap()
        .to_owned();
    ns.use_resolver(&gateway, "cove");
    let out = ns.ok(&[
        "psql",
        "-X",
        "-tA",
        "-h",
        "db.cove",
        "-U",
        "postgres",
        "-c",
        "select 6 * 7",
    ]);
    assert_eq!(out.trim(), "42");
    cove.ok(&["down", spec]);
    cove.ok(&["network", "rm", "appnet"]);
    assert_eq!(cove_objects(&ns), (vec![], vec![], 0));
}
