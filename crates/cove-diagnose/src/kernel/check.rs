//! Check a kernel configuration against requirement profiles, including whether `=m`
//! options really have their modules (and the modules those depend on) in the initramfs.

use std::fmt;

use serde::Serialize;

use super::config::{ConfigSource, KernelConfig, Value, config_line};
use super::initramfs::InitramfsModules;
use super::profile::{Profile, Requirement, module_for_option};

/// How one option stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum OptionState {
    /// `=y`.
    BuiltIn,
    /// `=m` and the module with all its dependencies is in the initramfs.
    ModuleInInitramfs { module: String },
    /// `=m` but no initramfs was given to verify against.
    ModuleUnverified { module: Option<String> },
    /// `=m` but the module or some dependency is not in the initramfs.
    ModuleMissing {
        module: String,
        missing: Vec<String>,
    },
    /// `=m` where the requirement needs it built in.
    ModuleNotAllowed,
    /// Not set (or absent).
    NotSet,
    /// Set to a non-tristate value (string/number): counts as present.
    Other { value: String },
}

impl OptionState {
    fn satisfies(&self) -> bool {
        matches!(
            self,
            OptionState::BuiltIn
                | OptionState::ModuleInInitramfs { .. }
                | OptionState::ModuleUnverified { .. }
                | OptionState::Other { .. }
        )
    }
}

/// The outcome of one requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Satisfied only by a module whose presence could not be verified.
    Warn,
    Fail,
}

/// One requirement of one profile, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub profile: String,
    /// The alternatives (any one suffices), without `CONFIG_`.
    pub options: Vec<String>,
    pub why: String,
    pub status: Status,
    /// The state of each alternative, in order.
    pub states: Vec<(String, OptionState)>,
    /// Fragment lines that fix it (`CONFIG_SYSVIPC=y`); empty when satisfied.
    pub fix: Vec<String>,
    /// A fix that keeps the option a module, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternative_fix: Option<String>,
}

/// The result of checking a config against profiles.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ConfigSource>,
    pub profiles: Vec<String>,
    /// Whether `=m` options were verified against an initramfs.
    pub initramfs_checked: bool,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// True when no requirement failed.
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.status != Status::Fail)
    }

    /// Requirements that failed or could not be verified.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status != Status::Ok)
    }

    /// All fix lines as one config fragment, without duplicates.
    pub fn fragment(&self) -> String {
        let mut lines: Vec<&str> = Vec::new();
        for f in self.problems().filter(|f| f.status == Status::Fail) {
            for l in &f.fix {
                if !lines.contains(&l.as_str()) {
                    lines.push(l);
                }
            }
        }
        lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

fn state_of(
    option: &str,
    config: &KernelConfig,
    initramfs: Option<&InitramfsModules>,
    builtin_only: bool,
) -> OptionState {
    match config.value(option) {
        Value::Yes => OptionState::BuiltIn,
        Value::No => OptionState::NotSet,
        Value::Module if builtin_only => OptionState::ModuleNotAllowed,
        Value::Module => {
            let module = module_for_option(option).map(str::to_string);
            match (initramfs, module) {
                (None, module) => OptionState::ModuleUnverified { module },
                (Some(_), None) => OptionState::ModuleUnverified { module: None },
                (Some(ird), Some(module)) => {
                    let missing = ird.missing_for(&module);
                    if missing.is_empty() {
                        OptionState::ModuleInInitramfs { module }
                    } else {
                        OptionState::ModuleMissing { module, missing }
                    }
                }
            }
        }
        v => OptionState::Other {
            value: v.to_string(),
        },
    }
}

fn check_requirement(
    profile: &str,
    req: &Requirement,
    config: &KernelConfig,
    initramfs: Option<&InitramfsModules>,
) -> Finding {
    let options = req.alternatives();
    let states: Vec<(String, OptionState)> = options
        .iter()
        .map(|o| (o.clone(), state_of(o, config, initramfs, req.builtin)))
        .collect();
    let strict_ok = states
        .iter()
        .any(|(_, s)| s.satisfies() && !matches!(s, OptionState::ModuleUnverified { .. }));
    let loose_ok = states.iter().any(|(_, s)| s.satisfies());
    let status = if strict_ok {
        Status::Ok
    } else if loose_ok {
        Status::Warn
    } else {
        Status::Fail
    };
    let (fix, alternative_fix) = if status == Status::Fail {
        // Prefer turning an existing module into a built-in; else enable the first alternative.
        let target = states
            .iter()
            .find(|(_, s)| {
                matches!(
                    s,
                    OptionState::ModuleMissing { .. } | OptionState::ModuleNotAllowed
                )
            })
            .map(|(o, _)| o.clone())
            .unwrap_or_else(|| options[0].clone());
        let alt = states.iter().find_map(|(_, s)| match s {
            OptionState::ModuleMissing { missing, .. } => Some(format!(
                "or add these modules to the initramfs: {}",
                missing.join(", ")
            )),
            _ => None,
        });
        (vec![config_line(&target, &Value::Yes)], alt)
    } else {
        (Vec::new(), None)
    };
    Finding {
        profile: profile.to_string(),
        options,
        why: req.why.clone(),
        status,
        states,
        fix,
        alternative_fix,
    }
}

/// Check `config` against `profiles`. With `initramfs`, an `=m` option counts only when its
/// module and that module's dependencies are in it; without, `=m` is a warning.
pub fn check(
    config: &KernelConfig,
    profiles: &[Profile],
    initramfs: Option<&InitramfsModules>,
) -> CheckReport {
    let findings = profiles
        .iter()
        .flat_map(|p| {
            p.requires
                .iter()
                .map(|r| check_requirement(&p.name, r, config, initramfs))
        })
        .collect();
    CheckReport {
        source: None,
        profiles: profiles.iter().map(|p| p.name.clone()).collect(),
        initramfs_checked: initramfs.is_some(),
        findings,
    }
}

impl fmt::Display for OptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionState::BuiltIn => f.write_str("=y"),
            OptionState::ModuleInInitramfs { module } => write!(f, "=m ({module} in initramfs)"),
            OptionState::ModuleUnverified { module: Some(m) } => {
                write!(f, "=m (module {m}; initramfs not checked)")
            }
            OptionState::ModuleUnverified { module: None } => f.write_str("=m (not verified)"),
            OptionState::ModuleMissing { module, missing }
                if missing.as_slice() == std::slice::from_ref(module) =>
            {
                write!(f, "=m but {module}.ko is not in the initramfs")
            }
            OptionState::ModuleMissing { module, missing } => write!(
                f,
                "=m but {module} needs {} (not in the initramfs)",
                missing.join(", ")
            ),
            OptionState::ModuleNotAllowed => f.write_str("=m but must be built in (=y)"),
            OptionState::NotSet => f.write_str(" is not set"),
            OptionState::Other { value } => write!(f, "={value}"),
        }
    }
}

