//! Shell completion: `cove completions SHELL` prints a small registration
//! script; the shell then calls `COVE_COMPLETE=SHELL cove -- WORDS…` on each
//! Tab and this binary answers from its own clap definition (clap_complete's
//! dynamic engine), so completions never go stale against the verbs and the
//! names come from the state store as it is at that moment.
//!
//! Name lookups run on every Tab: they only read, never create cove's
//! directories or database, and a store that cannot be read completes to
//! nothing rather than printing an error into the user's command line.

use clap_complete::engine::{
    ArgValueCandidates, ArgValueCompleter, CompletionCandidate, PathCompleter, ValueCompleter,
};
use cove_state::{Paths, Store};
use std::ffi::OsStr;

/// The environment variable the registration scripts set. Not clap's default
/// `COMPLETE`: a generic name set for another tool must not turn every `cove`
/// invocation (and every supervisor it starts) into a completer.
pub const VAR: &str = "COVE_COMPLETE";

/// Answers a completion request and exits, if this process is one.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(|| {
        <crate::cli::Cli as clap::CommandFactory>::command()
    })
    .var(VAR)
    .complete();
}

/// Writes the registration script for `shell` (`bash`, `zsh`, `fish`, …).
/// `completer` is the program the shell calls back: the `cove` on PATH when
/// this one was run from PATH, else this binary's absolute path.
pub fn write_registration(
    shell: &str,
    completer: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let shells = clap_complete::env::Shells::builtins();
    let sh = shells.completer(shell).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "no completions for shell `{shell}`; choose one of: {}",
                shells.names().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    sh.write_registration(VAR, "cove", "cove", completer, out)
}

/// The store, if one exists; completion never creates it.
fn store() -> Option<(Paths, Store)> {
    let paths = Paths::from_env().ok()?;
    if !paths.database().exists() {
        return None;
    }
    let store = Store::open(&paths).ok()?;
    Some((paths, store))
}

fn vm_names() -> Vec<String> {
    store()
        .and_then(|(_, s)| s.list_vms().ok())
        .map(|vms| vms.into_iter().map(|r| r.name.to_string()).collect())
        .unwrap_or_default()
}

/// Completes the name of a VM in the store, its state as the help text
/// (fish and zsh show it beside the name).
pub fn vm() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        store()
            .and_then(|(_, s)| s.list_vms().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                CompletionCandidate::new(r.name.to_string()).help(Some(r.state.to_string().into()))
            })
            .collect::<Vec<_>>()
    })
}

/// Completes an image tag.
pub fn image() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let mut names: Vec<String> = store()
            .and_then(|(_, s)| s.list_images().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|row| row.name)
            .collect();
        names.dedup();
        names
            .into_iter()
            .map(CompletionCandidate::new)
            .collect::<Vec<_>>()
    })
}

/// Completes the name of a persistent data disk.
pub fn volume() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let Ok(paths) = Paths::from_env() else {
            return Vec::new();
        };
        cove_vm::data_disk::list(&paths)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| CompletionCandidate::new(name))
            .collect()
    })
}

/// Completes cove network names from the state store.
pub fn network() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let Ok(paths) = Paths::from_env() else {
            return Vec::new();
        };
        cove_state::Store::open(&paths)
            .ok()
            .and_then(|s| s.list_networks().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|n| CompletionCandidate::new(n.name))
            .collect()
    })
}

/// Completes `NAME:/path` arguments (`cp`, `disk`): `NAME:` for each VM,
/// then files of the host as usual for anything that is not a VM prefix.
pub fn vm_path() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let current = current.to_string_lossy();
        if current.contains(':') {
            // The guest's paths are not known without booting it.
            return Vec::new();
        }
        let mut out: Vec<CompletionCandidate> = vm_names()
            .into_iter()
            .filter(|n| n.starts_with(current.as_ref()))
            .map(|n| CompletionCandidate::new(format!("{n}:/")))
            .collect();
        out.extend(PathCompleter::any().complete(OsStr::new(current.as_ref())));
        out
    })
}

/// The words on the command line before the one being completed
/// (`cove start web --from <Tab>` → `cove start web --from`): the engine
/// passes the whole line after `--`, and bash the current word's index.
fn words_before() -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--") else {
        return Vec::new();
    };
    let mut words = args[at + 1..].to_vec();
    match std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|i| i.parse::<usize>().ok())
    {
        Some(index) => words.truncate(index),
        None => {
            words.pop();
        }
    }
    words
}

/// Every snapshot as (VM, tag), read from the VMs' snapshot directories.
fn snapshots() -> Vec<(String, String)> {
    let Some((paths, store)) = store() else {
        return Vec::new();
    };
    let vms = store.list_vms().unwrap_or_default();
    vms.into_iter()
        .flat_map(|vm| {
            let name = vm.name.to_string();
            cove_vm::snapshot::list(&paths, &name)
                .unwrap_or_default()
                .into_iter()
                .map(move |s| (name.clone(), s.tag))
        })
        .collect()
}

/// Completes `cove start NAME --from TAG`: the tags of the VM named on the
/// line, then every `OWNER@TAG` (a clone restores from its origin's).
pub fn snapshot_tag() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let words = words_before();
        let all = snapshots();
        let own = all
            .iter()
            .filter(|(vm, _)| words.contains(vm))
            .map(|(_, tag)| CompletionCandidate::new(tag));
        let owned = all
            .iter()
            .map(|(vm, tag)| CompletionCandidate::new(format!("{vm}@{tag}")));
        own.chain(owned).collect()
    })
}

/// Completes `cove clone NAME@TAG`.
pub fn snapshot_origin() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        snapshots()
            .into_iter()
            .map(|(vm, tag)| CompletionCandidate::new(format!("{vm}@{tag}")))
            .collect()
    })
}

/// Completes the words of `cove snapshot`: `ls`, `rm` or a VM first; a VM
/// after `ls`/`rm`; the VM's tags after `rm NAME`.
pub fn snapshot_words() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let words = words_before();
        let after: Vec<&str> = words
            .iter()
            .skip_while(|w| *w != "snapshot")
            .skip(1)
            .map(String::as_str)
            .filter(|w| !w.starts_with('-'))
            .collect();
        let vms = || vm_names().into_iter().map(CompletionCandidate::new);
        match after.as_slice() {
            [] => ["ls", "rm"]
                .into_iter()
                .map(CompletionCandidate::new)
                .chain(vms())
                .collect(),
            ["ls" | "rm"] => vms().collect(),
            ["rm", vm] => snapshots()
                .into_iter()
                .filter(|(owner, _)| owner == vm)
                .map(|(_, tag)| CompletionCandidate::new(tag))
                .collect(),
            _ => Vec::new(),
        }
    })
}
