//! Manual smoke test against a real guest: `agent-smoke SOCKET` connects to QEMU's agent chardev
//! socket (`-chardev socket,id=agent,path=SOCKET,server=on,wait=off -device
//! virtserialport,chardev=agent,name=org.cove.agent`), then runs ping, exec, ps and copies, drops
//! the connection and reconnects, printing timings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cove_agent_link::*;

fn sh(s: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), s.into()],
        ..Default::default()
    }
}

async fn run(link: &AgentLink, req: ExecRequest) -> Result<ExitStatus, LinkError> {
    let io = ExecIo {
        stdin: Input::None,
        stdout: Box::new(tokio::io::stdout()),
        stderr: Box::new(tokio::io::stderr()),
        control: None,
    };
    exec(link, req, io).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sock = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: agent-smoke SOCKET [SCRATCH_DIR]")?,
    );
    let scratch = PathBuf::from(std::env::args().nth(2).unwrap_or_else(|| "/tmp".into()));
    let t = Instant::now();
    let link = AgentLink::connect(&sock, Duration::from_secs(120)).await?;
    println!("connected after {:?}: agent {:?}", t.elapsed(), link.info());
    let mut pings: Vec<Duration> = Vec::new();
    for _ in 0..100 {
        pings.push(link.ping().await?);
    }
    pings.sort();
    println!("ping p50 {:?} p99 {:?}", pings[50], pings[98]);
    println!(
        "exit: {:?}",
        run(
            &link,
            sh("uname -a; id; ls /dev | grep vport; echo err >&2; exit 3")
        )
        .await?
    );
    let tty = ExecRequest {
        tty: Some(TtySize { rows: 33, cols: 99 }),
        ..sh("tty; stty size")
    };
    println!("tty exit: {:?}", run(&link, tty).await?);
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        run(
            &link,
            ExecRequest {
                argv: vec!["true".into()],
                ..Default::default()
            },
        )
        .await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!("exec true p50 {:?} p99 {:?}", times[25], times[49]);
    let procs = ps(&link).await?;
    println!(
        "ps: {} processes, e.g. {:?}",
        procs.len(),
        procs.iter().find(|p| p.command.contains("cove-agent"))
    );
    let big = scratch.join("smoke-20m");
    std::fs::write(&big, vec![0x5a; 20 << 20])?;
    let t = Instant::now();
    copy_in(&link, &big, "/tmp/big", None).await?;
    let up = t.elapsed();
    let back = scratch.join("smoke-20m.back");
    let t = Instant::now();
    copy_out(&link, "/tmp/big", &back, None).await?;
    println!(
        "copy 20 MiB: in {:.1} MiB/s, out {:.1} MiB/s, equal: {}",
        20.0 / up.as_secs_f64(),
        20.0 / t.elapsed().as_secs_f64(),
        std::fs::read(&back)? == std::fs::read(&big)?
    );
    drop(link);
    let t = Instant::now();
    let link = AgentLink::connect(&sock, Duration::from_secs(10)).await?;
    println!("reconnected in {:?}", t.elapsed());
    println!(
        "exit after reconnect: {:?}",
        run(&link, sh("echo still here")).await?
    );
    Ok(())
}
