//! Choosing between KVM and TCG by what actually works.
//!
//! `/dev/kvm` existing and opening proves little: under some nested setups a
//! vCPU enters KVM_RUN and never comes back. So KVM is chosen only after a
//! vCPU has run real code at hardware speed: a child process (which can be
//! killed if KVM_RUN hangs) creates a VM with one page of real-mode code that
//! counts down [`LOOP_COUNT`] iterations, then does
//! `mov $42,%al; out %al,$0x10; hlt`; the port write and the halt must come
//! within [`PROBE_TIMEOUT`].
//!
//! Why the loop: on the build machines `/dev/kvm` is a software KVM
//! (`kvm_pvm`) whose instruction emulator runs a bare `out; hlt` in 0.2 ms,
//! so a vCPU seems to work, while real guests never boot. Emulated, one
//! iteration takes about 1.1 µs (10 million: 11 s); in hardware, about a
//! nanosecond (10 ms).
//!
//! The child is this same executable run with [`PROBE_ARG`]; the program's
//! `main` must start with [`run_probe_child_if_asked`].

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Accel;
use serde::{Deserialize, Serialize};

/// The hidden first argument that turns the program into the probe child.
pub const PROBE_ARG: &str = "__cove-kvm-probe";
/// A working KVM runs the probe in about 10 ms; a second is generous even on
/// a loaded host, and far below what an emulated vCPU needs (11 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Environment override: `tcg` or `kvm` skips the probe.
pub const ENV_OVERRIDE: &str = "COVE_ACCEL";

/// Iterations of the probe's countdown loop (see the module docs).
pub const LOOP_COUNT: u32 = 10_000_000;
const PROBE_PORT: u16 = 0x10;
const PROBE_VALUE: u8 = 42;
const CODE_ADDR: u64 = 0x1000;
/// The line the child prints when the vCPU did what it was told.
const CHILD_OK: &str = "kvm-probe-ok";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    /// Why, in words fit for `cove doctor` and the supervisor log.
    pub reason: String,
}

impl AccelChoice {
    fn tcg(reason: impl Into<String>) -> Self {
        Self {
            accel: Accel::Tcg,
            reason: reason.into(),
        }
    }
}

/// The file under the cache directory that remembers the probe's verdict.
pub const CACHE_FILE: &str = "accel-probe.json";

/// The accelerator to use: `$COVE_ACCEL` if set, else the probe's result for
/// this boot of the host (cached in [`CACHE_FILE`] under `cache_dir`), else a
/// fresh probe run with this executable as the child.
pub fn probe(cache_dir: &Path) -> AccelChoice {
    if let Some(choice) = env_override() {
        return choice;
    }
    let cache = cache_dir.join(CACHE_FILE);
    if let Some(choice) = super::cache::load::<AccelChoice>(&cache) {
        return choice;
    }
    let choice = match std::env::current_exe() {
        Ok(exe) => probe_uncached(&exe),
        Err(e) => AccelChoice::tcg(format!(
            "cannot find this program to run the KVM probe ({e}); using TCG"
        )),
    };
    super::cache::store(&cache, &choice);
    choice
}

fn env_override() -> Option<AccelChoice> {
    let value = std::env::var(ENV_OVERRIDE).ok()?;
    match value.trim().parse::<Accel>() {
        Ok(accel) => Some(AccelChoice {
            accel,
            reason: format!("{ENV_OVERRIDE}={accel} is set"),
        }),
        Err(_) => {
            tracing::warn!("{ENV_OVERRIDE}={value:?} is neither `kvm` nor `tcg`; ignoring it");
            None
        }
    }
}

