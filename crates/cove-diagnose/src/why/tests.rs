//! Each cause with a realistic console excerpt (kernel, busybox, kmod and PostgreSQL wording).

use super::*;
use crate::kernel::KernelConfig;

const BOOT_HEAD: &str = "\
[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)
[    0.000000] Command line: console=ttyS0 root=/dev/vda rw
[    0.000000] x86/fpu: x87 FPU will use FXSAVE
";

fn facts() -> VmFacts {
    VmFacts {
        vmm_exit: Some(VmmExit {
            code: Some(0),
            signal: None,
            stderr_tail: None,
        }),
        ..VmFacts::default()
    }
}

fn kinds(d: &Diagnosis) -> Vec<&'static str> {
    d.findings
        .iter()
        .map(|f| match f.cause {
            Cause::TscCalibrationStall => "tsc",
            Cause::MissingSyscall { .. } => "syscall",
            Cause::ModuleLoadFailed { .. } => "module",
            Cause::RootNotMounted { .. } => "root",
            Cause::InitFatal { .. } => "init-fatal",
            Cause::NoWorkingInit => "no-init",
            Cause::InitExited { .. } => "init-exited",
            Cause::OutOfMemory { .. } => "oom",
            Cause::KernelPanic { .. } => "panic",
            Cause::AgentNeverAnswered { .. } => "agent",
            Cause::VmmFailed { .. } => "vmm",
        })
        .collect()
}

#[test]
fn root_fs_panic_names_missing_virtio_blk_from_config() {
    let log = format!(
        "{BOOT_HEAD}[    1.912345] VFS: Cannot open root device \"vda\" or unknown-block(0,0): error -6
[    1.912890] Please append a correct \"root=\" boot option; here are the available partitions:
[    1.913400] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
[    1.913900] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
"
    );
    let mut f = facts();
    f.kernel_config = Some(KernelConfig::parse(
        "CONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=y\n",
    ));
    f.initramfs_modules = Some(vec!["virtio".into(), "virtio_ring".into()]);
    let d = analyze(&log, &f);
    assert_eq!(kinds(&d), vec!["root"], "{d}");
    let root = d.primary().unwrap();
    assert_eq!(
        root.cause,
        Cause::RootNotMounted {
            missing: vec!["virtio_blk".into()]
        }
    );
    assert!(
        root.summary
            .contains("virtio_blk.ko is not in the initramfs"),
        "{}",
        root.summary
    );
    let lines: Vec<usize> = root.evidence.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5, 6]);
    assert!(d.to_string().contains("Unable to mount root fs"));
}

#[test]
fn ext4_unknown_filesystem_is_named() {
    let log = format!(
        "{BOOT_HEAD}[    1.20] Run /init as init process
cove-init: loading modules
[    1.40] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks (1.07 GB/1.00 GiB)
cove-init: mounting root
mount: mounting /dev/vda on /newroot failed: No such device
[    1.50] EXT4-fs: unknown filesystem type 'ext4'
cove-init: FATAL: cannot mount root /dev/vda
[    1.52] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100
"
    );
    let d = analyze(&log, &facts());
    assert_eq!(kinds(&d), vec!["root", "init-exited"], "{d}");
    assert_eq!(
        d.findings[0].cause,
        Cause::RootNotMounted {
            missing: vec!["ext4".into()]
        }
    );
    assert_eq!(d.stage, Stage::MountingRoot);
    assert_eq!(
        d.findings[1].cause,
        Cause::InitExited {
            exit_status: Some(1),
            signal: None
        }
    );
}

#[test]
fn init_exit_code_and_last_words() {
    let log = format!(
        "{BOOT_HEAD}[    1.20] Run /init as init process
/init: line 12: /sbin/foo: not found
[    1.31] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00
"
    );
    let d = analyze(&log, &facts());
    assert_eq!(kinds(&d), vec!["init-exited"]);
    let f = &d.findings[0];
    assert_eq!(
        f.cause,
        Cause::InitExited {
            exit_status: Some(127),
            signal: None
        }
    );
    assert_eq!(f.evidence[0].text, "/init: line 12: /sbin/foo: not found");
    // Killed by SIGSEGV.
    let d = analyze(
        "[ 1.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n",
        &facts(),
    );
    assert_eq!(
        d.findings[0].cause,
        Cause::InitExited {
            exit_status: None,
            signal: Some(11)
        }
    );
}

