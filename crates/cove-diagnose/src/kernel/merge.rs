//! Config fragments: merge them the way the kernel's scripts/kconfig/merge_config.sh does
//! (later wins, every override reported), verify what survived `make olddefconfig`, and drive
//! a non-interactive kernel build.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{KernelConfig, Value, config_line};
use super::kconfig::{Kconfig, Unmet};

/// A fragment value that replaced an earlier one (merge_config.sh's "Value of X is redefined").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    pub option: String,
    pub previous: Value,
    /// Where the previous value came from (`base` or a fragment label).
    pub previous_from: String,
    pub new: Value,
    pub fragment: String,
}

/// The merged configuration and what the fragments did to it.
#[derive(Debug, Clone, Serialize)]
pub struct Merge {
    /// Base with the fragments applied (later wins).
    pub config: KernelConfig,
    /// Every value the fragments asked for (the last one per option): what `verify` checks.
    pub requested: KernelConfig,
    pub overrides: Vec<Override>,
    /// Fragment values equal to what was already there.
    pub redundant: Vec<String>,
}

/// Merge fragments over a base config. `fragments` are `(label, text)`, applied in order.
pub fn merge(base: &str, fragments: &[(String, String)]) -> Merge {
    let mut config = KernelConfig::parse(base);
    let mut from: BTreeMap<String, String> = config
        .options
        .keys()
        .map(|k| (k.clone(), "base".to_string()))
        .collect();
    let mut requested = KernelConfig::default();
    let mut overrides = Vec::new();
    let mut redundant = Vec::new();
    for (label, text) in fragments {
        for (name, value) in KernelConfig::parse_ordered(text) {
            match config.options.get(&name) {
                Some(prev) if *prev != value => overrides.push(Override {
                    option: name.clone(),
                    previous: prev.clone(),
                    previous_from: from.get(&name).cloned().unwrap_or_default(),
                    new: value.clone(),
                    fragment: label.clone(),
                }),
                Some(_) => redundant.push(name.clone()),
                None => {}
            }
            config.options.insert(name.clone(), value.clone());
            requested.options.insert(name.clone(), value);
            from.insert(name, label.clone());
        }
    }
    Merge {
        config,
        requested,
        overrides,
        redundant,
    }
}

/// Merge fragment files over a base config file.
pub fn merge_files(base: &Path, fragments: &[PathBuf]) -> Result<Merge, super::KernelError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| super::KernelError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let base_text = read(base)?;
    let frags = fragments
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>, super::KernelError>>()?;
    Ok(merge(&base_text, &frags))
}

/// A requested value that did not survive `olddefconfig` (usually an unmet dependency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lost {
    pub option: String,
    pub requested: Value,
    /// What the resulting config has (`No` when absent).
    pub actual: Value,
    /// Why, read from the source tree's Kconfig files (when the tree was at hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmet: Option<Unmet>,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requested `{}` but the resulting config has `{}`",
            config_line(&self.option, &self.requested),
            config_line(&self.option, &self.actual),
        )?;
        match &self.unmet {
            Some(u) if u.unknown => write!(
                f,
                ": {} does not exist in this kernel (renamed or removed?)",
                self.option
            ),
            Some(u) if !u.missing.is_empty() => write!(
                f,
                ": it depends on {}, and {} {} off; add {} to a fragment",
                u.depends_on,
                u.missing.join(", "),
                if u.missing.len() == 1 { "is" } else { "are" },
                u.missing
                    .iter()
                    .map(|m| format!("CONFIG_{m}=y"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Some(u) if !u.depends_on.is_empty() => write!(
                f,
                ": it depends on {} (a `select` or `choice` may also decide it)",
                u.depends_on
            ),
            _ => write!(
                f,
                " (a dependency is missing or the option does not exist in this kernel; `make menuconfig` and search for {} shows what it depends on)",
                self.option
            ),
        }
    }
}

/// Every requested value that is not in `resulting` (after `make olddefconfig`).
/// A requested "is not set" matches an absent option, as in Kconfig.
pub fn verify(requested: &KernelConfig, resulting: &KernelConfig) -> Vec<Lost> {
    requested
        .options
        .iter()
        .filter_map(|(name, want)| {
            let actual = resulting.value(name);
            (actual != *want).then(|| Lost {
                option: name.clone(),
                requested: want.clone(),
                actual,
                unmet: None,
            })
        })
        .collect()
}

/// Fills in why each lost option was dropped, from the tree's Kconfig files.
pub fn explain_lost(tree: &Path, arch: &str, lost: &mut [Lost], resulting: &KernelConfig) {
    if lost.is_empty() {
        return;
    }
    let k = Kconfig::read(tree, arch);
    for l in lost {
        l.unmet = Some(k.unmet(&l.option, resulting));
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Kernel source tree.
    pub src: PathBuf,
    /// Base config text (a full `.config` or a `savedefconfig` file) and its label.
    pub base: (String, String),
    /// Fragments `(label, text)`, applied in order.
    pub fragments: Vec<(String, String)>,
    /// Output directory (`O=`).
    pub out: PathBuf,
    /// Parallel jobs; `None` uses the number of CPUs.
    pub jobs: Option<usize>,
    /// Make targets (default `bzImage`, which builds `vmlinux` on the way).
    pub targets: Vec<String>,
    /// Build even when requested values were lost by `olddefconfig`.
    pub allow_lost: bool,
    /// The build log (appended to).
    pub log: PathBuf,
}

/// The result of a successful build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub config: PathBuf,
    pub log: PathBuf,
    pub overrides: Vec<Override>,
    pub lost: Vec<Lost>,
    pub elapsed: Duration,
}

/// Errors of `build`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Kernel(#[from] super::KernelError),
    #[error(
        "{0} is not a kernel source tree (no Makefile and scripts/kconfig); pass the top of a Linux source checkout"
    )]
    NotKernelSource(PathBuf),
    #[error("cannot run `{command}`: {source}; is `make` installed (scripts/install-deps)?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{command}` failed ({status}); the last lines of {log}:\n{tail}\n(missing host tools such as flex, bison, bc or libelf-dev: run scripts/install-deps)"
    )]
    Make {
        command: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{} requested value(s) did not survive `make olddefconfig`, so nothing was compiled:\n{}\nfix the fragments (add the missing dependencies) or build anyway with --allow-lost", lost.len(), lost.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"))]
    Lost { lost: Vec<Lost> },
}

