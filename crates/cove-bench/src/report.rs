//! The results of one run, printed and written to BENCHMARKS.md as a whole.

use crate::machine::Machine;
use std::fmt::Write as _;

/// One benchmark's outcome.
#[derive(Debug, Default)]
pub struct Section {
    pub title: String,
    /// How it was measured, one sentence per entry.
    pub method: Vec<String>,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub goals: Vec<Goal>,
    /// What limits a figure, caveats.
    pub notes: Vec<String>,
    /// Set when the benchmark could not run to the end.
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Goal {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Section {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            ..Default::default()
        }
    }

    pub fn goal(&mut self, what: &str, target: &str, measured: String, met: bool) {
        self.goals.push(Goal {
            what: what.into(),
            target: target.into(),
            measured,
            met,
        });
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("## {}\n\n", self.title);
        if !self.method.is_empty() {
            s.push_str("**Method.** ");
            s.push_str(&self.method.join(" "));
            s.push_str("\n\n");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "**Did not complete:** {e}\n");
        }
        if !self.rows.is_empty() {
            s.push_str(&table(&self.headers, &self.rows));
            s.push('\n');
        }
        if !self.goals.is_empty() {
            let rows: Vec<Vec<String>> = self.goals.iter().map(Goal::cells).collect();
            s.push_str(&table(
                &["goal".into(), "target".into(), "measured".into(), "".into()],
                &rows,
            ));
            s.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s
    }
}

impl Goal {
    /// Its row in a goal table: what, target, measured, met or not.
    fn cells(&self) -> Vec<String> {
        let met = if self.met { "met" } else { "**NOT met**" };
        vec![
            self.what.clone(),
            self.target.clone(),
            self.measured.clone(),
            met.into(),
        ]
    }
}

/// The heading of the table that gathers every section's goals.
const GLANCE: &str = "## Goals at a glance\n\n";

/// A goal's row in "Goals at a glance": its text followed by its section's number, which is
/// also what a later run of that section finds the row by.
fn glance_row(sec: &Section, g: &Goal) -> Vec<String> {
    let number = sec
        .title
        .split_once(". ")
        .map(|(n, _)| n)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    let mut cells = g.cells();
    if let Some(n) = number {
        cells[0] = format!("{} (§{n})", g.what);
    }
    cells
}

/// Puts the goals of `sections` into the "Goals at a glance" table of `doc`: a goal's row is
/// replaced, a goal without one is added at the end; the other rows stay.
fn update_glance(doc: &mut String, sections: &[Section]) {
    let Some(at) = doc.find(GLANCE) else {
        return;
    };
    let start = at + GLANCE.len();
    let end = doc[start..]
        .find("\n\n")
        .map_or(doc.len(), |i| start + i + 1);
    let mut lines: Vec<String> = doc[start..end].lines().map(str::to_owned).collect();
    for sec in sections {
        for g in &sec.goals {
            let row = glance_row(sec, g);
            let key = format!("| {} |", row[0]);
            let line = format!("| {} |", row.join(" | "));
            match lines.iter_mut().find(|l| l.starts_with(&key)) {
                Some(l) => *l = line,
                None => lines.push(line),
            }
        }
    }
    let mut table = lines.join("\n");
    table.push('\n');
    doc.replace_range(start..end, &table);
}

fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", headers.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(headers.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// The whole BENCHMARKS.md.
pub fn document(machine: &Machine, command: &str, when: &str, sections: &[Section]) -> String {
    let mut s = String::from("# cove benchmarks\n\n");
    s.push_str(
        "Written by `cove-bench` (crates/cove-bench); do not edit by hand, run it again:\n\n",
    );
    let _ = writeln!(s, "```sh\nscripts/build && {command}\n```\n");
    s.push_str(
        "## Method\n\n\
         - Every comparison is made **side by side in one run**: the compared systems alternate \
         run by run (A B, B A, …), so load on the machine or a slow phase of the host affects \
         both alike. Results are given as **ratios** as well as absolute figures, because the \
         absolute figures depend on this machine far more than the ratios do.\n\
         - Times are wall-clock, taken by the benchmark around the whole command (process start \
         and exit included). Each figure is the **median (p50)** and the **p99** (nearest rank) \
         over the stated number of runs; with fewer than 100 runs, p99 is the slowest run.\n\
         - Every `cove` command runs with its own `XDG_STATE_HOME` and `XDG_RUNTIME_DIR` under \
         /tmp (images are shared through the usual cache and data dirs) and every VM is deleted \
         at the end. `cove` is the release build.\n\
         - Speed goals are checked here and only here, never in timed tests.\n\n",
    );
    let _ = writeln!(s, "## Machine\n\nMeasured {when}.\n");
    let rows: Vec<Vec<String>> = machine
        .lines()
        .into_iter()
        .map(|(k, v)| vec![k, v.replace('|', "\\|")])
        .collect();
    s.push_str(&table(&["".into(), "".into()], &rows));
    s.push('\n');
    let goals: Vec<Vec<String>> = sections
        .iter()
        .flat_map(|sec| sec.goals.iter().map(|g| glance_row(sec, g)))
        .collect();
    if !goals.is_empty() {
        s.push_str(GLANCE);
        s.push_str(&table(
            &["goal".into(), "target".into(), "measured".into(), "".into()],
            &goals,
        ));
        s.push('\n');
    }
    for sec in sections {
        s.push_str(&sec.markdown());
    }
    s
}