#[test]
fn no_working_init_explains_enoent() {
    let log = format!(
        "{BOOT_HEAD}[    1.20] Run /init as init process
[    1.21] Failed to execute /init (error -2)
[    1.22] Run /sbin/init as init process
[    1.23] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.
"
    );
    let d = analyze(&log, &facts());
    assert_eq!(kinds(&d), vec!["no-init"], "{d}");
    assert!(d.findings[0].fix.iter().any(|f| f.contains("interpreter")));
    assert_eq!(d.findings[0].evidence.len(), 2);
}

#[test]
fn module_failures_busybox_kmod_and_unknown_symbol() {
    let log = format!(
        "{BOOT_HEAD}cove-init: loading modules
insmod: can't insert '/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/block/virtio_blk.ko': unknown symbol in module, or unknown parameter
[    1.41] virtio_blk: Unknown symbol virtio_check_driver_offered_feature (err -2)
insmod: ERROR: could not insert module /lib/modules/6.1.0-56-cloud-amd64/kernel/fs/ext4/ext4.ko: Invalid module format
"
    );
    let d = analyze(&log, &facts());
    assert_eq!(kinds(&d), vec!["module", "module"], "{d}");
    match &d.findings[0].cause {
        Cause::ModuleLoadFailed { module, reason } => {
            assert_eq!(module, "virtio_blk");
            assert!(reason.contains("unknown symbol"), "{reason}");
        }
        c => panic!("{c:?}"),
    }
    assert_eq!(d.findings[0].evidence.len(), 2);
    assert!(
        matches!(&d.findings[1].cause, Cause::ModuleLoadFailed { module, .. } if module == "ext4")
    );
}

#[test]
fn agent_port_never_opened_names_virtio_console() {
    let log = format!(
        "{BOOT_HEAD}[    1.20] Run /init as init process
cove-init: loading modules
cove-init: mounting root
[    1.60] EXT4-fs (vda): mounted filesystem with ordered data mode. Quota mode: none.
cove-init: ready
"
    );
    let mut f = facts();
    f.vmm_exit = None;
    let d = analyze(&log, &f);
    assert_eq!(kinds(&d), vec!["agent"]);
    assert_eq!(
        d.findings[0].cause,
        Cause::AgentNeverAnswered {
            option: Some("VIRTIO_CONSOLE".into()),
            module: Some("virtio_console".into())
        }
    );
    assert!(
        d.findings[0]
            .fix
            .contains(&"CONFIG_VIRTIO_CONSOLE=y".to_string())
    );

    // With the config known: =m and the module absent from the initramfs names the module.
    f.kernel_config = Some(KernelConfig::parse("CONFIG_VIRTIO_CONSOLE=m\n"));
    f.initramfs_modules = Some(vec!["virtio_blk".into()]);
    let d = analyze(&log, &f);
    assert_eq!(
        d.findings[0].cause,
        Cause::AgentNeverAnswered {
            option: None,
            module: Some("virtio_console".into())
        }
    );
    // The agent answered: nothing to say.
    f.agent_answered = true;
    assert!(analyze(&log, &f).findings.is_empty());
}

#[test]
fn agent_ready_but_unanswered_blames_the_host_side() {
    let log = "cove-init: ready\ncove-agent: ready on /dev/vport0p1\n";
    let d = analyze(log, &facts());
    assert_eq!(d.stage, Stage::AgentReady);
    assert!(d.findings[0].summary.contains("host"));
}

#[test]
fn out_of_memory_names_the_victim() {
    let log = format!(
        "{BOOT_HEAD}cove-init: ready
[   35.10] postgres invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0
[   35.20] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=postgres,pid=212,uid=104
[   35.21] Out of memory: Killed process 212 (postgres) total-vm:215344kB, anon-rss:98304kB, file-rss:0kB, shmem-rss:1024kB, UID:104 pgtables:300kB oom_score_adj:0
"
    );
    let mut f = facts();
    f.agent_answered = true;
    let d = analyze(&log, &f);
    assert_eq!(kinds(&d), vec!["oom"]);
    assert_eq!(
        d.findings[0].cause,
        Cause::OutOfMemory {
            victim: Some("postgres".into())
        }
    );
    assert_eq!(d.findings[0].evidence.len(), 3);
}

