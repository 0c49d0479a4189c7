//! The QEMU command line for a [`VmSpec`].
//!
//! The argv is a contract with the guest images (the initramfs finds the
//! agent port by name, disks by serial, the root by label), so it is built in
//! one place and snapshot-tested.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cove_backend::{Accel, BackendError, Machine, Memory, UserNet, VmSpec};

/// The virtio-serial port name the guest agent looks for in
/// `/sys/class/virtio-ports/*/name`.
pub use cove_guest::AGENT_PORT_NAME;
/// virtio-blk carries at most 20 bytes of serial.
pub use cove_guest::MAX_SERIAL_LEN as MAX_DISK_SERIAL;
/// The serial of the root disk as the guest sees it in `/sys/block/vdX/serial`.
pub use cove_guest::ROOT_DISK_SERIAL;

const QEMU_BINARY: &str = "qemu-system-x86_64";
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Kernel arguments every cove guest gets, before the image's own.
/// - `console=ttyS0`: the serial port is the console the supervisor logs;
/// - `reboot=t panic=-1`: a panicking or rebooting guest resets at once, and
///   `-no-reboot` turns that into a QEMU exit the supervisor sees;
/// - `tsc=reliable`: under TCG the clocksource watchdog otherwise drops the
///   TSC for jiffies about 30 s after boot.
const BASE_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 tsc=reliable";