/// Merges the fragments over the base, runs `make olddefconfig` and verifies the
/// requested values survived (naming the unmet dependencies of those that did not).
/// Returns the merge and what was lost (empty unless `allow_lost`).
pub fn configure(spec: &BuildSpec) -> Result<(Merge, Vec<Lost>), BuildError> {
    if !spec.src.join("Makefile").is_file() || !spec.src.join("scripts/kconfig").is_dir() {
        return Err(BuildError::NotKernelSource(spec.src.clone()));
    }
    std::fs::create_dir_all(&spec.out).map_err(io(&spec.out))?;
    let config_path = spec.out.join(".config");
    let merged = merge(&spec.base.1, &spec.fragments);
    std::fs::write(&config_path, merged.config.to_text()).map_err(io(&config_path))?;
    run_make(spec, &["olddefconfig".to_string()], &mut |_| {})?;
    let resulting_text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
    let resulting = KernelConfig::parse(&resulting_text);
    let mut lost = verify(&merged.requested, &resulting);
    explain_lost(&spec.src, "x86", &mut lost, &resulting);
    if !lost.is_empty() && !spec.allow_lost {
        return Err(BuildError::Lost { lost });
    }
    Ok((merged, lost))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> super::KernelError {
    let path = path.to_path_buf();
    move |source| super::KernelError::Io { path, source }
}

/// [`configure`], then compile non-interactively (`make -jN bzImage`) with `O=`.
/// `on_line` sees every line make prints (for progress).
pub fn build(spec: &BuildSpec, on_line: &mut dyn FnMut(&str)) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    std::fs::create_dir_all(&spec.out).map_err(io(&spec.out))?;
    let (merged, lost) = configure(spec)?;
    compile(spec, on_line)?;
    Ok(BuildReport {
        config: spec.out.join(".config"),
        log: spec.log.clone(),
        overrides: merged.overrides,
        lost,
        elapsed: started.elapsed(),
    })
}

/// Compiles the `.config` already in `spec.out` (`make -jN bzImage`).
pub fn compile(spec: &BuildSpec, on_line: &mut dyn FnMut(&str)) -> Result<(), BuildError> {
    let jobs = spec
        .jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let mut args = vec![format!("-j{jobs}")];
    if spec.targets.is_empty() {
        args.push("bzImage".to_string());
    } else {
        args.extend(spec.targets.iter().cloned());
    }
    run_make(spec, &args, on_line)
}

/// `make -s kernelrelease` of a configured output directory.
pub fn kernel_release(src: &Path, out: &Path) -> Option<String> {
    let o = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .arg("kernelrelease")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout);
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("make"))
        .map(str::to_owned)
}

