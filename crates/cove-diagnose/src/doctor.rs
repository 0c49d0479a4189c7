//! `cove doctor`: host checks with typed results (ok/warn/fail, detail, the command that
//! fixes it).
//!
//! Whether KVM really works is not probed here: that needs a child process running a vCPU
//! (cove-qemu's accel probe). The caller passes its result in [`HostFacts`], which keeps this
//! crate free of a dependency on cove-qemu.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

mod net;
pub use net::{NetworkFacts, NetworkHealth};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One host check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Level,
    pub detail: String,
    /// The command (or step) that fixes it, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Level, detail: impl Into<String>, fix: Option<&str>) -> Check {
        Check {
            name: name.to_string(),
            status,
            detail: detail.into(),
            fix: fix.map(str::to_string),
        }
    }
}

/// The KVM probe's verdict, as the caller got it from `cove_backend::host::accel::probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvmFact {
    /// A vCPU ran real code at hardware speed.
    pub usable: bool,
    /// The probe's explanation.
    pub reason: String,
}

/// What the caller knows about the host that this crate must not find out by itself.
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    /// `None` when the probe was not run.
    pub kvm: Option<KvmFact>,
    /// cove's state directory (VM disks live here).
    pub state_dir: PathBuf,
    /// cove's cache directory (images live here).
    pub cache_dir: PathBuf,
    /// Where running guests' RAM files go (`cove_state::Paths::ram`).
    pub ram_dir: PathBuf,
    /// The `-sandbox` value cove runs QEMU under (`cove_qemu::argv::sandbox`).
    pub qemu_sandbox: String,
    /// The identity QEMU drops to once it has opened its files (`-runas`), when cove runs as
    /// root (`cove_vm::backends::vmm_identity`).
    pub qemu_runs_as: Option<cove_backend::RunAs>,
    /// Whether link-local addresses (cloud metadata) are kept from guests (`cove_net::guard`).
    pub metadata_guard: MetadataGuard,
    /// Each VMM backend and why it cannot boot VMs here (`None`: it can).
    pub backends: Vec<(String, Option<String>)>,
    /// cove networks: privileges and each network's bridge, dnsmasq and rules.
    pub network: NetworkFacts,
}

/// The host rules keeping VMM-side sockets off link-local addresses (`cove_net::guard`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataGuard {
    /// cove does not run as root: QEMU and passt keep the caller's identity, and no rule can
    /// tell their sockets from the caller's others.
    NotRoot,
    /// The table is in place.
    Present,
    /// Not in place now; the next VM start applies it.
    Absent,
    /// It cannot be applied here, and why.
    CannotApply(String),
}

/// All checks.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// The worst level among the checks.
    pub fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Level::Ok)
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let tag = match c.status {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            writeln!(f, "{tag} {:<23} {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "     {:<23} fix: {fix}", "")?;
            }
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Level::Fail)
            .count();
        let warns = self
            .checks
            .iter()
            .filter(|c| c.status == Level::Warn)
            .count();
        write!(f, "{fails} failed, {warns} warning(s)")
    }
}