/// `old` (a BENCHMARKS.md) with `sections` put in place of the sections of the same title
/// (appended when new), each marked with when and how it was measured: a run of some
/// benchmarks (`--only`) keeps the figures of the others.
pub fn splice(old: &str, command: &str, when: &str, sections: &[Section]) -> String {
    let mut doc = old.to_owned();
    for sec in sections {
        let body = sec.markdown();
        let (head, rest) = body.split_once("\n\n").unwrap_or((&body, ""));
        let body = format!(
            "{head}\n\n*Measured {when} by `{command}`, apart from the rest of this file.*\n\n{rest}"
        );
        let heading = format!("## {}\n", sec.title);
        match doc.find(&heading) {
            Some(start) => {
                let end = doc[start + heading.len()..]
                    .find("\n## ")
                    .map_or(doc.len(), |i| start + heading.len() + i + 1);
                doc.replace_range(start..end, &body);
            }
            None => {
                if !doc.ends_with("\n\n") {
                    doc.push('\n');
                }
                doc.push_str(&body);
            }
        }
    }
    update_glance(&mut doc, sections);
    doc
}

#[cfg(test)]
mod splice_tests {
    use super::*;

    #[test]
    fn a_rerun_section_replaces_its_old_text_and_a_new_one_is_appended() {
        let old = "# cove benchmarks\n\n## 1. Boot\n\nold boot\n\n## 2. Create\n\nold create\n";
        let mut boot = Section::new("1. Boot");
        boot.notes.push("new boot".into());
        let arch = Section::new("7. Arch");
        let doc = splice(old, "cove-bench --only boot", "today", &[boot, arch]);
        assert!(
            !doc.contains("old boot") && doc.contains("new boot"),
            "{doc}"
        );
        assert!(doc.contains("## 2. Create\n\nold create\n"), "{doc}");
        assert!(
            doc.contains("*Measured today by `cove-bench --only boot`"),
            "{doc}"
        );
        assert!(doc.find("## 2. Create").unwrap() < doc.find("## 7. Arch").unwrap());
    }

    #[test]
    fn a_rerun_section_updates_its_goals_at_a_glance_and_leaves_the_others() {
        let old = "# cove benchmarks\n\n## Goals at a glance\n\n| goal | target | measured |  |\n\
                   |---|---|---|---|\n| boot (§1) | ≤ 1 s | 2 s | **NOT met** |\n\
                   | create (§2) | ≤ 1 s | 0.5 s | met |\n\n## 1. Boot\n\nold boot\n";
        let mut boot = Section::new("1. Boot");
        boot.goal("boot", "≤ 1 s", "0.8 s".into(), true);
        boot.goal("restore", "≤ 0.3 s", "0.2 s".into(), true);
        let doc = splice(old, "cove-bench --only boot", "today", &[boot]);
        assert!(
            doc.contains("| boot (§1) | ≤ 1 s | 0.8 s | met |\n"),
            "{doc}"
        );
        assert!(!doc.contains("| 2 s |"), "{doc}");
        assert!(
            doc.contains("| create (§2) | ≤ 1 s | 0.5 s | met |\n"),
            "{doc}"
        );
        assert!(
            doc.contains("| restore (§1) | ≤ 0.3 s | 0.2 s | met |\n\n## 1. Boot"),
            "{doc}"
        );
    }
}
