//! What cove puts into every root filesystem (its init, the agent, network
//! settings for QEMU user-mode networking) and the tree of the `minimal`
//! image.

use crate::error::{ImageError, Result, io_err};
use crate::manifest::{InitKind, Service};
use crate::util::{self, create_dir_all, set_mode, symlink, write_file};
use std::path::Path;

/// `/sbin/cove-init` before the services are filled in.
pub const COVE_INIT_TEMPLATE: &str = include_str!("init/cove-init.sh");
/// cove-init's fstab, relative to the root filesystem: what it mounts with one
/// `mount -a -T` once /proc and /dev are there (one fork instead of five).
pub const INIT_FSTAB_PATH: &str = "usr/lib/cove/fstab";
/// The content of [`INIT_FSTAB_PATH`].
pub const INIT_FSTAB: &str = "\
sysfs /sys sysfs defaults 0 0
devpts /dev/pts devpts gid=5,mode=620,ptmxmode=666 0 0
tmpfs /dev/shm tmpfs mode=1777 0 0
tmpfs /run tmpfs mode=755 0 0
tmpfs /tmp tmpfs mode=1777 0 0
";
/// Where the agent lives in every image, relative to the root filesystem.
pub fn agent_path() -> &'static str {
    cove_guest::AGENT_PATH.trim_start_matches('/')
}
/// QEMU user-mode networking's DNS server.
pub const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";

/// Quotes `s` for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `/sbin/cove-init` script with `services` started by it.
/// `@CONSOLE@` is the guest architecture's serial console (`ttyS0`, `ttyAMA0`).
pub fn cove_init_script(services: &[Service], arch: cove_guest::Arch) -> String {
    let lines: Vec<String> = services
        .iter()
        .map(|s| {
            format!(
                "run_service {} {} {}",
                shell_quote(&s.name),
                shell_quote(&s.user),
                shell_quote(&s.command)
            )
        })
        .collect();
    cove_guest::render_script(COVE_INIT_TEMPLATE)
        .replace("@CONSOLE@", arch.console())
        .replace("@FSTAB_PATH@", &format!("/{INIT_FSTAB_PATH}"))
        .replace("#COVE_SERVICES#", &lines.join("\n"))
}

/// The hash of what cove puts into a root filesystem for its init (the script
/// and its fstab): an input of every image id.
pub(crate) fn cove_init_sha256(services: &[Service], arch: cove_guest::Arch) -> String {
    util::sha256_bytes((cove_init_script(services, arch) + INIT_FSTAB).as_bytes())
}

/// The systemd unit that keeps the agent running in systemd images.
pub const AGENT_UNIT: &str = "[Unit]
Description=cove guest agent
DefaultDependencies=no
After=local-fs.target

[Service]
ExecStart=@AGENT_PATH@
Restart=always
RestartSec=200ms
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

fn service_unit(s: &Service) -> String {
    format!(
        "[Unit]\nDescription=cove service {name}\nAfter=network.target\n\n[Service]\n\
         User={user}\nExecStart=/bin/sh -c {cmd}\nRestart=always\nRestartSec=1\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        name = s.name,
        user = s.user,
        cmd = shell_quote(&s.command)
    )
}

