//! cove-agent: the guest side of `cove exec/cp/ps/shell`.
//!
//! It opens the virtio-serial port `org.cove.agent` once, keeps it for its whole life, and serves
//! the cove-proto protocol on it. Logs go to stderr (the init sends them to the console).

mod exec;
mod files;
mod fixup;
mod handlers;
mod ldd;
mod mux;
mod nic;
mod pid1;
mod pool;
mod poweroff;
mod procs;
mod spawn;
mod trace;
mod transport;
mod users;

use std::time::Duration;

/// One log line on stderr, prefixed so it stands out in a console log.
pub fn log(msg: &str) {
    eprintln!("cove-agent: {msg}");
}

const USAGE: &str =
    "usage: cove-agent [--port-path DEV | --connect-unix SOCKET | --stdio] [--no-poweroff | --allow-poweroff]

  (default)            find the virtio-serial port named org.cove.agent in /sys/class/virtio-ports
  --port-path DEV      use this character device
  --connect-unix PATH  connect to a unix socket (host-side tests); reconnects when it closes
  --stdio              speak on stdin/stdout; exit at EOF
  --no-poweroff        refuse Shutdown requests
  --allow-poweroff     honour Shutdown requests also with --connect-unix/--stdio (by default only
                       the virtio-serial modes do: those two run on development hosts, where a
                       Shutdown would stop every process and power the machine off)";

enum Mode {
    Virtio(Option<String>),
    Unix(String),
    Stdio,
}

fn main() {
    let mut mode = Mode::Virtio(None);
    let mut poweroff: Option<bool> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port-path" => mode = Mode::Virtio(args.next()),
            "--connect-unix" => match args.next() {
                Some(p) => mode = Mode::Unix(p),
                None => usage_exit(),
            },
            "--stdio" => mode = Mode::Stdio,
            "--no-poweroff" => poweroff = Some(false),
            "--allow-poweroff" => poweroff = Some(true),
            "--version" => {
                println!(
                    "cove-agent {} (protocol {})",
                    env!("CARGO_PKG_VERSION"),
                    cove_proto::PROTOCOL_VERSION
                );
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => usage_exit(),
        }
    }
    let allow_poweroff = poweroff.unwrap_or(matches!(mode, Mode::Virtio(_)));
    pid1::setup_if_init();
    match mode {
        Mode::Virtio(path) => transport::serve_device(path, allow_poweroff),
        Mode::Unix(path) => transport::serve_unix(&path, allow_poweroff),
        Mode::Stdio => transport::serve_stdio(allow_poweroff),
    }
}

fn usage_exit() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

/// Exponential back-off used while the host is absent: waiting for a condition the kernel cannot
/// signal (a virtio port returns EOF, not "would block", while no host is attached).
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Backoff(Duration::from_millis(2))
    }
    pub fn wait(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(100));
    }
    pub fn reset(&mut self) {
        self.0 = Duration::from_millis(2);
    }
}