fn run_make(
    spec: &BuildSpec,
    args: &[String],
    on_line: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    use std::io::{BufRead, Write};
    let config = spec.out.join(".config");
    let tmp = spec.out.join(".tmp");
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // stderr joins stdout in one pipe (`2>&1`) so the log keeps their order.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec make \"$@\" 2>&1", "make", "-C"])
        .arg(&spec.src)
        .arg(format!("O={}", spec.out.display()))
        .args(args)
        .env("KCONFIG_CONFIG", &config)
        // gcc's temporary files beside the objects: a /tmp cleaner on a shared host once
        // deleted them mid-compile ("can't open /tmp/cc….s"), failing an hour's build.
        .env("TMPDIR", &tmp)
        // Never prompt: a build that waits on stdin hangs forever (seed 001).
        .stdin(Stdio::null());
    let command = format!(
        "make -C {} O={} {}",
        spec.src.display(),
        spec.out.display(),
        args.join(" ")
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(io(&spec.log))?;
    let _ = writeln!(log, "$ {command}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BuildError::Spawn {
            command: command.clone(),
            source,
        })?;
    let Some(reader) = child.stdout.take() else {
        unreachable!("stdout is piped")
    };
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in std::io::BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        on_line(&line);
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().map_err(|source| BuildError::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError::Make {
        command,
        status,
        log: spec.log.clone(),
        tail: Vec::from(tail).join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "CONFIG_SYSVIPC=y\n# CONFIG_TUN is not set\nCONFIG_VIRTIO_BLK=m\nCONFIG_NR_CPUS=64\n";

    fn frag(label: &str, text: &str) -> (String, String) {
        (label.to_string(), text.to_string())
    }

    #[test]
    fn later_fragments_win_and_every_override_is_reported() {
        let m = merge(
            BASE,
            &[
                frag(
                    "a.frag",
                    "CONFIG_TUN=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_NEW=y\n",
                ),
                frag(
                    "b.frag",
                    "CONFIG_TUN=m\nCONFIG_SYSVIPC=y\n# CONFIG_NR_CPUS is not set\n",
                ),
            ],
        );
        assert_eq!(m.config.value("TUN"), Value::Module);
        assert_eq!(m.config.value("VIRTIO_BLK"), Value::Yes);
        assert_eq!(m.config.value("NEW"), Value::Yes);
        assert_eq!(m.config.value("NR_CPUS"), Value::No);
        let summary: Vec<(&str, &str, &str)> = m
            .overrides
            .iter()
            .map(|o| {
                (
                    o.option.as_str(),
                    o.previous_from.as_str(),
                    o.fragment.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("TUN", "base", "a.frag"),
                ("VIRTIO_BLK", "base", "a.frag"),
                ("TUN", "a.frag", "b.frag"),
                ("NR_CPUS", "base", "b.frag"),
            ]
        );
        assert_eq!(m.overrides[2].previous, Value::Yes);
        assert_eq!(m.overrides[2].new, Value::Module);
        assert_eq!(m.redundant, vec!["SYSVIPC"]);
        assert_eq!(m.requested.options.len(), 5);
    }

    #[test]
    fn within_one_fragment_the_last_line_wins() {
        let m = merge(BASE, &[frag("f", "CONFIG_TUN=y\nCONFIG_TUN=m\n")]);
        assert_eq!(m.config.value("TUN"), Value::Module);
        assert_eq!(m.overrides.len(), 2);
    }

    /// Seed 001: fragments asked for TUN, SYSVIPC, NETFILTER, VIRTIO_VSOCKETS; olddefconfig
    /// silently dropped what had unmet dependencies.
    #[test]
    fn verify_lists_every_requested_value_that_did_not_survive() {
        let m = merge(
            BASE,
            &[frag(
                "guest.fragment",
                "CONFIG_TUN=y\nCONFIG_VIRTIO_VSOCKETS=y\nCONFIG_NETFILTER=y\n# CONFIG_KVM is not set\n",
            )],
        );
        // What olddefconfig produced: VSOCKETS was not enabled, so VIRTIO_VSOCKETS vanished;
        // KVM is absent, which is the same as "not set".
        let resulting = KernelConfig::parse(
            "CONFIG_SYSVIPC=y\nCONFIG_TUN=y\nCONFIG_NETFILTER=m\nCONFIG_VIRTIO_BLK=m\n",
        );
        let lost = verify(&m.requested, &resulting);
        assert_eq!(
            lost,
            vec![
                Lost {
                    option: "NETFILTER".into(),
                    requested: Value::Yes,
                    actual: Value::Module,
                    unmet: None,
                },
                Lost {
                    option: "VIRTIO_VSOCKETS".into(),
                    requested: Value::Yes,
                    actual: Value::No,
                    unmet: None,
                },
            ]
        );
        assert!(
            lost[1]
                .to_string()
                .contains("# CONFIG_VIRTIO_VSOCKETS is not set")
        );
    }

    #[test]
    fn build_refuses_a_directory_that_is_not_a_kernel_tree() {
        let dir = tempfile::tempdir().unwrap();
        let spec = BuildSpec {
            src: dir.path().to_path_buf(),
            base: ("base".into(), String::new()),
            fragments: vec![],
            out: dir.path().join("out"),
            jobs: Some(1),
            targets: vec![],
            allow_lost: false,
            log: dir.path().join("log"),
        };
        assert!(matches!(
            build(&spec, &mut |_| {}),
            Err(BuildError::NotKernelSource(_))
        ));
    }
}
