//! Where the bytes come from: the virtio-serial port (default), a unix socket (tests) or stdio.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cove_proto::{AGENT_PORT_NAME, Decoder};

use crate::mux::Mux;
use crate::{Backoff, log};

const PORTS_DIR: &str = "/sys/class/virtio-ports";

/// Finds the device of the port named [`AGENT_PORT_NAME`], creating its node if /dev lacks it
/// (a minimal guest has no udev).
fn find_port() -> io::Result<Option<PathBuf>> {
    let dir = match std::fs::read_dir(PORTS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for e in dir.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() != AGENT_PORT_NAME {
            continue;
        }
        let dev = Path::new("/dev").join(e.file_name());
        if !dev.exists() {
            let numbers = std::fs::read_to_string(e.path().join("dev"))?;
            let (maj, min) = numbers
                .trim()
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "unreadable {}/dev: {numbers:?}",
                        e.path().display()
                    ))
                })?;
            let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            // SAFETY: mknod reads a valid NUL-terminated path.
            let rc =
                unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(maj, min)) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            log(&format!(
                "created {} ({maj}:{min}) for port {AGENT_PORT_NAME}",
                dev.display()
            ));
        }
        return Ok(Some(dev));
    }
    Ok(None)
}

fn start_session(mux: &Arc<Mux>) {
    // On its own thread: the write blocks while no host is attached, and reading must go on.
    let m = mux.clone();
    let _ = std::thread::Builder::new()
        .name("hello".into())
        .spawn(move || m.start_session_if_idle());
}

/// Reads frames until EOF or a read error; returns whether any byte arrived.
fn read_until_eof(r: &mut dyn Read, mux: &Arc<Mux>, backoff: &mut Backoff) -> bool {
    let mut dec = Decoder::new();
    let mut got = false;
    loop {
        match dec.read_from(r) {
            Ok(0) => return got,
            Ok(_) => {
                got = true;
                backoff.reset();
                loop {
                    match dec.next_frame() {
                        Ok(Some(f)) => mux.handle(f),
                        Ok(None) => break,
                        Err(e) => {
                            log(&format!(
                                "byte stream out of sync ({e}); starting a new session (normal when the host reconnects)"
                            ));
                            mux.restart_session();
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log(&format!("read failed: {e}"));
                return got;
            }
        }
    }
}

/// Serves the virtio port forever. The port is opened once: reopening it loses later host
/// connections. EOF means "no host attached": reset, back off and read again.
pub fn serve_device(path: Option<String>, allow_poweroff: bool) {
    let mut backoff = Backoff::new();
    let mut warned = false;
    let dev = loop {
        let found = match &path {
            Some(p) => Ok(Some(PathBuf::from(p))),
            None => find_port(),
        };
        match found {
            Ok(Some(d)) => break d,
            Ok(None) if !warned => {
                log(&format!(
                    "waiting for virtio port {AGENT_PORT_NAME} in {PORTS_DIR} (needs CONFIG_VIRTIO_CONSOLE and a virtserialport named {AGENT_PORT_NAME})"
                ));
                warned = true;
            }
            Ok(None) => {}
            Err(e) => log(&format!("looking for the agent port: {e}")),
        }
        backoff.wait();
    };
    let file = loop {
        match OpenOptions::new().read(true).write(true).open(&dev) {
            Ok(f) => break f,
            Err(e) => {
                log(&format!("cannot open {}: {e}; retrying", dev.display()));
                backoff.wait();
            }
        }
    };
    let writer = match file.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log(&format!("cannot duplicate the port descriptor: {e}"));
            std::process::exit(1);
        }
    };
    let mux = Mux::new(Box::new(writer), allow_poweroff);
    log(&format!("ready on {}", dev.display()));
    start_session(&mux);
    let mut reader: File = file;
    let mut attached = true;
    loop {
        if read_until_eof(&mut reader, &mux, &mut backoff) {
            attached = true;
        }
        if attached {
            log("host went away; waiting for it to come back");
            mux.host_gone();
            attached = false;
        }
        backoff.wait();
    }
}

/// Connects to a unix socket (the host side listens, as QEMU's chardev does) and reconnects
/// whenever it closes.
pub fn serve_unix(path: &str, allow_poweroff: bool) {
    let mux = Mux::new(Box::new(io::sink()), allow_poweroff);
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        let conn = match UnixStream::connect(path) {
            Ok(c) => c,
            Err(_) => {
                backoff.wait();
                continue;
            }
        };
        let Ok(writer) = conn.try_clone() else {
            backoff.wait();
            continue;
        };
        mux.set_writer(Box::new(writer));
        if first {
            log(&format!("ready on unix:{path}"));
            first = false;
        }
        start_session(&mux);
        let mut r = conn;
        read_until_eof(&mut r, &mux, &mut backoff);
        log("host connection closed; reconnecting");
        mux.host_gone();
        mux.set_writer(Box::new(io::sink()));
        backoff.wait();
    }
}

/// Serves stdin/stdout until EOF.
pub fn serve_stdio(allow_poweroff: bool) {
    let mux = Mux::new(Box::new(io::stdout()), allow_poweroff);
    log("ready on stdio");
    start_session(&mux);
    let mut backoff = Backoff::new();
    read_until_eof(&mut io::stdin().lock(), &mux, &mut backoff);
    mux.host_gone();
}
