//! `cove completions SHELL`: print the script that makes SHELL complete
//! cove's verbs, options and the names of VMs, images and volumes.

use crate::complete;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "Install:\n  \
    bash: echo 'source <(cove completions bash)' >> ~/.bashrc\n  \
    zsh:  echo 'source <(cove completions zsh)' >> ~/.zshrc\n  \
    fish: cove completions fish > ~/.config/fish/completions/cove.fish")]
pub struct Args {
    /// The shell to complete in.
    #[arg(value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
    pub shell: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let completer = completer(std::env::args_os().next().map(PathBuf::from));
    let mut out = std::io::stdout().lock();
    complete::write_registration(&args.shell, &completer, &mut out)
        .with_context(|| format!("writing the {} completion script", args.shell))?;
    Ok(ExitCode::SUCCESS)
}

/// The program the shell calls back on Tab: `cove` when this one was found
/// on PATH (so an upgrade of cove needs no new script), else this binary's
/// absolute path (a script made from `target/debug/cove` works from any
/// directory).
fn completer(argv0: Option<PathBuf>) -> String {
    match argv0 {
        Some(p) if p.components().count() > 1 => std::path::absolute(&p)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned(),
        Some(p) => p.to_string_lossy().into_owned(),
        None => std::env::current_exe()
            .unwrap_or_else(|_| Path::new("cove").to_owned())
            .to_string_lossy()
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_program_name_is_kept_for_path_lookup() {
        assert_eq!(completer(Some("cove".into())), "cove");
    }

    #[test]
    fn a_relative_path_becomes_absolute() {
        let c = completer(Some("target/debug/cove".into()));
        assert!(
            c.starts_with('/') && c.ends_with("target/debug/cove"),
            "{c}"
        );
    }

    #[test]
    fn an_unknown_shell_names_the_known_ones() {
        let err = complete::write_registration("tcsh", "cove", &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("bash"), "{err}");
    }
}
