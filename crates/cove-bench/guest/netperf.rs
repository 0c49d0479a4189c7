//! netperf: the small TCP tool `cove-bench net` copies into both guests (std only, built static
//! with rustc at bench time, so the same program measures every path; iperf3 is not in the
//! minimal image and does not measure request/response round trips).
//!
//!   netperf serve PORT             echo ('r') or sink ('s' + u64 length, then a 1-byte ack)
//!   netperf rtt ADDR:PORT N        1-byte request/response N times: "median_us p90_us"
//!   netperf stream ADDR:PORT MIB   MIB MiB one way until acknowledged: "mib_per_s"

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    match arg(1).as_str() {
        "serve" => serve(arg(2).parse().unwrap_or_else(|_| usage())),
        "rtt" => rtt(&arg(2), arg(3).parse().unwrap_or_else(|_| usage())),
        "stream" => stream(&arg(2), arg(3).parse().unwrap_or_else(|_| usage())),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: netperf serve PORT | rtt ADDR:PORT N | stream ADDR:PORT MIB");
    std::process::exit(2)
}

fn serve(port: u16) {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = handle(s);
        });
    }
}

fn handle(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    if mode[0] == b'r' {
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
    } else {
        let mut len = [0u8; 8];
        s.read_exact(&mut len)?;
        let mut left = u64::from_le_bytes(len);
        let mut buf = vec![0u8; 256 << 10];
        while left > 0 {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n as u64);
        }
        s.write_all(b"k")?;
    }
    Ok(())
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| {
        eprintln!("netperf: cannot connect to {addr}: {e}");
        std::process::exit(1)
    });
    s.set_nodelay(true).unwrap();
    s
}

fn rtt(addr: &str, n: usize) {
    let mut s = connect(addr);
    s.write_all(b"r").unwrap();
    let mut b = [0u8; 1];
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut b).unwrap();
        if i >= 10 {
            times.push(t.elapsed().as_micros() as u64);
        }
    }
    times.sort_unstable();
    println!("{} {}", times[times.len() / 2], times[times.len() * 9 / 10]);
}

fn stream(addr: &str, mib: u64) {
    let mut s = connect(addr);
    let len = mib << 20;
    let mut head = vec![b's'];
    head.extend_from_slice(&len.to_le_bytes());
    s.write_all(&head).unwrap();
    let buf = vec![0x5au8; 256 << 10];
    let t = Instant::now();
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    println!("{:.1}", mib as f64 / t.elapsed().as_secs_f64());
}