impl fmt::Display for CheckReport {
    /// Human rendering: the problems with their reason and fix, then a one-line summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.problems() {
            let tag = if p.status == Status::Fail {
                "FAIL"
            } else {
                "WARN"
            };
            let opts: Vec<String> = p
                .states
                .iter()
                .map(|(o, s)| format!("CONFIG_{o}{s}"))
                .collect();
            writeln!(f, "{tag} [{}] {}", p.profile, opts.join("; "))?;
            writeln!(f, "     needed because: {}", p.why)?;
            for fix in &p.fix {
                writeln!(f, "     fix: {fix}")?;
            }
            if let Some(alt) = &p.alternative_fix {
                writeln!(f, "     {alt}")?;
            }
        }
        let fails = self
            .findings
            .iter()
            .filter(|x| x.status == Status::Fail)
            .count();
        let warns = self
            .findings
            .iter()
            .filter(|x| x.status == Status::Warn)
            .count();
        write!(
            f,
            "{}: {} requirement(s) of {} checked, {} failed, {} unverified",
            if fails == 0 { "OK" } else { "FAILED" },
            self.findings.len(),
            self.profiles.join(", "),
            fails,
            warns
        )?;
        if !self.initramfs_checked && warns > 0 {
            write!(f, " (pass the initramfs to verify =m options)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::profile::builtin_profile;

    fn cfg(text: &str) -> KernelConfig {
        KernelConfig::parse(text)
    }

    #[test]
    fn missing_sysvipc_fails_postgres_naming_the_option_and_fix() {
        let c = cfg(
            "# CONFIG_SYSVIPC is not set\nCONFIG_TMPFS=y\nCONFIG_FUTEX=y\nCONFIG_UNIX=y\nCONFIG_INET=y\n",
        );
        let r = check(&c, &[builtin_profile("postgres").unwrap()], None);
        assert!(!r.ok());
        let fails: Vec<_> = r.problems().collect();
        assert_eq!(fails.len(), 1);
        assert_eq!(fails[0].options, vec!["SYSVIPC"]);
        assert_eq!(fails[0].fix, vec!["CONFIG_SYSVIPC=y"]);
        assert!(fails[0].why.contains("shmget"));
        assert_eq!(r.fragment(), "CONFIG_SYSVIPC=y\n");
        assert!(
            r.to_string()
                .contains("FAIL [postgres] CONFIG_SYSVIPC is not set")
        );
    }

    #[test]
    fn any_of_alternatives_are_honoured() {
        let c = cfg(
            "CONFIG_TUN=y\nCONFIG_NETFILTER=y\nCONFIG_IP_NF_IPTABLES=y\nCONFIG_NF_CONNTRACK=y\n",
        );
        let r = check(&c, &[builtin_profile("tailscale").unwrap()], None);
        assert!(r.ok(), "{r}");
        assert_eq!(r.problems().count(), 0);
    }

    #[test]
    fn module_must_be_built_in_where_required() {
        let c = cfg("CONFIG_SYSVIPC=m\n");
        let r = check(&c, &[builtin_profile("postgres").unwrap()], None);
        let f = &r.findings[0];
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.states[0].1, OptionState::ModuleNotAllowed);
    }

    #[test]
    fn modules_without_initramfs_are_warnings() {
        let c = cfg("CONFIG_VIRTIO_CONSOLE=m\n");
        let r = check(&c, &[builtin_profile("agent-serial").unwrap()], None);
        assert!(r.ok());
        assert_eq!(r.findings[0].status, Status::Warn);
        assert!(r.to_string().contains("initramfs not checked"));
    }
}