/// Run every host check.
pub fn doctor(facts: &HostFacts) -> DoctorReport {
    let mut checks = vec![
        qemu(),
        qemu_aarch64(),
        apt_arm64(),
        arm64_programs(),
        kvm(facts.kvm.as_ref()),
    ];
    checks.extend(protections(&facts.qemu_sandbox, facts.qemu_runs_as));
    checks.push(metadata_guard(&facts.metadata_guard));
    for (name, cannot_boot) in &facts.backends {
        let check = format!("backend {name}");
        checks.push(match cannot_boot {
            None => Check::new(&check, Level::Ok, "can boot VMs here", None),
            Some(why) => Check::new(
                &check,
                Level::Warn,
                format!("cannot boot VMs here: {why}"),
                Some("use another backend (`cove create --backend qemu`, the default)"),
            ),
        });
    }
    checks.push(device(
        "vhost-vsock",
        Path::new("/dev/vhost-vsock"),
        "the agent falls back to virtio-serial",
        "sudo modprobe vhost_vsock && sudo chmod 666 /dev/vhost-vsock",
    ));
    checks.push(device(
        "tun",
        Path::new("/dev/net/tun"),
        "TAP networking is unavailable; user-mode networking still works",
        "sudo modprobe tun",
    ));
    checks.extend(net::checks(&facts.network));
    checks.push(guest_ram(&facts.ram_dir));
    checks.push(free_space("state dir space", &facts.state_dir));
    checks.push(free_space("cache dir space", &facts.cache_dir));
    let tools: &[(&str, &[&str], Level, &str)] = &[
        (
            "mkfs.ext4",
            &["mkfs.ext4"],
            Level::Fail,
            "sudo apt-get install e2fsprogs",
        ),
        (
            "debugfs",
            &["debugfs"],
            Level::Fail,
            "sudo apt-get install e2fsprogs",
        ),
        (
            "debootstrap",
            &["mmdebstrap", "debootstrap"],
            Level::Warn,
            "sudo apt-get install mmdebstrap",
        ),
        ("cpio", &["cpio"], Level::Fail, "sudo apt-get install cpio"),
        (
            "dpkg-deb",
            &["dpkg-deb"],
            Level::Warn,
            "sudo apt-get install dpkg",
        ),
        (
            "apt-get",
            &["apt-get"],
            Level::Warn,
            "distribution kernels and packages need a Debian-like host",
        ),
        (
            "qemu-img",
            &["qemu-img"],
            Level::Fail,
            "sudo apt-get install qemu-utils",
        ),
    ];
    for (name, candidates, missing_level, fix) in tools {
        checks.push(tool(name, candidates, *missing_level, fix));
    }
    DoctorReport { checks }
}

/// Find an executable in `$PATH` and the sbin directories (the one look-up of cove).
pub use cove_util::path::which as find_executable;

/// A required or optional host tool; `candidates` are alternatives.
pub fn tool(name: &str, candidates: &[&str], missing: Level, fix: &str) -> Check {
    match candidates.iter().find_map(|c| find_executable(c)) {
        Some(p) => Check::new(name, Level::Ok, p.display().to_string(), None),
        None => Check::new(
            name,
            missing,
            format!("not found (looked for {})", candidates.join(", ")),
            Some(fix),
        ),
    }
}

/// QEMU: present, its version and the accelerators it was built with.
pub fn qemu() -> Check {
    qemu_named(
        "qemu-system-x86_64",
        Level::Fail,
        "sudo apt-get install qemu-system-x86",
    )
}

/// The QEMU of arm64 guests (`-M virt`, booted straight into the kernel: no firmware is
/// needed); a host without it still runs amd64 guests.
pub fn qemu_aarch64() -> Check {
    qemu_named(
        "qemu-system-aarch64",
        Level::Warn,
        "sudo apt-get install qemu-system-arm (for arm64 guests)",
    )
}

/// Whether apt can download arm64 packages (the kernel and busybox of an arm64 image).
pub fn apt_arm64() -> Check {
    let name = "apt arm64 packages";
    let fix = Some("sudo dpkg --add-architecture arm64 && sudo apt-get update (for arm64 images)");
    match Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
    {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "arm64") =>
        {
            Check::new(
                name,
                Level::Ok,
                "arm64 is a foreign dpkg architecture",
                None,
            )
        }
        Ok(_) => Check::new(
            name,
            Level::Warn,
            "arm64 is not a dpkg architecture here",
            fix,
        ),
        Err(e) => Check::new(name, Level::Warn, format!("cannot run dpkg: {e}"), fix),
    }
}

/// Where the kernel keeps the binfmt_misc handler Debian's qemu-user-static registers for arm64.
const BINFMT_AARCH64: &str = "/proc/sys/fs/binfmt_misc/qemu-aarch64";