/// Refuses an agent binary that would not run in the guest: it must be an
/// x86-64 ELF executable with no interpreter (statically linked).
pub fn check_agent(path: &Path, arch: cove_guest::Arch) -> Result<()> {
    let data = std::fs::read(path).map_err(io_err("cannot read the agent binary", path))?;
    let bad = |reason: &str| ImageError::AgentNotElf {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let elf = goblin::elf::Elf::parse(&data).map_err(|e| bad(&e.to_string()))?;
    if elf.header.e_machine != arch.elf_machine() {
        return Err(bad(&format!(
            "it is built for another architecture than the image's {arch} \
             (scripts/build makes target/{}/<profile>/cove-agent)",
            arch.rust_target()
        )));
    }
    if !matches!(
        elf.header.e_type,
        goblin::elf::header::ET_EXEC | goblin::elf::header::ET_DYN
    ) {
        return Err(bad("it is not an executable"));
    }
    if elf.interpreter.is_some() {
        return Err(ImageError::AgentNotStatic(path.to_path_buf()));
    }
    Ok(())
}

/// Installs cove's pieces into a root filesystem tree: the init (or, for
/// systemd, the units), the agent and the network settings.
pub(crate) fn install_cove_files(
    root: &Path,
    hostname: &str,
    init: InitKind,
    agent: Option<&Path>,
    services: &[Service],
    arch: cove_guest::Arch,
) -> Result<()> {
    for d in [
        "sbin",
        "etc",
        "usr/lib/cove",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var/log",
        "root",
    ] {
        create_dir_all(&root.join(d))?;
    }
    set_mode(&root.join("tmp"), 0o1777)?;
    let init_path = root.join("sbin/cove-init");
    let _ = std::fs::remove_file(&init_path);
    write_file(&init_path, cove_init_script(services, arch))?;
    set_mode(&init_path, 0o755)?;
    let fstab = root.join(INIT_FSTAB_PATH);
    let _ = std::fs::remove_file(&fstab);
    write_file(&fstab, INIT_FSTAB)?;
    if let Some(agent) = agent {
        let dest = root.join(agent_path());
        std::fs::copy(agent, &dest).map_err(io_err("cannot copy the agent to", &dest))?;
        set_mode(&dest, 0o755)?;
    }
    // resolv.conf is often a symlink into /run in Debian trees; replace it.
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    write_file(&resolv, RESOLV_CONF)?;
    // Debian bootstrappers copy the build host's name; the guest gets the image's.
    let _ = std::fs::remove_file(root.join("etc/hostname"));
    write_file(&root.join("etc/hostname"), format!("{hostname}\n"))?;
    if init == InitKind::Systemd {
        let units = root.join("etc/systemd/system");
        let wants = units.join("multi-user.target.wants");
        create_dir_all(&wants)?;
        if agent.is_some() {
            write_file(
                &units.join("cove-agent.service"),
                cove_guest::render_script(AGENT_UNIT),
            )?;
            symlink(
                "/etc/systemd/system/cove-agent.service",
                &wants.join("cove-agent.service"),
            )?;
        }
        for s in services {
            let unit = format!("cove-{}.service", s.name);
            write_file(&units.join(&unit), service_unit(s))?;
            symlink(&format!("/etc/systemd/system/{unit}"), &wants.join(&unit))?;
        }
        // Configure eth0 like the initramfs does, for systemd-networkd if present.
        let net = root.join("etc/systemd/network");
        create_dir_all(&net)?;
        write_file(
            &net.join("10-cove.network"),
            "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n",
        )?;
    }
    Ok(())
}

/// The tree of the `minimal` image: busybox and its applets, a few files in
/// /etc, and cove's files.
pub(crate) fn minimal_tree(root: &Path, busybox: &Path, applets: &[String]) -> Result<()> {
    create_dir_all(&root.join("bin"))?;
    let bb = root.join("bin/busybox");
    std::fs::copy(busybox, &bb).map_err(io_err("cannot copy busybox to", &bb))?;
    set_mode(&bb, 0o755)?;
    for applet in applets {
        let depth = applet.matches('/').count();
        symlink(
            &format!("{}bin/busybox", "../".repeat(depth)),
            &root.join(applet),
        )?;
    }
    for d in ["home", "mnt", "var/tmp", "usr/bin", "usr/sbin"] {
        create_dir_all(&root.join(d))?;
    }
    let etc = root.join("etc");
    create_dir_all(&etc)?;
    write_file(
        &etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    write_file(
        &etc.join("group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )?;
    write_file(
        &etc.join("shadow"),
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    )?;
    set_mode(&etc.join("shadow"), 0o600)?;
    write_file(&etc.join("hosts"), "127.0.0.1 localhost\n")?;
    write_file(
        &etc.join("os-release"),
        "NAME=\"cove minimal\"\nID=cove-minimal\nPRETTY_NAME=\"cove minimal (busybox)\"\n",
    )?;
    util::tree_size(root).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_quoted_into_the_init() {
        let s = cove_init_script(
            &[Service {
                name: "web".into(),
                command: "echo 'hi' && httpd -f".into(),
                user: "nobody".into(),
            }],
            cove_guest::Arch::Amd64,
        );
        assert!(
            s.contains(r#"run_service 'web' 'nobody' 'echo '\''hi'\'' && httpd -f'"#),
            "{s}"
        );
        assert!(!s.contains("#COVE_SERVICES#"));
        assert!(s.contains(cove_guest::marker::READY));
        assert!(!s.contains("@READY@") && !s.contains("@AGENT_PATH@"), "{s}");
    }

    #[test]
    fn the_init_mounts_its_fstab_and_every_mount_point_exists_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        install_cove_files(
            root,
            "h",
            InitKind::Cove,
            None,
            &[],
            cove_guest::Arch::Amd64,
        )
        .unwrap();
        let fstab = std::fs::read_to_string(root.join(INIT_FSTAB_PATH)).unwrap();
        assert_eq!(fstab, INIT_FSTAB);
        let script = cove_init_script(&[], cove_guest::Arch::Amd64);
        let mount = format!("mount -a -T /{INIT_FSTAB_PATH}");
        let (before, _) = script
            .split_once(&mount)
            .expect("the init mounts its fstab");
        // A mount point is in the root filesystem cove builds, or on /dev (a
        // fresh devtmpfs) and made by the init before `mount -a`.
        for line in INIT_FSTAB.lines() {
            let point = line.split_whitespace().nth(1).unwrap();
            let made = before
                .lines()
                .any(|l| l.starts_with("mkdir -p ") && l.split_whitespace().any(|w| w == point));
            assert!(made || root.join(&point[1..]).is_dir(), "{point}");
        }
        // The image id changes with the fstab as with the script.
        assert_ne!(
            cove_init_sha256(&[], cove_guest::Arch::Amd64),
            util::sha256_bytes(script.as_bytes())
        );
    }

    #[test]
    fn dynamic_binaries_are_refused_as_agents() {
        // The test binary itself is dynamically linked (gnu target default).
        let me = std::env::current_exe().unwrap();
        match check_agent(&me, cove_guest::Arch::host()) {
            Err(ImageError::AgentNotStatic(_)) => {}
            other => panic!("expected AgentNotStatic, got {other:?}"),
        }
        let err = check_agent(Path::new("/etc/passwd"), cove_guest::Arch::Amd64).unwrap_err();
        assert!(matches!(err, ImageError::AgentNotElf { .. }), "{err}");
    }

    #[test]
    fn a_static_binary_is_accepted_as_agent() {
        // busybox-static is a build-host prerequisite (scripts/install-deps).
        check_agent(Path::new("/bin/busybox"), cove_guest::Arch::Amd64).unwrap();
    }
}