/// Seen on a real 64M microvm boot: the OOM panic reason is "System is deadlocked on memory".
#[test]
fn oom_deadlock_panic_belongs_to_the_oom_finding() {
    let log = "\
[    2.172771] swapper/0 invoked oom-killer: gfp_mask=0x40cc0(GFP_KERNEL|__GFP_COMP), order=0, oom_score_adj=0
[    2.784967] Out of memory and no killable processes...
[    2.785296] Kernel panic - not syncing: System is deadlocked on memory
";
    let mut f = facts();
    f.name = Some("tiny".into());
    f.memory_mib = Some(64);
    let d = analyze(log, &f);
    assert_eq!(kinds(&d), vec!["oom"], "{d}");
    assert_eq!(d.findings[0].evidence.len(), 3);
    assert_eq!(
        d.findings[0].fix,
        vec!["give the VM more memory: `cove set tiny --memory 256M` (then restart it)"]
    );
}

#[test]
fn tsc_stall_on_microvm() {
    let log = format!(
        "{BOOT_HEAD}[    0.010000] tsc: Fast TSC calibration failed
[    0.020000] tsc: Unable to calibrate against PIT
[    0.030000] tsc: No reference (HPET/PMTIMER) available
[    0.040000] tsc: Marking TSC unstable due to could not calculate TSC khz
"
    );
    let mut f = facts();
    f.vmm_exit = None;
    f.machine = Some("microvm".into());
    let d = analyze(&log, &f);
    assert_eq!(kinds(&d), vec!["tsc"], "{d}");
    assert!(d.findings[0].fix[0].contains("tsc_early_khz="));
    assert_eq!(d.findings[0].evidence[0].line, 7);
    // Booting on past the message is not a stall.
    let later = format!(
        "{log}[    0.5] Run /init as init process\ncove-init: loading modules\ncove-init: ready\n"
    );
    let mut f2 = facts();
    f2.agent_answered = true;
    assert!(analyze(&later, &f2).findings.is_empty());
}

/// Seed 000: PostgreSQL's initdb died with ENOSYS from shmget.
#[test]
fn seed_000_enosys_shmget_maps_to_sysvipc() {
    let log = "\
cove-init: ready
running bootstrap script ... 2026-01-01 10:00:00.000 UTC [212] FATAL:  could not create shared memory segment: Function not implemented
2026-01-01 10:00:00.000 UTC [212] DETAIL:  Failed system call was shmget(key=2, size=56, 03600).
child process exited with exit code 1
initdb: removing data directory \"/var/lib/postgresql/data\"
";
    let mut f = facts();
    f.agent_answered = true;
    let d = analyze(log, &f);
    assert_eq!(kinds(&d), vec!["syscall"], "{d}");
    let finding = &d.findings[0];
    assert_eq!(
        finding.cause,
        Cause::MissingSyscall {
            syscall: "shmget".into(),
            options: vec!["SYSVIPC".into()]
        }
    );
    assert_eq!(finding.fix, vec!["CONFIG_SYSVIPC=y"]);
    let lines: Vec<usize> = finding.evidence.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3]);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["findings"][0]["cause"]["kind"], "missing-syscall");
}

#[test]
fn unexplained_panic_is_reported_with_its_reason() {
    let log =
        format!("{BOOT_HEAD}[    0.9] Kernel panic - not syncing: Fatal exception in interrupt\n");
    let d = analyze(&log, &facts());
    assert_eq!(kinds(&d), vec!["panic"]);
    assert!(
        d.findings[0]
            .summary
            .contains("Fatal exception in interrupt")
    );
}

#[test]
fn vmm_failure_without_output() {
    let mut f = facts();
    f.vmm_exit = Some(VmmExit {
        code: Some(1),
        signal: None,
        stderr_tail: Some("qemu-system-x86_64: -drive file=/x.img: Could not open '/x.img': No such file or directory".into()),
    });
    let d = analyze("", &f);
    assert_eq!(d.stage, Stage::NoOutput);
    assert_eq!(kinds(&d), vec!["vmm"]);
    assert!(d.findings[0].summary.contains("Could not open"));
}

/// Regression (issue 10, finding 9): guest text reached the terminal raw in `cove why`
/// summaries and fixes; escape sequences and control characters are now shown, not sent.
#[test]
fn guest_escape_sequences_are_shown_not_sent_to_the_terminal() {
    let log = format!(
        "{BOOT_HEAD}[    1.20] Run /init as init process
[    2.00] Kernel panic - not syncing: \x1b]0;pwned\x07\x1b[2JAttempted to kill init! exitcode=0x00000100
"
    );
    let d = analyze(&log, &facts());
    let shown = d.to_string();
    assert!(
        !shown.contains('\x1b') && !shown.contains('\x07'),
        "{shown:?}"
    );
    assert!(shown.contains("\\x1b]0;pwned\\x07\\x1b[2J"), "{shown}");
}
