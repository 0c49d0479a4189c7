//! Benchmark 8: a host folder shared into the guest (`--mount`, virtiofs)
//! against `cove cp` moving the same bytes, both ways. Also the minimal VM
//! that §7 (`cove trace`) runs in: both need only the minimal image.

use crate::cove::Cove;
use crate::report::Section;
use crate::stats::{Samples, ratio};
use anyhow::{Result, bail};
use std::io::Read;
use std::time::Duration;

/// The minimal VM with a read-write shared folder at [`GUEST_DIR`].
pub const NAME: &str = "fs";
pub const GUEST_DIR: &str = "/mnt/host";
/// Big enough to be a throughput, small enough for a TCG guest's tmpfs.
const SIZE: usize = 32 * 1024 * 1024;

/// Creates and starts [`NAME`], sharing `host_dir` read-write.
pub fn boot(cove: &Cove) -> Result<()> {
    let dir = host_dir(cove);
    std::fs::create_dir_all(&dir)?;
    let mount = format!("{}:{GUEST_DIR}:rw", dir.display());
    cove.create(
        NAME,
        &["--image", "minimal", "--memory", "512M", "--mount", &mount],
    )?;
    cove.run(&["start", NAME]).map(|_| ())
}

fn host_dir(cove: &Cove) -> std::path::PathBuf {
    cove.root().join("share")
}

fn mibs(d: Duration) -> String {
    format!("{:.1} MiB/s", (SIZE as f64 / 1048576.0) / d.as_secs_f64())
}

pub fn run(cove: &Cove, runs: usize, s: &mut Section) -> Result<()> {
    s.method = vec![
        format!(
            "A minimal VM (512 MiB, TCG) created with `--mount HOST_DIR:{GUEST_DIR}:rw` (virtiofs, one virtiofsd chrooted into the folder). One file of {} MiB of random bytes.",
            SIZE >> 20
        ),
        format!(
            "**host → guest**: the guest reads the file: `cove exec {NAME} -- cat {GUEST_DIR}/in.bin >/dev/null` with the guest's page cache dropped first (untimed), against `cove cp in.bin {NAME}:/tmp/in.bin` (guest tmpfs)."
        ),
        format!(
            "**guest → host**: the guest writes the file from its tmpfs: `cove exec {NAME} -- sh -c 'cat /tmp/src.bin >{GUEST_DIR}/out.bin && sync'` against `cove cp {NAME}:/tmp/src.bin out.bin`."
        ),
        format!(
            "Wall time of each whole command, `cove exec`'s own start included (§4 has its size); one untimed warm-up, then {runs} rounds alternating which method goes first; sizes checked after each copy (untimed). MiB/s = size ÷ median."
        ),
    ];
    let dir = host_dir(cove);
    let mut data = vec![0u8; SIZE];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut data)?;
    std::fs::write(dir.join("in.bin"), &data)?;
    drop(data);
    let sh = |script: &str| cove.run(&["exec", NAME, "--", "sh", "-c", script]);
    sh(&format!("head -c {SIZE} /dev/urandom >/tmp/src.bin"))?;
    let guest_size = |path: &str| -> Result<usize> {
        let out = sh(&format!("wc -c <{path}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    let check = |what: &str, size: usize| -> Result<()> {
        if size != SIZE {
            bail!("{what}: {size} bytes, not {SIZE}");
        }
        Ok(())
    };
    let in_file = dir.join("in.bin").display().to_string();
    let out_file = cove.root().join("cp-out.bin").display().to_string();
    let share_read = "echo 3 >/proc/sys/vm/drop_caches";
    let read_cmd = format!("cat {GUEST_DIR}/in.bin >/dev/null");
    let write_cmd = format!("cat /tmp/src.bin >{GUEST_DIR}/out.bin && sync");
    let from_guest = format!("{NAME}:/tmp/src.bin");
    let to_guest = format!("{NAME}:/tmp/in.bin");
    // share in, cp in, share out, cp out
    let mut samples: Vec<Samples> = (0..4).map(|_| Samples::new()).collect();
    for round in 0..=runs {
        let mut times = [Duration::ZERO; 4];
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [1, 0, 3, 2]
        };
        for which in order {
            times[which] = match which {
                0 => {
                    sh(share_read)?;
                    cove.timed(&["exec", NAME, "--", "sh", "-c", &read_cmd])?
                }
                1 => {
                    let t = cove.timed(&["cp", &in_file, &to_guest])?;
                    check("cove cp in", guest_size("/tmp/in.bin")?)?;
                    sh("rm -f /tmp/in.bin")?;
                    t
                }
                2 => {
                    let t = cove.timed(&["exec", NAME, "--", "sh", "-c", &write_cmd])?;
                    check(
                        "share write",
                        std::fs::metadata(dir.join("out.bin"))?.len() as usize,
                    )?;
                    std::fs::remove_file(dir.join("out.bin"))?;
                    t
                }
                _ => {
                    let t = cove.timed(&["cp", &from_guest, &out_file])?;
                    check("cove cp out", std::fs::metadata(&out_file)?.len() as usize)?;
                    std::fs::remove_file(&out_file)?;
                    t
                }
            };
        }
        if round > 0 {
            for (sample, t) in samples.iter_mut().zip(times) {
                sample.push(t);
            }
        }
    }
    s.headers = [
        "direction",
        "method",
        "runs",
        "p50",
        "throughput",
        "time ÷ `cove cp`",
    ]
    .map(String::from)
    .to_vec();
    for (direction, share, cp) in [("host → guest", 0, 1), ("guest → host", 2, 3)] {
        for (method, i) in [("shared folder", share), ("`cove cp`", cp)] {
            let x = &samples[i];
            s.rows.push(vec![
                direction.into(),
                method.into(),
                x.len().to_string(),
                format!("{:.0} ms", x.median().as_secs_f64() * 1000.0),
                mibs(x.median()),
                format!("{:.2}×", ratio(x.median(), samples[cp].median())),
            ]);
        }
    }
    Ok(())
}
