//! A failed boot or a crash judged by the same rules as `cove why`: the supervisor reads the
//! console log and its own facts into [`cove_diagnose::why::analyze`], so a failed `start`
//! prints the cause `why` would name ("the guest ran out of memory"), not only the symptom
//! ("the agent never answered").

use super::{Phase, Shared};
use cove_diagnose::why::{self, Diagnosis, VmFacts, VmmExit};
use cove_state::Store;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// How much of the end of the console log is analysed: the cause of a failed boot is in its
/// last lines, and a guest must not make the supervisor read without bound.
const WINDOW: u64 = 1 << 20;

/// The diagnosis of the VM as it is now, `status` being the VMM's exit when known.
pub fn diagnose(shared: &Shared, status: Option<&ExitStatus>) -> Diagnosis {
    let vm = shared.paths.vm(&shared.name);
    let text = read_tail(&vm.console_log(), WINDOW);
    let memory_mib = Store::open(&shared.paths)
        .and_then(|s| s.get_vm(&shared.name))
        .ok()
        .map(|r| r.memory_mib);
    let facts = VmFacts {
        name: Some(shared.name.clone()),
        memory_mib,
        vmm_exit: status.map(|s| VmmExit {
            code: s.code(),
            signal: s.signal(),
            stderr_tail: None,
        }),
        agent_answered: !matches!(*shared.phase.borrow(), Phase::Booting),
        machine: Some(shared.machine.to_string()),
        cmdline: std::fs::read_to_string(vm.vmm_cmdline()).ok(),
        ..VmFacts::default()
    };
    why::analyze(&text, &facts)
}

fn read_tail(path: &Path, window: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(window);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(window).read_to_end(&mut buf).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    // The first line of a window that starts mid-file may be cut: drop it.
    match (start > 0, text.split_once('\n')) {
        (true, Some((_, rest))) => rest.to_owned(),
        _ => text.into_owned(),
    }
}