/// Whether this host runs arm64 programs (through qemu-user, by binfmt_misc): mmdebstrap runs
/// the maintainer scripts of an arm64 spec image's packages that way, and fails without it.
pub fn arm64_programs() -> Check {
    let name = "arm64 programs";
    let fix = Some(
        "sudo apt-get install qemu-user-static binfmt-support (for arm64 images with packages)",
    );
    match std::fs::read_to_string(BINFMT_AARCH64) {
        Ok(text) => match binfmt_interpreter(&text) {
            Some(interpreter) => Check::new(
                name,
                Level::Ok,
                format!("run by {interpreter} (binfmt_misc)"),
                None,
            ),
            None => Check::new(
                name,
                Level::Warn,
                "the binfmt_misc handler for arm64 is disabled",
                fix,
            ),
        },
        Err(_) => Check::new(
            name,
            Level::Warn,
            "no binfmt_misc handler for arm64 programs",
            fix,
        ),
    }
}

/// The interpreter of a binfmt_misc handler, from its text under /proc, when it is enabled.
fn binfmt_interpreter(text: &str) -> Option<&str> {
    let mut lines = text.lines();
    if lines.next()? != "enabled" {
        return None;
    }
    lines.find_map(|l| l.strip_prefix("interpreter "))
}

fn qemu_named(name: &str, missing: Level, fix: &str) -> Check {
    let fix = Some(fix);
    let Some(bin) = find_executable(name) else {
        return Check::new(name, missing, "not found in PATH", fix);
    };
    let version = Command::new(&bin).arg("--version").output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .and_then(|l| l.split("version ").nth(1))
            .map(|v| v.split_whitespace().next().unwrap_or(v).to_string())
            .unwrap_or_else(|| "unknown version".into()),
        Ok(o) => {
            return Check::new(
                name,
                Level::Fail,
                format!(
                    "{} --version failed: {}",
                    bin.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                fix,
            );
        }
        Err(e) => {
            return Check::new(
                name,
                Level::Fail,
                format!("cannot run {}: {e}", bin.display()),
                fix,
            );
        }
    };
    let accels = accelerators(&bin);
    let detail = format!(
        "{} version {version}, accelerators: {}",
        bin.display(),
        accels.join(", ")
    );
    if accels.iter().any(|a| a == "tcg" || a == "kvm") {
        Check::new(name, Level::Ok, detail, None)
    } else {
        Check::new(name, missing, detail, fix)
    }
}

