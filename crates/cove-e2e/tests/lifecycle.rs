//! Boot and manage microVMs for real: the foundation's guarantees.

use cove_e2e::Cove;
use std::time::Duration;

#[test]
#[ignore = "boots VMs"]
fn create_start_stop_start_boots_twice_and_stays_running() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "web", "--image", "minimal"]);
    assert_eq!(cove.state("web"), "created");
    cove.ok(&["start", "web"]);
    assert_eq!(cove.state("web"), "running");
    // The guest's RAM is a file QEMU maps, on a tmpfs where the host has one (never written
    // back to a disk), and it goes with the VMM.
    let ram = cove.ram_file("web");
    let cmdline = std::fs::read_to_string(cove.vm_dir("web").join("vmm.cmdline")).unwrap();
    assert!(
        cmdline.contains(&format!("mem-path={}", ram.display())),
        "{cmdline}"
    );
    assert!(ram.exists());
    cove.ok(&["stop", "web"]);
    assert_eq!(cove.state("web"), "stopped");
    assert!(!ram.exists(), "the stopped VM's RAM file is gone");
    cove.ok(&["start", "web"]);
    assert!(
        cove.console_log("web").contains(cove_guest::marker::READY),
        "second boot reached ready"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(cove.state("web"), "running", "still running 5 s later");
    let show = cove.json(&["show", "web"]);
    for key in ["name", "state", "pid", "cpus", "memory", "image", "accel"] {
        assert!(show.get(key).is_some(), "show --json lacks {key}: {show}");
    }
    // Which accelerator depends on the host (KVM where a vCPU makes progress): only that
    // the record names one.
    assert!(
        matches!(show["accel"].as_str(), Some("kvm" | "tcg")),
        "{show}"
    );
    // Under root, the guest's QEMU runs as nobody the host knows: every uid and gid its own,
    // in cove's range, no supplementary group.
    let status = std::fs::read_to_string(format!("/proc/{}/status", show["pid"])).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line[key.len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    if cove_util::process::is_root() {
        let (uids, gids) = (ids("Uid:"), ids("Gid:"));
        assert!(
            uids.iter()
                .all(|&u| u == uids[0] && u >= cove_backend::RunAs::BASE),
            "{status}"
        );
        assert!(gids.iter().all(|&g| g == uids[0]), "{status}");
        assert!(ids("Groups:").iter().all(|&g| g == uids[0]), "{status}");
    } else {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(ids("Uid:")[0], unsafe { libc::geteuid() }, "{status}");
    }
    cove.ok(&["delete", "--force", "web"]);
}

#[test]
#[ignore = "boots VMs"]
fn killing_the_cli_mid_command_never_kills_the_vm() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "vm", "--image", "minimal"]);
    cove.ok(&["start", "vm"]);
    // `logs -f` runs until the VM stops: kill it in the middle.
    let mut follower = cove
        .command()
        .args(["logs", "-f", "vm"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    follower.kill().unwrap();
    follower.wait().unwrap();
    // And `start` of the running VM killed while it talks to the supervisor.
    let mut starter = cove.command().args(["start", "vm"]).spawn().unwrap();
    starter.kill().unwrap();
    starter.wait().unwrap();
    let pid = cove.json(&["show", "vm"])["pid"].as_u64().expect("pid");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cove.state("vm"), "running");
    assert_eq!(
        cove.json(&["show", "vm"])["pid"].as_u64(),
        Some(pid),
        "same VMM, never restarted"
    );
    cove.ok(&["delete", "--force", "vm"]);
}

#[test]
#[ignore = "boots VMs"]
fn qemu_killed_shows_crashed_at_once() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "c", "--image", "minimal"]);
    cove.ok(&["start", "c"]);
    let pid = cove.json(&["show", "c"])["pid"]
        .as_u64()
        .expect("a running VM has a pid");
    // SAFETY: kill has no memory effects; pid is this test's QEMU.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    // SIGKILL is delivered asynchronously: wait until the kernel has ended
    // QEMU (a zombie or gone), then the very next read must tell the truth,
    // without waiting for the supervisor to notice.
    cove.wait_for("QEMU to die", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|t| t.trim_start().starts_with('Z'))
        })
    });
    let show = cove.json(&["show", "c"]);
    assert_eq!(show["state"], "crashed", "{show}");
    // Its user-mode network (passt) ended with it: it lives exactly as long as its QEMU.
    cove.wait_for("passt to end with QEMU", Duration::from_secs(10), || {
        cove.passts().is_empty()
    });
    cove.wait_for(
        "the supervisor to record the exit",
        Duration::from_secs(10),
        || {
            cove.json(&["show", "c"])["last_exit"]
                .as_str()
                .is_some_and(|e| e.contains("signal 9"))
        },
    );
    cove.ok(&["delete", "c"]);
}

