//! VM-to-VM TCP on a cove network against user-mode networking through a host forward, side
//! by side in one run. Everything runs inside a network namespace this benchmark makes (and
//! removes, also on failure): the bridge, TAPs, rules, dnsmasq and all traffic.
//!
//! The same small tool (`guest/netperf.rs`, std only, built static with rustc here) runs in
//! every guest, so the two paths differ only in the network between the VMs.

use crate::cove::Cove;
use crate::report::Section;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

const PORT: u16 = 7000;
/// The host port the user-mode path goes through (inside the benchmark's own namespace).
const HOST_PORT: u16 = 17000;
/// A host address of the namespace that is not its loopback: user-mode networking (passt)
/// never reaches the host's loopback, so the forward listens here.
const HOST_ADDR: &str = "192.0.2.1";
const ROUNDTRIPS: usize = 1000;
const STREAM_MIB: u64 = 64;

/// The benchmark's network namespace; deleted (with whatever still runs in it) when dropped.
struct Ns(String);

impl Ns {
    fn new() -> Result<Self> {
        let name = format!("cove-bench-net-{}", std::process::id());
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Ns(name);
        sh(Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]))?;
        sh(Command::new("ip").args([
            "netns",
            "exec",
            &ns.0,
            "ip",
            "addr",
            "add",
            &format!("{HOST_ADDR}/32"),
            "dev",
            "lo",
        ]))?;
        Ok(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the guest tool, static (the minimal guest has no libc of its own).
fn build_tool(dir: &Path) -> Result<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/netperf.rs");
    let out = dir.join("netperf");
    sh(Command::new("rustc")
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(&out)
        .arg(&src))?;
    Ok(out)
}

fn exec(cove: &Cove, vm: &str, script: &str) -> Result<String> {
    let out = cove.run(&["exec", vm, "--", "sh", "-c", script])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (median µs, p90 µs) of one-byte round trips from `client` to `target` (ADDR:PORT).
fn roundtrips(cove: &Cove, client: &str, target: &str) -> Result<(u64, u64)> {
    let out = exec(
        cove,
        client,
        &format!("/tmp/netperf rtt {target} {ROUNDTRIPS}"),
    )?;
    let mut it = out.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(median)), Some(Ok(p90))) => Ok((median, p90)),
        _ => bail!("netperf rtt printed {out:?}"),
    }
}

/// MiB/s of one stream from `client` to `target`.
fn stream(cove: &Cove, client: &str, target: &str) -> Result<f64> {
    let out = exec(
        cove,
        client,
        &format!("/tmp/netperf stream {target} {STREAM_MIB}"),
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("netperf stream printed {out:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(bin: &Path, runs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!(
            "Four minimal guests (1 vCPU, 256 MiB) inside a network namespace the benchmark makes: \
             two on a cove network (bridge + TAPs), two on user-mode networking only, the client \
             reaching the server through a host forward (guest → passt → host \
             {HOST_ADDR}:{HOST_PORT} → the server's passt forward → server guest port {PORT})."
        ),
        format!(
            "The same static tool in every guest (`crates/cove-bench/guest/netperf.rs`): round \
             trip = median and p90 of {ROUNDTRIPS} one-byte request/responses on one TCP \
             connection (TCP_NODELAY); throughput = {STREAM_MIB} MiB one way until the server \
             acknowledges, median of {runs} runs, the two paths alternating run by run."
        ),
    ];
    let ns = Ns::new()?;
    let cove = Cove::in_netns(bin.to_owned(), &ns.0)?;
    let tool = build_tool(cove.root())?;
    cove.build_image("minimal", &[], None)?;
    cove.run(&["network", "create", "bench", "--subnet", "10.120.0.0/24"])?;
    let result = (|| -> Result<()> {
        cove.create("n1", &["--network", "bench"])?;
        cove.create("n2", &["--network", "bench"])?;
        cove.create("u1", &[])?;
        let fwd = format!("{HOST_ADDR}:{HOST_PORT}:{PORT}");
        cove.create("u2", &["-p", &fwd])?;
        for vm in ["n1", "n2", "u1", "u2"] {
            cove.run(&["start", vm])?;
            let dest = format!("{vm}:/tmp/netperf");
            cove.run(&["cp", tool.to_str().unwrap(), &dest])?;
            exec(&cove, vm, "chmod 0755 /tmp/netperf")?;
        }
        for vm in ["n2", "u2"] {
            exec(
                &cove,
                vm,
                &format!("setsid /tmp/netperf serve {PORT} </dev/null >/dev/null 2>&1 &"),
            )?;
        }
        let list = cove.json(&["network", "ls"])?;
        let n2 = list[0]["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|v| v["name"] == "n2"))
            .and_then(|v| v["ip"].as_str())
            .context("n2's address in `cove network ls`")?
            .to_owned();
        let (net_to, user_to) = (format!("{n2}:{PORT}"), format!("{HOST_ADDR}:{HOST_PORT}"));
        // Alternating, so load on the machine weighs on both paths alike.
        let (net_rtt, user_rtt) = (
            roundtrips(&cove, "n1", &net_to)?,
            roundtrips(&cove, "u1", &user_to)?,
        );
        let (mut net_rates, mut user_rates) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            net_rates.push(stream(&cove, "n1", &net_to)?);
            user_rates.push(stream(&cove, "u1", &user_to)?);
        }
        let net = (net_rtt.0, net_rtt.1, median(net_rates));
        let user = (user_rtt.0, user_rtt.1, median(user_rates));
        s.headers = [
            "path",
            "round trip (median)",
            "round trip (p90)",
            "throughput",
        ]
        .map(String::from)
        .to_vec();
        for (name, (median, p90, rate)) in [
            ("cove network (bridge + TAP)", net),
            ("user-mode + host forward", user),
        ] {
            s.rows.push(vec![
                name.into(),
                format!("{:.2} ms", median as f64 / 1000.0),
                format!("{:.2} ms", p90 as f64 / 1000.0),
                format!("{rate:.1} MiB/s"),
            ]);
        }
        s.goal(
            "VM-to-VM round trip, cove network vs user-mode forward",
            "lower",
            format!("{:.2}× of user-mode", net.0 as f64 / user.0.max(1) as f64),
            net.0 < user.0,
        );
        s.goal(
            "VM-to-VM throughput, cove network vs user-mode forward",
            "higher",
            format!("{:.2}× of user-mode", net.2 / user.2.max(0.001)),
            net.2 > user.2,
        );
        s.notes.push(
            "Under TCG both paths are bound by the emulated CPUs; with KVM and vhost-net the TAP \
             path gains far more than slirp can."
                .into(),
        );
        Ok(())
    })();
    cove.delete_all_except(&[]);
    let _ = cove.run(&["network", "rm", "bench"]);
    result
}