/// Runs the probe now: `exe PROBE_ARG` in a child, killed after
/// [`PROBE_TIMEOUT`]. `exe` must call [`run_probe_child_if_asked`] first thing.
pub fn probe_uncached(exe: &Path) -> AccelChoice {
    // Cheap checks first, each with its own reason.
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return AccelChoice::tcg(format!("cannot open /dev/kvm ({e}); using TCG"));
    }
    let mut child = match Command::new(exe)
        .arg(PROBE_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return AccelChoice::tcg(format!(
                "cannot start the KVM probe {} ({e}); using TCG",
                exe.display()
            ));
        }
    };
    let pid = child.id();
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    // A thread waits for the child so this thread can wait with a timeout.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut err);
        }
        let _ = tx.send((child.wait(), out, err));
    });
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok((Ok(status), out, _)) if status.success() && out.trim() == CHILD_OK => AccelChoice {
            accel: Accel::Kvm,
            reason: "a KVM vCPU ran the probe code".into(),
        },
        Ok((status, _, err)) => {
            let detail = err.trim();
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            AccelChoice::tcg(format!(
                "KVM probe failed ({status}{}{detail}); using TCG",
                if detail.is_empty() { "" } else { ": " }
            ))
        }
        Err(_) => {
            // SAFETY: kill has no memory effects; the child is not reaped yet
            // (its waiting thread has not returned), so the pid is still ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            // Reap it if it dies; a task stuck uninterruptibly in the kernel
            // is left to its thread rather than blocking a VM start.
            let _ = rx.recv_timeout(PROBE_TIMEOUT);
            AccelChoice::tcg("KVM opens but its vCPUs make no progress; using TCG")
        }
    }
}

/// Runs the probe child and exits if this process was started as one
/// (`argv[1] == PROBE_ARG`); returns otherwise. Call it first in `main`.
pub fn run_probe_child_if_asked() {
    if std::env::args_os().nth(1).is_some_and(|a| a == PROBE_ARG) {
        run_probe_child()
    }
}

/// The probe child: runs the vCPU, prints [`CHILD_OK`] and exits 0 when it
/// behaved, else prints the cause on stderr and exits 1. May hang in KVM_RUN;
/// the parent kills it then.
pub fn run_probe_child() -> ! {
    match run_vcpu() {
        Ok(()) => {
            println!("{CHILD_OK}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

fn run_vcpu() -> Result<(), String> {
    use kvm_ioctls::{Kvm, VcpuExit};

    // 16-bit real mode:
    //   mov $LOOP_COUNT, %ecx    66 b9 imm32
    // 1: dec %ecx                66 49
    //   jnz 1b                   75 fc
    //   mov $42, %al             b0 2a
    //   out %al, $0x10           e6 10
    //   hlt                      f4
    let mut code = vec![0x66, 0xb9];
    code.extend_from_slice(&LOOP_COUNT.to_le_bytes());
    code.extend_from_slice(&[0x66, 0x49, 0x75, 0xfc]);
    code.extend_from_slice(&[0xb0, PROBE_VALUE, 0xe6, PROBE_PORT as u8, 0xf4]);
    let page = GuestPage::new()?;
    page.write(&code);

    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: CODE_ADDR,
        memory_size: GuestPage::SIZE as u64,
        userspace_addr: page.addr(),
        flags: 0,
    };
    // SAFETY: the region points to `page`, a private anonymous mapping that
    // outlives `vm` (declared before it, so dropped after it).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;

    // Real mode at CS:IP = 0:0x1000.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_ADDR,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

    let mut saw_out = false;
    loop {
        match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::IoOut(PROBE_PORT, data) if data.first() == Some(&PROBE_VALUE) => {
                saw_out = true
            }
            VcpuExit::Hlt if saw_out => break,
            other => return Err(format!("unexpected vCPU exit {other:?}")),
        }
    }
    // The loop really ran to its end.
    let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    if regs.rcx & 0xffff_ffff != 0 {
        return Err(format!("the probe loop stopped at ecx={:#x}", regs.rcx));
    }
    Ok(())
}

/// One page of anonymous memory for the guest. Hand-written (a few lines of
/// mmap) rather than pulling in vm-memory for a single page.
struct GuestPage(*mut libc::c_void);

impl GuestPage {
    const SIZE: usize = 4096;

    fn new() -> Result<Self, String> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Self(ptr))
    }

    fn write(&self, bytes: &[u8]) {
        assert!(bytes.len() <= Self::SIZE);
        // SAFETY: the mapping is SIZE bytes, writable, and bytes fits in it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.0.cast::<u8>(), bytes.len()) }
    }

    fn addr(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // SAFETY: self.0 is the start of a SIZE-byte mapping made in new().
        unsafe { libc::munmap(self.0, Self::SIZE) };
    }
}