#[test]
#[ignore = "boots VMs"]
fn two_creates_of_one_name_exactly_one_wins() {
    let cove = Cove::new();
    cove.minimal_image();
    let spawn = || {
        cove.command()
            .args(["create", "twin", "--image", "minimal"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(
        [a.status.success(), b.status.success()]
            .iter()
            .filter(|s| **s)
            .count(),
        1,
        "exactly one create succeeds"
    );
    let loser = if a.status.success() { &b } else { &a };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("already exists"), "the loser says why: {err}");
    let staging = cove.root().join("state/cove/staging");
    assert_eq!(
        std::fs::read_dir(staging).unwrap().count(),
        0,
        "no half VM left"
    );
}

#[test]
#[ignore = "boots VMs"]
fn delete_leaves_no_files_and_no_processes() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "gone", "--image", "minimal"]);
    cove.ok(&["start", "gone"]);
    assert_eq!(cove.passts().len(), 1, "one passt per VM");
    let err = cove.fails(&["delete", "gone"]);
    assert!(
        err.contains("--force"),
        "refuses a running VM and says how: {err}"
    );
    let ram = cove.ram_file("gone");
    assert!(ram.exists());
    cove.ok(&["delete", "--force", "gone"]);
    assert!(!cove.vm_dir("gone").exists());
    assert!(!cove.root().join("run/cove/gone").exists());
    assert!(
        !ram.parent().unwrap().exists(),
        "no RAM file or directory left"
    );
    cove.wait_for("every process to exit", Duration::from_secs(5), || {
        cove.processes().is_empty()
    });
    let err = cove.fails(&["show", "gone"]);
    assert!(err.contains("no VM named"), "{err}");
}

#[test]
#[ignore = "boots a VM (the `up` note)"]
fn image_prune_removes_superseded_builds_and_never_an_image_in_use() {
    let cove = Cove::with_own_data();
    let build = |size: &str| {
        cove.json(&["image", "build", "minimal", "--size", size])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dir = |id: &str| cove.root().join("data/cove/images").join(id);
    let first = build("300M");
    cove.ok(&["create", "old", "--image", &first[..12]]);
    let second = build("320M");

    // `up` builds the default `minimal` for its VM, then says what the superseded build no VM
    // uses costs, and deletes nothing.
    let spec = cove.root().join("u.toml");
    std::fs::write(
        &spec,
        "image = \"minimal\"\n[[vm]]\nname = \"u\"\ncpus = 1\nmemory = \"256M\"\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let up = cove.ok(&["up", "--no-test", spec]);
    assert!(
        up.contains("note: 1 earlier image build that no VM uses takes")
            && up.contains("`cove image prune` removes them"),
        "{up}"
    );
    assert!(dir(&second).exists());
    let default = cove.json(&["show", "u"])["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cove.ok(&["down", spec]);
    let newest = build("340M");

    // Dry run first: it names the superseded builds no VM uses, and removes nothing.
    let dry = cove.ok(&["image", "prune", "--dry-run"]);
    assert!(
        dry.contains(&format!("would remove image minimal ({})", &second[..12]))
            && dry.contains(&default[..12]),
        "{dry}"
    );
    assert!(dir(&second).exists());

    let out = cove.ok(&["image", "prune"]);
    assert!(
        out.contains("freed") && out.contains("in 2 images"),
        "{out}"
    );
    assert!(!dir(&second).exists() && !dir(&default).exists(), "{out}");
    // The VM's image and the newest build stay.
    assert!(dir(&first).exists() && dir(&newest).exists());
    let left = cove.json(&["image", "list"]);
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
    let table = cove.ok(&["image", "list"]);
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.contains(&id[..12]))
            .unwrap()
            .to_owned()
    };
    assert!(row(&first).ends_with("old"), "{table}");
    assert!(row(&newest).ends_with('-'), "{table}");

    // `--all` takes the newest too, never the one a VM uses.
    let out = cove.ok(&["image", "prune", "--all"]);
    assert!(
        out.contains(&newest[..12]) && !out.contains(&first[..12]),
        "{out}"
    );
    assert!(dir(&first).exists() && !dir(&newest).exists());
    let out = cove.ok(&["image", "prune", "--all"]);
    assert!(out.contains("nothing to remove"), "{out}");
    cove.ok(&["delete", "old"]);
    cove.ok(&["image", "prune", "--all"]);
    assert!(!dir(&first).exists());
}

#[test]
fn bad_names_are_refused_with_the_reason() {
    let cove = Cove::new();
    for (name, says) in [
        ("../x", "may only contain"),
        ("", "empty"),
        (&"a".repeat(60), "longer"),
    ] {
        let err = cove.fails(&["create", name]);
        assert!(err.contains(says), "`{name}`: {err}");
    }
}
