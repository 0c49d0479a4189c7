//! Network namespaces a test makes for itself: cove's bridges, TAPs, nftables rules and
//! dnsmasq live in one, never on the host's own interfaces. Dropped (a failed test too): every
//! process left in it is killed, then the namespace and its resolver file are removed.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A new namespace with its loopback up, named after `tag` and this process.
    pub fn new(tag: &str) -> Self {
        let name = format!("cove-e2e-{tag}-{}", std::process::id());
        let ns = Self { name };
        ns.host(&["ip", "netns", "add", &ns.name]);
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME PROGRAM ARGS...` (also bind-mounts `/etc/netns/NAME/*` over `/etc`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("ip netns exec")
    }

    /// Runs a command in the namespace, requiring success; returns stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "`{}` in {} failed: {}",
            argv.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn host(&self, argv: &[&str]) {
        let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "`{}`: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes the namespace's resolver (for programs run through [`NetNs::command`]) ask
    /// `nameserver` for names under `search`, as a user points systemd-resolved at a cove
    /// network's bridge.
    pub fn use_resolver(&self, nameserver: &str, search: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("search {search}\nnameserver {nameserver}\noptions timeout:2 attempts:2\n"),
        )
        .unwrap();
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// A TCP listener bound inside the namespace (a thread enters it just to bind; the socket
    /// stays in the namespace it was made in).
    pub fn listen(&self, addr: &str) -> TcpListener {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let addr = addr.to_owned();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on a valid namespace descriptor changes only this thread, which
            // ends right after binding.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind(&addr).expect("bind in the namespace")
        })
        .join()
        .expect("listener thread")
    }

    /// Pids of the processes in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill has no memory effects; these processes run in this test's namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}