/// Which protections a guest meets on this host: QEMU's seccomp sandbox and the identity it
/// drops to (checked: this QEMU must accept cove's `-sandbox` and `-runas`, or no VM starts),
/// and what is not in place yet, said plainly.
pub fn protections(sandbox: &str, runs_as: Option<cove_backend::RunAs>) -> Vec<Check> {
    let mut checks = Vec::new();
    let name = "QEMU sandbox";
    let fix = Some("install Debian's qemu-system-x86, which is built with seccomp");
    // `-version` after the options: QEMU parses (and refuses) them first, then exits without
    // starting a VM.
    let mut args = vec!["-sandbox".to_owned(), sandbox.to_owned()];
    if let Some(id) = runs_as {
        args.extend(["-runas".to_owned(), format!("{}:{}", id.uid, id.gid)]);
    }
    args.push("-version".into());
    checks.push(match find_executable("qemu-system-x86_64") {
        None => Check::new(name, Level::Fail, "no qemu-system-x86_64", fix),
        Some(bin) => match Command::new(&bin).args(&args).output() {
            Ok(o) if o.status.success() => Check::new(
                name,
                Level::Ok,
                format!("seccomp active: -sandbox {sandbox}"),
                None,
            ),
            Ok(o) => Check::new(
                name,
                Level::Fail,
                format!(
                    "this QEMU refuses {}: {}",
                    args[..args.len() - 1].join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                fix,
            ),
            Err(e) => Check::new(
                name,
                Level::Fail,
                format!("cannot run {}: {e}", bin.display()),
                fix,
            ),
        },
    });
    checks.push(match (cove_util::process::is_root(), runs_as) {
        (true, Some(_)) => Check::new(
            "unprivileged QEMU",
            Level::Ok,
            format!(
                "yes: cove runs as root, and each QEMU drops to a uid and gid of its own \
                 ({:#x} + its supervisor's pid, no groups) once it has opened its files",
                cove_backend::RunAs::BASE
            ),
            None,
        ),
        (true, None) => Check::new(
            "unprivileged QEMU",
            Level::Warn,
            "no: cove runs as root, so QEMU does too (inside the seccomp sandbox, which denies \
             exec and fork)",
            Some("run cove as an ordinary user: TCG and user-mode networking need no root"),
        ),
        (false, _) => Check::new(
            "unprivileged QEMU",
            Level::Ok,
            "yes: QEMU runs as this user",
            None,
        ),
    });
    // The supervisor runs one passt per VM (`cove_vm::passt`), started with
    // `--no-map-gw`: nothing a guest sends maps to the host's loopback.
    checks.push(if find_executable("passt").is_some() {
        Check::new(
            "guest network isolation",
            Level::Ok,
            "yes: user-mode networking runs through passt, which maps nothing to the host's \
             loopback (10.0.2.2 is not the host)",
            None,
        )
    } else {
        Check::new(
            "guest network isolation",
            Level::Fail,
            "no: passt is not installed, and VMs on user-mode networking need it to start",
            Some("install Debian's `passt` package (`apt install passt`)"),
        )
    });
    checks
}

/// Whether a guest can reach 169.254.169.254 (a cloud's instance metadata and credentials).
pub fn metadata_guard(guard: &MetadataGuard) -> Check {
    let name = "link-local (metadata)";
    match guard {
        MetadataGuard::Present => Check::new(
            name,
            Level::Ok,
            "blocked: nftables table `inet cove_guard` refuses 169.254.0.0/16 and fe80::/10 to \
             the uids QEMU and passt run as",
            None,
        ),
        MetadataGuard::Absent => Check::new(
            name,
            Level::Ok,
            "blocked from the next VM start on (each start applies `inet cove_guard`; not in \
             place now)",
            None,
        ),
        MetadataGuard::NotRoot => Check::new(
            name,
            Level::Warn,
            "reachable: as an ordinary user cove cannot filter a guest's user-mode traffic, so a \
             guest reaches 169.254.169.254 (a cloud's instance metadata) wherever this host does",
            Some(
                "run cove as root (QEMU and passt then drop to uids of their own, which \
                 nftables keeps off link-local addresses), or block 169.254.169.254 for your \
                 uid in the host's firewall",
            ),
        ),
        MetadataGuard::CannotApply(why) => Check::new(
            name,
            Level::Warn,
            format!("reachable: the rules cannot be applied here ({why})"),
            Some("install nftables (`apt-get install nftables`) and run cove with CAP_NET_ADMIN"),
        ),
    }
}

/// Parse `qemu-system-x86_64 -accel help`.
pub fn accelerators(bin: &Path) -> Vec<String> {
    let Ok(out) = Command::new(bin).args(["-accel", "help"]).output() else {
        return Vec::new();
    };
    parse_accel_help(&String::from_utf8_lossy(&out.stdout))
}

fn parse_accel_help(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Accelerators supported"))
        .map(str::to_string)
        .collect()
}

/// KVM as the probe saw it.
pub fn kvm(fact: Option<&KvmFact>) -> Check {
    let name = "kvm";
    match fact {
        Some(k) if k.usable => Check::new(name, Level::Ok, k.reason.clone(), None),
        Some(k) => Check::new(
            name,
            Level::Warn,
            if k.reason.contains("TCG") {
                k.reason.clone()
            } else {
                format!("{}; VMs run under TCG (much slower)", k.reason)
            },
            Some(if Path::new("/dev/kvm").exists() {
                "VMs still run under TCG; for KVM, enable (nested) hardware virtualisation for this machine, and if /dev/kvm is not accessible: sudo usermod -aG kvm $USER"
            } else {
                "enable virtualisation in the firmware and load the module: sudo modprobe kvm_intel (or kvm_amd)"
            }),
        ),
        None => Check::new(name, Level::Warn, "not probed", None),
    }
}

/// A device node that must exist and open read-write.
pub fn device(name: &str, path: &Path, without: &str, fix: &str) -> Check {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Check::new(
            name,
            Level::Ok,
            format!("{} opens read-write", path.display()),
            None,
        ),
        Err(e) => Check::new(
            name,
            Level::Warn,
            format!("{}: {e}; {without}", path.display()),
            Some(fix),
        ),
    }
}

