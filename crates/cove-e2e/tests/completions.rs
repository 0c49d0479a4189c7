//! Shell completion run by the real shells: the script `cove completions
//! SHELL` prints is sourced into bash, zsh and fish, and the shell's own
//! completion machinery asks cove for candidates.

use cove_e2e::Cove;
use std::path::Path;
use std::process::Command;

/// A state store with two VMs, an image and a data disk. Needs the minimal
/// image (built once per machine into the shared cache), but boots nothing.
fn populated(test: &str) -> (Cove, String) {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "web1", "--image", "minimal"]);
    cove.ok(&["create", "db", "--image", "minimal"]);
    // Data disks live in the shared data dir: a name of this test's own.
    let volume = format!("compl{}{test}", std::process::id());
    cove.ok(&["volume", "create", &volume, "--size", "8M"]);
    (cove, volume)
}

fn script(cove: &Cove, shell: &str) -> std::path::PathBuf {
    let path = cove.root().join(format!("cove.{shell}"));
    std::fs::write(&path, cove.ok(&["completions", shell])).unwrap();
    path
}

/// Runs `program` with cove's environment (state dirs of this test).
fn shell(cove: &Cove, program: &str, args: &[&str]) -> String {
    let template = cove.command();
    let mut cmd = Command::new(program);
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd
        .args(args)
        .env("TERM", "dumb")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What bash's programmable completion offers for the words of `line`
/// (the last word is the one being completed). The function is the one
/// `complete -p cove` says the script registered.
fn bash_complete(cove: &Cove, script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         spec=$(complete -p cove) || exit 3\n\
         fn=${{spec##*-F }}; fn=${{fn%% *}}\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n\
         \"$fn\" cove \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words = quoted.join(" ")
    );
    shell(cove, "bash", &["-c", &program])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "builds the minimal image"]
fn bash_completes_verbs_vms_images_volumes_and_vm_paths() {
    let (cove, volume) = populated("bash");
    let script = script(&cove, "bash");

    let verbs = bash_complete(&cove, &script, &["cove", "st"]);
    assert_eq!(verbs, ["start", "stop"], "verbs starting with `st`");

    let vms = bash_complete(&cove, &script, &["cove", "start", ""]);
    assert!(
        vms.contains(&"web1".into()) && vms.contains(&"db".into()),
        "{vms:?}"
    );
    assert_eq!(
        bash_complete(&cove, &script, &["cove", "exec", "w"]),
        ["web1"]
    );
    assert_eq!(
        bash_complete(&cove, &script, &["cove", "delete", "d"]),
        ["db"]
    );

    let images = bash_complete(&cove, &script, &["cove", "create", "x", "--image", "mi"]);
    assert_eq!(images, ["minimal"]);
    assert_eq!(
        bash_complete(&cove, &script, &["cove", "image", "rm", "m"]),
        ["minimal"]
    );

    let vols = bash_complete(&cove, &script, &["cove", "volume", "rm", "compl"]);
    assert!(vols.contains(&volume), "{vols:?} lacks {volume}");

    assert_eq!(
        bash_complete(&cove, &script, &["cove", "cp", "we"]),
        ["web1:/"]
    );
    assert!(bash_complete(&cove, &script, &["cove", "start", "nosuch"]).is_empty());
    cove.ok(&["volume", "rm", &volume]);
}

#[test]
#[ignore = "builds the minimal image"]
fn fish_completes_vm_names_with_their_state() {
    let (cove, volume) = populated("fish");
    let script = script(&cove, "fish");
    let program = format!(
        "source '{}'; complete --do-complete 'cove start '",
        script.display()
    );
    let out = shell(&cove, "fish", &["-c", &program]);
    assert!(out.lines().any(|l| l == "web1\tcreated"), "{out}");
    assert!(out.lines().any(|l| l == "db\tcreated"), "{out}");
    cove.ok(&["volume", "rm", &volume]);
}

/// zsh completes only in an interactive shell with its line editor: drive
/// one on a pseudo-terminal (zsh's own zpty module) and press Tab.
#[test]
#[ignore = "builds the minimal image"]
fn zsh_completes_vm_names_on_tab() {
    let (cove, volume) = populated("zsh");
    let script = script(&cove, "zsh");
    let program = format!(
        "zmodload zsh/zpty\n\
         zpty z 'zsh -f -i'\n\
         zpty -w z 'PS1=\"> \"; autoload -Uz compinit; compinit -u -D; source {}; print -r -- SOURCED'\n\
         zpty -r z line '*SOURCED*'\n\
         zpty -w -n z $'cove exec w\\t'\n\
         zpty -r z out '*web1*'\n\
         print -r -- \"$out\"\n\
         zpty -d z",
        script.display()
    );
    // zpty -r blocks until the pattern shows; `timeout` bounds a zsh that
    // never offers it.
    let out = shell(&cove, "timeout", &["30", "zsh", "-f", "-c", &program]);
    assert!(
        out.contains("cove exec web1"),
        "zsh did not complete `w` to web1: {out:?}"
    );
    cove.ok(&["volume", "rm", &volume]);
}

#[test]
fn an_unknown_shell_is_refused_with_the_known_ones() {
    let cove = Cove::new();
    let err = cove.fails(&["completions", "tcsh"]);
    assert!(err.contains("bash") && err.contains("fish"), "{err}");
}

#[test]
fn man_writes_a_page_per_verb() {
    let cove = Cove::new();
    let dir = cove.root().join("man");
    let json = cove.json(&["man", dir.to_str().unwrap()]);
    let pages: Vec<&str> = json["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for page in [
        "cove.1",
        "cove-start.1",
        "cove-image-build.1",
        "cove-completions.1",
    ] {
        assert!(pages.contains(&page), "{page} missing from {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("supervise")),
        "hidden verbs get no page"
    );
    let start = std::fs::read_to_string(dir.join("cove-start.1")).unwrap();
    assert!(start.contains(".TH cove-start 1"), "{start}");
    assert!(
        start.contains("\\-\\-timeout"),
        "the page documents options: {start}"
    );
}

fn sorted(mut words: Vec<String>) -> Vec<String> {
    words.sort();
    words
}

/// Snapshot tags come from the VMs' snapshots as they are: `start --from`,
/// `snapshot rm NAME`, `clone NAME@TAG`.
#[test]
#[ignore = "boots VMs"]
fn snapshot_names_complete_from_the_state_store() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "snap", "--image", "minimal"]);
    cove.ok(&["create", "other", "--image", "minimal"]);
    cove.ok(&["start", "snap"]);
    cove.ok(&["snapshot", "snap", "base"]);
    cove.ok(&["snapshot", "snap", "later", "--stop"]);
    let fish = script(&cove, "fish");
    let bash = script(&cove, "bash");
    // Values only: clap offers the verb's flags beside them on an empty word.
    let complete = |words: &[&str]| {
        let all = bash_complete(&cove, &bash, words);
        sorted(all.into_iter().filter(|w| !w.starts_with('-')).collect())
    };

    assert_eq!(
        complete(&["cove", "start", "snap", "--from", ""]),
        ["base", "later", "snap@base", "snap@later"]
    );
    assert_eq!(
        complete(&["cove", "start", "snap", "--from", "l"]),
        ["later"]
    );
    // Another VM has no tags of its own; a clone may restore from snap's.
    assert_eq!(
        complete(&["cove", "start", "other", "--from", ""]),
        ["snap@base", "snap@later"]
    );
    assert_eq!(
        complete(&["cove", "snapshot", "rm", "snap", ""]),
        ["base", "later"]
    );
    assert!(complete(&["cove", "snapshot", "rm", "other", ""]).is_empty());
    assert_eq!(complete(&["cove", "snapshot", "rm", "o"]), ["other"]);
    assert_eq!(
        complete(&["cove", "snapshot", ""]),
        ["ls", "other", "rm", "snap"]
    );
    assert_eq!(
        complete(&["cove", "clone", "s"]),
        ["snap@base", "snap@later"]
    );

    // fish asks the same engine.
    let program = format!(
        "source '{}'; complete --do-complete 'cove snapshot rm snap '",
        fish.display()
    );
    let out = shell(&cove, "fish", &["-c", &program]);
    let tags = out.lines().filter(|l| !l.starts_with('-'));
    assert_eq!(sorted(tags.map(str::to_owned).collect()), ["base", "later"]);

    // A removed snapshot is no longer offered.
    cove.ok(&["snapshot", "rm", "snap", "base"]);
    assert_eq!(complete(&["cove", "snapshot", "rm", "snap", ""]), ["later"]);
}
