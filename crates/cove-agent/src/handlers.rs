//! One function per request kind; each runs on its stream's own (pooled) thread.

use cove_proto::{ErrorKind, ErrorMsg, FileKind, FileMeta, MsgError, OpenRequest, StreamMsg};

use crate::mux::AgentStream;

pub fn run(stream: AgentStream, req: Result<OpenRequest, MsgError>) {
    let req = match req {
        Ok(r) => r,
        Err(e) => return stream.fail(ErrorMsg::new(ErrorKind::InvalidRequest, e.to_string())),
    };
    match req {
        OpenRequest::Exec(r) => crate::exec::run(stream, r),
        OpenRequest::FileGet { path } => crate::files::get(stream, &path),
        OpenRequest::FilePut(r) => crate::files::put(stream, r),
        OpenRequest::Stat { path } => stat(stream, &path),
        OpenRequest::Ps => crate::procs::ps(stream),
        OpenRequest::Shutdown { reboot } => shutdown(stream, reboot),
        OpenRequest::Fixup(r) => crate::fixup::run(stream, r),
        OpenRequest::MoveNics { nics } => crate::nic::run(stream, nics),
        // ptrace binds a tracee to the thread that traces it, and the kernel detaches what a
        // tracer leaves only when that thread ends: a trace gets a thread of its own rather
        // than a pooled one that lives on.
        OpenRequest::Trace(r) => {
            let traced = std::thread::Builder::new()
                .name("trace".into())
                .spawn(move || crate::trace::run(stream, r));
            match traced {
                Ok(t) => {
                    let _ = t.join();
                }
                Err(e) => crate::log(&format!("cannot start a thread for a trace: {e}")),
            }
        }
        OpenRequest::Ldd { path } => crate::ldd::run(stream, &path),
    }
}

pub fn meta_of(md: &std::fs::Metadata) -> FileMeta {
    use std::os::unix::fs::MetadataExt;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    FileMeta {
        kind,
        size: md.len(),
        mode: md.mode() & 0o7777,
        mtime: md.mtime(),
    }
}

fn stat(stream: AgentStream, path: &str) {
    let meta = match std::fs::metadata(path) {
        Ok(md) => Some(meta_of(&md)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return stream.fail(ErrorMsg::from_io(&format!("stat {path}"), &e)),
    };
    let s = stream.sender();
    if s.msg(&StreamMsg::Started { pid: None }).is_ok() && s.msg(&StreamMsg::Stat { meta }).is_ok()
    {
        stream.finish();
    }
}

fn shutdown(stream: AgentStream, reboot: bool) {
    if !stream.sender().allow_poweroff() {
        return stream.fail(ErrorMsg::new(
            ErrorKind::Unsupported,
            "this agent was started with --no-poweroff; stop the VM from the host instead",
        ));
    }
    stream.answer(Ok(()));
    crate::log(if reboot {
        "rebooting at the host's request"
    } else {
        "powering off at the host's request"
    });
    crate::poweroff::stop_everything();
    // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
    let err = unsafe {
        libc::sync();
        libc::reboot(if reboot {
            libc::RB_AUTOBOOT
        } else {
            libc::RB_POWER_OFF
        })
    };
    crate::log(&format!(
        "reboot(2) failed ({err}): {}",
        std::io::Error::last_os_error()
    ));
}