/// Below this, building an image will likely fail.
const SPACE_FAIL: u64 = 512 << 20;
/// Below this, warn: a Debian image with PostgreSQL is several hundred MiB.
const SPACE_WARN: u64 = 4 << 30;

/// Free space on the filesystem holding `dir` (or its nearest existing ancestor).
pub fn free_space(name: &str, dir: &Path) -> Check {
    match cove_util::space::free_bytes(dir) {
        Some(free) => {
            let detail = format!("{} free on {}", human_bytes(free), dir.display());
            let fix = Some("free disk space, or point XDG_STATE_HOME / XDG_CACHE_HOME elsewhere");
            if free < SPACE_FAIL {
                Check::new(name, Level::Fail, detail, fix)
            } else if free < SPACE_WARN {
                Check::new(name, Level::Warn, detail, fix)
            } else {
                Check::new(name, Level::Ok, detail, None)
            }
        }
        None => Check::new(
            name,
            Level::Warn,
            format!("cannot read the free space of {}", dir.display()),
            None,
        ),
    }
}

/// Guest RAM belongs on a tmpfs: on a disk the host writes the guest's memory back to it.
fn guest_ram(dir: &Path) -> Check {
    let free = cove_util::space::free_bytes(dir)
        .map_or_else(String::new, |b| format!(", {} free", human_bytes(b)));
    // A start makes the directory: until then, judged by the filesystem it will be on.
    if cove_util::space::is_tmpfs(dir) {
        return Check::new(
            "guest RAM",
            Level::Ok,
            format!("on a tmpfs: {}{free}", dir.display()),
            None,
        );
    }
    Check::new(
        "guest RAM",
        Level::Warn,
        format!(
            "{} is on a disk filesystem: running guests' memory is written back to it, and boots \
             are slower",
            dir.display()
        ),
        Some(
            "set XDG_RUNTIME_DIR to a tmpfs (such as /run/user/$(id -u)), or give the machine a \
             /dev/shm of at least 1 GiB",
        ),
    )
}