/// The QEMU backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// The `qemu-system-x86_64` to run.
    pub binary: PathBuf,
    /// The host's TSC frequency, passed to microvm guests as `tsc_early_khz`:
    /// microvm has neither HPET nor PM timer, so the kernel's calibration
    /// against the PIT fails under TCG and about 1 boot in 5 hangs. `None`
    /// leaves the guest to calibrate (and risk the hang). See [`cove_backend::host::tsc`].
    pub tsc_khz: Option<u64>,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` on `$PATH`.
    pub fn find(tsc_khz: Option<u64>) -> Result<Self, BackendError> {
        Self::find_for(Machine::Microvm, tsc_khz)
    }

    /// Finds the QEMU that emulates `machine` (`qemu-system-aarch64` for `virt`).
    pub fn find_for(machine: Machine, tsc_khz: Option<u64>) -> Result<Self, BackendError> {
        let (binary, package) = Self::binary_for(machine);
        let binary = find_on_path(binary, std::env::var_os("PATH").as_deref())
            .ok_or(BackendError::BinaryNotFound { binary, package })?;
        Ok(Self { binary, tsc_khz })
    }

    /// The QEMU binary that emulates `machine`, and the Debian package that has it.
    pub fn binary_for(machine: Machine) -> (&'static str, &'static str) {
        match machine.arch() {
            cove_backend::Arch::Amd64 => (QEMU_BINARY, QEMU_PACKAGE),
            cove_backend::Arch::Arm64 => (crate::aarch64::BINARY, crate::aarch64::PACKAGE),
        }
    }

    /// The arguments (without the binary) for `spec`.
    pub fn args(&self, spec: &VmSpec) -> Result<Vec<OsString>, BackendError> {
        build_args(spec, self.tsc_khz)
    }
}

impl Qemu {
    /// The command that launches QEMU for `spec`, with its vCPUs paused.
    /// The caller adds stdio and process hygiene and spawns it.
    pub fn command(&self, spec: &VmSpec) -> Result<Command, BackendError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args(spec)?);
        Ok(cmd)
    }
}

use cove_util::path::which_in as find_on_path;

/// `key=value` where value is a path: QEMU's option syntax ends a value at a
/// comma, and `,,` stands for a literal comma.
fn opt_path(prefix: &str, path: &Path) -> OsString {
    let mut out = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Plain strings in option values must not carry a comma (or `=`, which
/// would start a new key); cove's own names never do, so refuse rather than
/// guess an escaping.
fn check_opt_value(what: &str, value: &str) -> Result<(), BackendError> {
    if value.is_empty() || value.contains([',', '=', '\n']) {
        return Err(BackendError::InvalidSpec(format!(
            "{what} {value:?} must be non-empty and contain no ',' '=' or newline"
        )));
    }
    Ok(())
}

fn kernel_cmdline(spec: &VmSpec, tsc_khz: Option<u64>) -> String {
    let mut cmdline = match spec.machine {
        Machine::Virt => crate::aarch64::base_cmdline(),
        Machine::Microvm | Machine::Q35 => BASE_CMDLINE.to_owned(),
    };
    if let (Machine::Microvm, Some(khz)) = (spec.machine, tsc_khz) {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let extra = spec.cmdline_extra.trim();
    if !extra.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    cmdline
}

fn hostfwd(spec: &VmSpec) -> Result<String, BackendError> {
    let mut out = String::new();
    for p in &spec.ports {
        let addr = p.host_addr.as_str();
        // QEMU 7.2's slirp rejects IPv6 host addresses ("Bad host address"),
        // so refuse them here with the fix instead of a QEMU startup failure.
        if !addr.is_empty() && addr.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(BackendError::Unsupported {
                backend: "qemu",
                what: format!("forward host port {} on address {addr:?}", p.host_port),
                hint: "user-mode networking listens on IPv4 addresses only; use 127.0.0.1 \
                       or 0.0.0.0"
                    .into(),
            });
        }
        out.push_str(&format!(
            ",hostfwd=tcp:{addr}:{}-:{}",
            p.host_port, p.guest_port
        ));
    }
    Ok(out)
}

/// TCG's translated-code buffer, bounded (`tb-size`, MiB; QEMU's own default is 1 GiB).
/// The buffer is QEMU memory a guest fills at will: QEMU 7.2 keys translations by virtual
/// address, so every process whose libraries land at new random addresses is translated
/// anew, and 300 `exec`s in a Debian guest grew QEMU's anonymous memory from 119 MiB to
/// 538 MiB, on its way to a gigabyte per VM. When the buffer is full QEMU drops every
/// translation and starts again; 128 MiB holds a whole Debian boot's translations (anonymous
/// memory after boot was the same as with the default), and the stale translations of exited
/// processes are what a flush drops.
const TCG_TB_SIZE_MIB: u32 = 128;

fn build_args(spec: &VmSpec, tsc_khz: Option<u64>) -> Result<Vec<OsString>, BackendError> {
    check_opt_value("VM name", &spec.name)?;
    if spec.cpus == 0 || spec.memory_mib == 0 {
        return Err(BackendError::InvalidSpec(
            "a VM needs at least 1 CPU and 1 MiB of memory".into(),
        ));
    }
    let mut seen = vec![ROOT_DISK_SERIAL];
    for d in &spec.data_disks {
        check_opt_value("disk serial", &d.serial)?;
        if d.serial.len() > MAX_DISK_SERIAL || seen.contains(&d.serial.as_str()) {
            return Err(BackendError::InvalidSpec(format!(
                "disk serial {:?} must be unique, not {ROOT_DISK_SERIAL:?}, and at most \
                 {MAX_DISK_SERIAL} bytes",
                d.serial
            )));
        }
        seen.push(&d.serial);
    }

    // microvm has no PCI: virtio devices sit on virtio-mmio ("-device").
    let bus = match spec.machine {
        Machine::Microvm => "device",
        Machine::Q35 | Machine::Virt => "pci",
    };
    let accel = match spec.machine {
        Machine::Virt => crate::aarch64::accel(spec.accel),
        Machine::Microvm | Machine::Q35 => spec.accel,
    };
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));

    // -S: vCPUs stay paused until the supervisor has connected every socket
    // and sends QMP `cont`, so the console log has the guest's first byte.
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-no-reboot", "-S"]);
    // QEMU's seccomp filter: a guest that takes over QEMU still cannot
    // exec, fork, gain privileges, change scheduling or use syscalls QEMU
    // itself has no use for. Nothing cove runs needs any of them.
    push(&["-sandbox", sandbox(spec.run_as.is_some())]);
    if let Some(id) = spec.run_as {
        // QEMU opens everything on its command line as root, then drops to
        // the uid and gid (and no supplementary groups) before the guest's
        // first instruction; it opens nothing later (a snapshot's state comes
        // and goes over a descriptor passed on QMP, `crate::save`).
        push(&["-runas", &format!("{}:{}", id.uid, id.gid)]);
    }
    push(&["-name", &spec.name]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    push(&["-smp", &spec.cpus.to_string()]);
    match spec.machine {
        // acpi=on: the Debian cloud kernel lacks VIRTIO_MMIO_CMDLINE_DEVICES
        // and finds the virtio-mmio devices only through ACPI.
        // pit=off once the guest is told its TSC frequency (it needs the PIT
        // only to calibrate): the kernel never uses the PIT after boot but
        // leaves it in its reset square-wave mode, and QEMU emulates every
        // edge, waking its main loop 36 times a second for nothing (an idle
        // VM cost 1.0 % of a core with it, 0.58 % without; BENCHMARKS.md).
        // Nothing else is switched off: measured under TCG (cloud kernel,
        // 3 rounds), pic=off saves no CPU time, and rtc=off costs about
        // 2 CPU-seconds per boot.
        Machine::Microvm if tsc_khz.is_some() => push(&["-M", "microvm,acpi=on,pit=off"]),
        Machine::Microvm => push(&["-M", "microvm,acpi=on"]),
        Machine::Q35 => push(&["-M", "q35"]),
        Machine::Virt => push(&crate::aarch64::machine_args(accel)),
    }
    if !spec.shares.is_empty() {
        // vhost-user-fs: virtiofsd reads and writes guest memory itself, so the memory must be
        // shareable (a memfd, unless it already lives in a shared file, see `spec.memory`
        // below); and libvhost-user refuses legacy virtio, which is microvm's virtio-mmio
        // default.
        if spec.memory == Memory::Anonymous {
            push(&[
                "-object",
                &format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    spec.memory_mib
                ),
                "-machine",
                "memory-backend=mem",
            ]);
        }
        if spec.machine == Machine::Microvm {
            push(&["-global", "virtio-mmio.force-legacy=false"]);
        }
    }
    match accel {
        Accel::Kvm if spec.machine == Machine::Virt => push(&["-accel", "kvm"]),
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => {
            // One TCG thread per vCPU when there are several.
            let threads = if spec.cpus > 1 { "thread=multi," } else { "" };
            push(&["-accel", &format!("tcg,{threads}tb-size={TCG_TB_SIZE_MIB}")]);
        }
    }
    if accel == Accel::Tcg && spec.machine != Machine::Virt {
        // The default CPU model plus ARAT ("the APIC timer keeps running in
        // deep C-states"): without it the kernel marks the local APIC timer
        // C3STOP, and with no broadcast timer (microvm has no HPET) it never
        // goes tickless: an idle guest takes 250 timer interrupts a second,
        // 7 % of a host core under TCG; with ARAT about 12 a second. `-cpu max`
        // would carry ARAT too, but costs 0.1-0.3 s of boot and brings nothing
        // these guests use.
        push(&["-cpu", "qemu64,+arat"]);
    }

    let memory_file = match &spec.memory {
        Memory::Anonymous => None,
        Memory::SharedFile(path) => Some((path, "on")),
        Memory::PrivateFile(path) => Some((path, "off")),
    };
    if let Some((path, share)) = memory_file {
        // The machine's RAM from a file (see `cove_backend::Memory`); `-machine` options merge.
        a.push("-object".into());
        let mut object = OsString::from(format!(
            "memory-backend-file,id=mem,size={}M,share={share},",
            spec.memory_mib
        ));
        object.push(opt_path("mem-path=", path));
        a.push(object);
        a.push("-machine".into());
        a.push("memory-backend=mem".into());
    }
    if spec.incoming {
        // The device state comes over QMP `migrate-incoming` (see `crate::save`).
        a.push("-incoming".into());
        a.push("defer".into());
    }

    // Kernel: the uncompressed ELF boots through its PVH entry, skipping the
    // bzImage's self-decompression (about 0.45 s under TCG).
    let kernel = spec.vmlinux.as_deref().unwrap_or(&spec.kernel);
    a.push("-kernel".into());
    a.push(kernel.into());
    if let Some(initrd) = &spec.initrd {
        a.push("-initrd".into());
        a.push(initrd.into());
    }
    a.push("-append".into());
    a.push(kernel_cmdline(spec, tsc_khz).into());

    // Serial console on a listening unix socket; `wait=off` so QEMU starts
    // without a client (the vCPUs are paused anyway).
    a.push("-chardev".into());
    a.push(opt_path(
        "socket,id=console,server=on,wait=off,path=",
        &spec.transports.console,
    ));
    a.push("-serial".into());
    a.push("chardev:console".into());

    // QMP.
    a.push("-chardev".into());
    a.push(opt_path(
        "socket,id=qmp,server=on,wait=off,path=",
        &spec.transports.vmm,
    ));
    a.push("-mon".into());
    a.push("chardev=qmp,mode=control".into());

    // The agent's named virtio-serial port.
    a.push("-chardev".into());
    a.push(opt_path(
        "socket,id=agent,server=on,wait=off,path=",
        &spec.transports.agent,
    ));
    a.push("-device".into());
    a.push(format!("virtio-serial-{bus},id=vser0").into());
    a.push("-device".into());
    a.push(format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}").into());

    // Disks: root first, then data disks; guests find them by label/serial.
    // writeback honours the guest's flushes, so persistent data survives a
    // host crash as far as the guest asked for; discard keeps overlays small.
    // auto-read-only=off: else QEMU reopens a disk read-only by its path when
    // a snapshot's migration releases it, which a QEMU that dropped its
    // privileges may not (`bdrv_inactivate_all() failed`); it keeps the
    // descriptor it opened at start instead.
    let disks = std::iter::once((&spec.root_disk, ROOT_DISK_SERIAL, "root".to_owned())).chain(
        spec.data_disks
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.path, d.serial.as_str(), format!("data{i}"))),
    );
    for (path, serial, id) in disks {
        a.push("-drive".into());
        let mut drive = opt_path("file=", path);
        drive.push(format!(
            ",format=qcow2,if=none,id={id},cache=writeback,discard=unmap,auto-read-only=off"
        ));
        a.push(drive);
        a.push("-device".into());
        a.push(format!("virtio-blk-{bus},drive={id},serial={serial}").into());
    }

    a.push("-netdev".into());
    match &spec.user_net {
        // passt (started by the supervisor) owns the forwards and keeps the guest off the
        // host's loopback; QEMU 7.2's stream netdev speaks its protocol over the inherited
        // socket.
        UserNet::StreamFd(fd) => {
            a.push(format!("stream,id=net0,server=off,addr.type=fd,addr.str={fd}").into())
        }
        // slirp with the port forwards. Its gateway 10.0.2.2 is the host's 127.0.0.1, so
        // this is only for a VM on cove networks, which goes out through them (their nftables
        // rules decide what it reaches): its user-mode NIC is restricted to the forwards.
        UserNet::Builtin => {
            let restrict = if spec.taps.is_empty() {
                ""
            } else {
                ",restrict=on"
            };
            a.push(format!("user,id=net0{restrict}{}", hostfwd(spec)?).into());
        }
    }
    a.push("-device".into());
    a.push(format!("virtio-net-{bus},netdev=net0").into());
    // NICs on cove networks: TAPs cove-net made and put on their bridges.
    for (i, tap) in spec.taps.iter().enumerate() {
        check_opt_value("TAP device name", &tap.ifname)?;
        check_opt_value("MAC address", &tap.mac)?;
        a.push("-netdev".into());
        a.push(
            format!(
                "tap,id=tap{i},ifname={},script=no,downscript=no",
                tap.ifname
            )
            .into(),
        );
        a.push("-device".into());
        a.push(format!("virtio-net-{bus},netdev=tap{i},mac={}", tap.mac).into());
    }

    // Shared folders: one vhost-user-fs device per virtiofsd socket.
    for (i, share) in spec.shares.iter().enumerate() {
        check_opt_value("shared folder tag", &share.tag)?;
        a.push("-chardev".into());
        a.push(opt_path(&format!("socket,id=fs{i},path="), &share.socket));
        a.push("-device".into());
        a.push(format!("vhost-user-fs-{bus},chardev=fs{i},tag={}", share.tag).into());
    }

    // Entropy: sshd and anything else waiting on the random pool stalls without it.
    a.push("-device".into());
    a.push(format!("virtio-rng-{bus}").into());
    Ok(a)
}

/// The `-sandbox` QEMU runs under (`cove doctor` checks the host's QEMU
/// accepts it). `spawn=deny`: QEMU never forks or runs a program (a snapshot's
/// device state goes over a descriptor, see `crate::save`), so a guest that took
/// QEMU over cannot start one either.
///
/// `dropping`: QEMU starts as root and drops to `-runas`, which needs the
/// set*id calls `elevateprivileges=deny` forbids. Once dropped, every uid of the
/// process is unprivileged and no call can raise it again, and `spawn=deny` keeps
/// it from running a setuid program, so allowing them gives a guest nothing.
pub fn sandbox(dropping: bool) -> &'static str {
    if dropping {
        "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
    } else {
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_backend::Transports;
    use cove_backend::{DataDisk, PortForward};
    use std::ffi::OsStr;

    fn spec(machine: Machine, accel: Accel) -> VmSpec {
        VmSpec {
            name: "web".into(),
            cpus: 1,
            memory_mib: 256,
            kernel: "/img/vmlinuz".into(),
            vmlinux: None,
            initrd: Some("/img/initrd.img".into()),
            cmdline_extra: "root=LABEL=cove-root quiet".into(),
            root_disk: "/vms/web/root.qcow2".into(),
            data_disks: vec![],
            ports: vec![],
            machine,
            accel,
            transports: Transports {
                vmm: "/run/cove/web/qmp.sock".into(),
                console: "/run/cove/web/console.sock".into(),
                agent: "/run/cove/web/agent.sock".into(),
            },
            memory: Memory::Anonymous,
            incoming: false,
            shares: vec![],
            taps: vec![],
            user_net: Default::default(),
            run_as: None,
        }
    }

    #[test]
    fn taps_become_nics_after_the_user_mode_one() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.taps = vec![cove_backend::Tap {
            ifname: "cvt1-2".into(),
            mac: "52:56:01:75:01:02".into(),
        }];
        let text = render(&args(&s, None));
        let user = text.find("-netdev user,id=net0,restrict=on").unwrap();
        let tap = text
            .find("-netdev tap,id=tap0,ifname=cvt1-2,script=no,downscript=no")
            .unwrap();
        assert!(user < tap, "{text}");
        assert!(text.contains("-device virtio-net-device,netdev=tap0,mac=52:56:01:75:01:02"));
        s.taps[0].ifname = "x,script=/bin/evil".into();
        let q = Qemu {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            tsc_khz: None,
        };
        assert!(q.args(&s).is_err());
    }

    #[test]
    fn a_stream_user_net_plugs_the_nic_into_passt_and_leaves_the_forwards_to_it() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.ports = vec![PortForward {
            host_addr: "127.0.0.1".into(),
            host_port: 15432,
            guest_port: 5432,
        }];
        s.user_net = UserNet::StreamFd(4);
        let text = render(&args(&s, None));
        assert!(
            text.contains(
                "-netdev stream,id=net0,server=off,addr.type=fd,addr.str=4\n\
                 -device virtio-net-device,netdev=net0\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("hostfwd") && !text.contains("-netdev user"),
            "{text}"
        );
    }

    /// One argument per line, options grouped with their value, for readable snapshots.
    fn render(args: &[OsString]) -> String {
        let mut out = String::new();
        for arg in args {
            let s = arg.to_string_lossy();
            if s.starts_with('-') && !out.is_empty() {
                out.push('\n');
            } else if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&s);
        }
        out
    }

    fn args(spec: &VmSpec, tsc: Option<u64>) -> Vec<OsString> {
        let q = Qemu {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            tsc_khz: tsc,
        };
        q.args(spec).unwrap()
    }

    #[test]
    fn shared_folders_make_memory_shareable_and_virtio_modern() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.shares = vec![cove_backend::SharedDir {
            socket: "/run/cove/web/fs0,x.sock".into(),
            tag: "cove0".into(),
        }];
        let text = render(&args(&s, None));
        assert!(
            text.contains("-object memory-backend-memfd,id=mem,size=256M,share=on"),
            "{text}"
        );
        assert!(text.contains("-machine memory-backend=mem"), "{text}");
        assert!(
            text.contains("-global virtio-mmio.force-legacy=false"),
            "{text}"
        );
        assert!(
            text.contains("-chardev socket,id=fs0,path=/run/cove/web/fs0,,x.sock"),
            "{text}"
        );
        assert!(
            text.contains("-device vhost-user-fs-device,chardev=fs0,tag=cove0"),
            "{text}"
        );
        s.shares[0].tag = "a,b".into();
        let q = Qemu {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            tsc_khz: None,
        };
        assert!(q.args(&s).is_err());
    }

    #[test]
    fn microvm_tcg() {
        let s = spec(Machine::Microvm, Accel::Tcg);
        insta::assert_snapshot!(render(&args(&s, Some(2_995_200))));
    }

    #[test]
    fn microvm_tcg_pvh_smp_with_data_disks_and_ports() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.cpus = 2;
        s.vmlinux = Some("/img/vmlinux".into());
        s.data_disks = vec![
            DataDisk {
                path: "/data/pg,1.qcow2".into(),
                serial: "cove-pgdata".into(),
            },
            DataDisk {
                path: "/data/logs.qcow2".into(),
                serial: "cove-logs".into(),
            },
        ];
        s.ports = vec![
            PortForward {
                host_addr: "127.0.0.1".into(),
                host_port: 15432,
                guest_port: 5432,
            },
            PortForward {
                host_addr: String::new(),
                host_port: 8080,
                guest_port: 80,
            },
        ];
        insta::assert_snapshot!(render(&args(&s, Some(2_995_200))));
    }

    #[test]
    fn virt_is_arm64_with_pci_virtio_and_the_pl011_console() {
        // Asked for KVM on this x86-64 host: an arm64 guest still gets TCG.
        let s = spec(Machine::Virt, Accel::Kvm);
        let text = render(&args(&s, Some(2_995_200)));
        for want in [
            "-M virt\n-cpu cortex-a72\n-accel tcg,tb-size=128\n",
            "-append console=ttyAMA0 panic=-1 root=LABEL=cove-root quiet\n",
            "-device virtio-serial-pci,id=vser0\n",
            "-device virtio-blk-pci,drive=root,serial=cove-root\n",
            "-serial chardev:console\n",
        ] {
            assert!(text.contains(want), "`{want}` not in:\n{text}");
        }
        assert!(!text.contains("tsc") && !text.contains("qemu64"), "{text}");
        assert_eq!(
            Qemu::binary_for(Machine::Virt),
            ("qemu-system-aarch64", "qemu-system-arm")
        );
    }

    #[test]
    fn q35_kvm_with_data_disk_and_port() {
        let mut s = spec(Machine::Q35, Accel::Kvm);
        s.cpus = 4;
        s.memory_mib = 2048;
        s.data_disks = vec![DataDisk {
            path: "/data/pg.qcow2".into(),
            serial: "cove-pgdata".into(),
        }];
        s.ports = vec![PortForward {
            host_addr: "0.0.0.0".into(),
            host_port: 2222,
            guest_port: 22,
        }];
        // q35 calibrates its TSC against the HPET: no tsc_early_khz.
        insta::assert_snapshot!(render(&args(&s, Some(2_995_200))));
    }

    #[test]
    fn restore_maps_the_saved_memory_privately_and_waits_for_state() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.memory = Memory::PrivateFile("/snap/a,b/memory".into());
        s.incoming = true;
        let text = render(&args(&s, Some(2_995_200)));
        assert!(
            text.contains(
                "-object memory-backend-file,id=mem,size=256M,share=off,mem-path=/snap/a,,b/memory\n-machine memory-backend=mem"
            ),
            "{text}"
        );
        assert!(text.contains("-incoming defer"), "{text}");
        s.memory = Memory::SharedFile("/run/web/memory".into());
        s.incoming = false;
        let text = render(&args(&s, Some(2_995_200)));
        assert!(text.contains("share=on,mem-path=/run/web/memory"), "{text}");
        assert!(!text.contains("-incoming"), "{text}");
    }

    #[test]
    fn a_vmm_that_drops_privileges_is_told_to_whom_and_may_do_it() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        let text = render(&args(&s, Some(2_995_200)));
        assert!(!text.contains("-runas"), "{text}");
        assert!(text.contains("elevateprivileges=deny"), "{text}");
        s.run_as = Some(cove_backend::RunAs { uid: 7, gid: 8 });
        let text = render(&args(&s, Some(2_995_200)));
        assert!(text.contains("-runas 7:8\n"), "{text}");
        assert!(
            text.contains("-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_or_reserved_serials_are_refused() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.data_disks = vec![DataDisk {
            path: "/d.qcow2".into(),
            serial: ROOT_DISK_SERIAL.into(),
        }];
        let q = Qemu {
            binary: "/q".into(),
            tsc_khz: None,
        };
        let err = q.args(&s).unwrap_err().to_string();
        assert!(err.contains("unique"), "{err}");
        s.data_disks[0].serial = "a,b".into();
        assert!(q.args(&s).is_err());
    }

    #[test]
    fn ipv6_forwards_are_refused_with_the_fix() {
        let mut s = spec(Machine::Microvm, Accel::Tcg);
        s.ports = vec![PortForward {
            host_addr: "::1".into(),
            host_port: 2222,
            guest_port: 22,
        }];
        let q = Qemu {
            binary: "/q".into(),
            tsc_khz: None,
        };
        let err = q.args(&s).unwrap_err().to_string();
        assert!(err.contains("127.0.0.1"), "{err}");
    }

    #[test]
    fn missing_qemu_names_the_package() {
        assert_eq!(
            find_on_path(QEMU_BINARY, Some(OsStr::new("/nonexistent"))),
            None
        );
        assert_eq!(find_on_path(QEMU_BINARY, None), None);
        // The real one is installed on these machines.
        let found = find_on_path(QEMU_BINARY, Some(OsStr::new("/nonexistent:/usr/bin")));
        assert_eq!(
            found.as_deref(),
            Some(Path::new("/usr/bin/qemu-system-x86_64"))
        );
    }

    #[test]
    fn command_runs_the_found_binary() {
        let q = Qemu::find(None).unwrap();
        let cmd = q.command(&spec(Machine::Microvm, Accel::Tcg)).unwrap();
        assert_eq!(cmd.get_program(), q.binary.as_os_str());
        assert!(cmd.get_args().any(|a| a == "-S"));
    }
}
