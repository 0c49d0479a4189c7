//! Benchmark 7: an arm64 guest (`qemu-system-aarch64 -M virt`, TCG) beside the amd64 one on
//! this x86-64 host: cold boot to the agent's answer, and `cove exec NAME true`.

use crate::cove::Cove;
use crate::report::Section;
use crate::stats::{Samples, ms, ratio};
use anyhow::Result;

/// The amd64 image of the boot benchmark, and its arm64 twin.
pub const IMAGES: [(&str, &str); 2] = [("amd64", crate::boot::IMAGE), ("arm64", "a64")];

pub fn run(cove: &Cove, runs: usize, execs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!("Images `{}` (`cove image build minimal --size 64M`) and `a64` (`--arch arm64 --size 64M`: Debian's arm64 cloud kernel, arm64 busybox, the arm64 agent cross-built by scripts/build), 256 MiB, 1 vCPU; amd64 on microvm, arm64 on `virt` with a Cortex-A72, both under TCG.", crate::boot::IMAGE),
        "**cold boot**: wall time of `cove start NAME` on a freshly created VM, until the guest agent's handshake is answered.".into(),
        format!("**exec**: wall time of `cove exec NAME true`, {execs} times per boot, right after it."),
        format!("One untimed warm-up boot of each, then {runs} boots of each, alternating which goes first; VMs are deleted between runs."),
    ];
    if cfg!(debug_assertions) {
        s.method
            .push("`cove` is the debug build in this section (not the release build).".into());
    }
    let mut boots = [Samples::new(), Samples::new()];
    let mut exec = [Samples::new(), Samples::new()];
    for i in 0..=runs {
        for turn in 0..2 {
            let idx = if i % 2 == 0 { turn } else { 1 - turn };
            let (arch, image) = IMAGES[idx];
            let name = format!("ar-{arch}-{i}");
            cove.create(&name, &["--image", image])?;
            let r = (|| -> Result<()> {
                let d = cove.timed(&["start", &name])?;
                eprintln!("  {arch} boot run {i}: {}", ms(d));
                if i > 0 {
                    boots[idx].push(d);
                }
                for _ in 0..execs {
                    let e = cove.timed(&["exec", &name, "--", "true"])?;
                    if i > 0 {
                        exec[idx].push(e);
                    }
                }
                Ok(())
            })();
            cove.delete(&name)?;
            r?;
        }
    }
    s.headers = ["", "runs", "p50", "p99", "min", "max"]
        .map(String::from)
        .to_vec();
    for (what, x) in [
        ("cold boot, amd64 (microvm)", &boots[0]),
        ("cold boot, arm64 (virt)", &boots[1]),
        ("`exec true`, amd64", &exec[0]),
        ("`exec true`, arm64", &exec[1]),
    ] {
        s.rows.push(crate::stats::spread_row(what, x));
    }
    s.notes.push(format!(
        "arm64 vs amd64 (p50): cold boot {:.2}×, `exec true` {:.2}× — both are emulated by TCG here; on a KVM host an amd64 guest runs natively while an arm64 one stays emulated.",
        ratio(boots[1].median(), boots[0].median()),
        ratio(exec[1].median(), exec[0].median()),
    ));
    Ok(())
}