fn human_bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else {
        format!("{} MiB", n >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_reports_version_and_tcg() {
        // qemu-system-x86 is installed on the build machines.
        let c = qemu();
        assert_eq!(c.status, Level::Ok, "{c:?}");
        assert!(c.detail.contains("version "), "{}", c.detail);
        assert!(c.detail.contains("tcg"), "{}", c.detail);
    }

    #[test]
    fn qemu_aarch64_and_arm64_packages_are_checked() {
        // qemu-system-arm and arm64 as a dpkg architecture come with scripts/install-deps.
        let c = qemu_aarch64();
        assert_eq!(c.status, Level::Ok, "{c:?}");
        assert!(c.detail.contains("qemu-system-aarch64") && c.detail.contains("tcg"));
        assert_eq!(apt_arm64().status, Level::Ok);
    }

    #[test]
    fn an_enabled_binfmt_handler_names_its_interpreter_and_a_disabled_one_none() {
        let on = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n";
        assert_eq!(
            binfmt_interpreter(on),
            Some("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
        let off = on.replacen("enabled", "disabled", 1);
        assert_eq!(binfmt_interpreter(&off), None);
        assert_eq!(binfmt_interpreter(""), None);
    }

    #[test]
    fn accel_help_is_parsed() {
        let text = "Accelerators supported in QEMU binary:\ntcg\nkvm\n";
        assert_eq!(parse_accel_help(text), vec!["tcg", "kvm"]);
    }

    #[test]
    fn missing_tool_fails_with_the_install_command() {
        let c = tool(
            "frob",
            &["cove-no-such-tool"],
            Level::Fail,
            "sudo apt-get install frob",
        );
        assert_eq!(c.status, Level::Fail);
        assert_eq!(c.fix.as_deref(), Some("sudo apt-get install frob"));
        let c = tool("sh", &["cove-no-such-tool", "sh"], Level::Fail, "x");
        assert_eq!(c.status, Level::Ok);
    }

    #[test]
    fn unusable_kvm_is_a_warning_not_a_failure() {
        let fact = KvmFact {
            usable: false,
            reason: "vCPU did not finish the probe in 1 s".into(),
        };
        let c = kvm(Some(&fact));
        assert_eq!(c.status, Level::Warn);
        assert!(c.detail.contains("TCG"));
        assert!(c.fix.is_some());
    }

    #[test]
    fn device_checks_match_the_host() {
        let c = device("tun", Path::new("/dev/net/tun"), "", "modprobe tun");
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_ok();
        assert_eq!(c.status == Level::Ok, opens);
        let c = device("none", Path::new("/dev/cove-missing"), "", "x");
        assert_eq!(c.status, Level::Warn);
    }

    #[test]
    fn the_sandbox_check_asks_this_qemu_and_names_what_is_missing() {
        // qemu-system-x86 (Debian's, with seccomp) is installed on the build machines.
        let checks = protections(
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            None,
        );
        assert_eq!(checks[0].status, Level::Ok, "{:?}", checks[0]);
        // What cove runs QEMU with under root.
        let dropping = protections(
            "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
            Some(cove_backend::RunAs::for_supervisor(4242)),
        );
        assert_eq!(dropping[0].status, Level::Ok, "{:?}", dropping[0]);
        let refused = protections("on,nonsense=deny", None);
        assert_eq!(refused[0].status, Level::Fail, "{:?}", refused[0]);
        assert!(refused[0].detail.contains("nonsense"), "{:?}", refused[0]);
        assert!(checks.iter().any(|c| c.name == "guest network isolation"));
    }

    #[test]
    fn reachable_metadata_is_a_warning_with_the_fix_and_the_guard_is_ok() {
        for open in [
            MetadataGuard::NotRoot,
            MetadataGuard::CannotApply("no CAP_NET_ADMIN".into()),
        ] {
            let c = metadata_guard(&open);
            assert_eq!(c.status, Level::Warn, "{c:?}");
            assert!(c.detail.starts_with("reachable"), "{c:?}");
            assert!(c.fix.is_some(), "{c:?}");
        }
        for shut in [MetadataGuard::Present, MetadataGuard::Absent] {
            let c = metadata_guard(&shut);
            assert_eq!(c.status, Level::Ok, "{c:?}");
            assert!(c.detail.starts_with("blocked"), "{c:?}");
        }
    }

    #[test]
    fn guest_ram_on_a_disk_filesystem_is_a_warning_with_the_fix() {
        // /proc is no tmpfs, and the directory not made yet is judged by where it will be.
        let c = guest_ram(Path::new("/proc/no-such-dir/cove"));
        assert_eq!(c.status, Level::Warn, "{c:?}");
        assert!(
            c.fix.as_deref().unwrap().contains("XDG_RUNTIME_DIR"),
            "{c:?}"
        );
    }

    #[test]
    fn free_space_uses_nearest_existing_ancestor_and_full_report_serializes() {
        let dir = tempfile::tempdir().unwrap();
        let c = free_space("space", &dir.path().join("not/yet/created"));
        assert!(c.detail.contains("free on"), "{c:?}");
        let report = doctor(&HostFacts {
            kvm: None,
            state_dir: dir.path().join("state"),
            cache_dir: dir.path().join("cache"),
            ram_dir: dir.path().join("run"),
            qemu_sandbox: "on".into(),
            qemu_runs_as: None,
            metadata_guard: MetadataGuard::NotRoot,
            backends: vec![],
            network: Default::default(),
        });
        assert!(report.checks.len() >= 12);
        let json = serde_json::to_value(&report).unwrap();
        assert!(
            json["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "qemu-img")
        );
        assert!(report.to_string().contains("qemu-system-x86_64"));
    }
}
