//! The model's prediction beside the real observation, and the table in
//! `docs/fidelity.md`.
//!
//! For each property the model checks on a scenario: the model's verdict under the
//! runner's policy, and what the real run showed. They *agree* when equal. When the model
//! says a property fails (or a witness exists) but the real run did not exercise the
//! interleaving that shows it, the row says *not forced*; that is not a pass, it is a
//! gap the table admits. Any other difference is a *disagreement*, and the suite fails.

use std::collections::HashMap;
use std::fmt::Write as _;

use cachelock_model::check::{PairResult, Verdict, check_pair};
use cachelock_model::{Policy, Scenario};

use super::scenarios::WITNESSES;
use super::{Observation, Seen};

/// How a prediction and an observation relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agreement {
    Agree,
    /// The model's verdict needs an interleaving the real run did not force.
    NotForced,
    /// The model's verdict needs a process this binary has no counterpart of (the row's
    /// note says which): a fact about the binary, not a gap in the forcing.
    NotPlayable,
    /// The scenario does not observe this property.
    Unobserved,
    Disagree,
}

impl Agreement {
    pub fn name(self) -> &'static str {
        match self {
            Agreement::Agree => "agree",
            Agreement::NotForced => "not forced",
            Agreement::NotPlayable => "not playable",
            Agreement::Unobserved => "not observed",
            Agreement::Disagree => "DISAGREE",
        }
    }
}

/// One property of one (scenario, runner).
#[derive(Clone, Debug)]
pub struct Row {
    pub property: &'static str,
    pub predicted: Verdict,
    pub seen: Option<Seen>,
    pub agreement: Agreement,
    pub note: String,
}

/// One (scenario, runner): its observation and its rows.
#[derive(Clone, Debug)]
pub struct Compared {
    pub obs: Observation,
    pub rows: Vec<Row>,
}

/// The explanations of the comparisons that disagree, for a failing test (with
/// `CACHELOCK_FIDELITY_VERBOSE` set, the others are printed too).
pub fn disagreement_report(all: &[Compared]) -> String {
    let mut report = String::new();
    for c in all {
        if c.disagreements().next().is_some() {
            report.push_str(&c.explain());
        } else if std::env::var_os("CACHELOCK_FIDELITY_VERBOSE").is_some() {
            eprintln!("{}", c.explain());
        }
    }
    report
}

/// A (scenario, runner) as a line of a summary table.
pub struct RowText {
    /// The observed properties the model says fail, or `–`.
    pub model: String,
    /// The observed properties the real run broke, or `–`.
    pub real: String,
    /// `agree`, `agree; not forced: …` or `**DISAGREE** (…)`, then `; not playable: …`
    /// if any.
    pub verdict: String,
}

impl Compared {
    /// The properties of the rows `f` selects.
    fn properties(&self, f: impl Fn(&Row) -> bool) -> Vec<&'static str> {
        self.rows
            .iter()
            .filter(|r| f(r))
            .map(|r| r.property)
            .collect()
    }

    /// True if some property was observed without its interleaving forced.
    pub fn not_forced(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.agreement == Agreement::NotForced)
    }

    /// This comparison as a line of a summary table.
    pub fn row_text(&self) -> RowText {
        let list = |f: &dyn Fn(&Row) -> bool| {
            let v = self.properties(|r| r.seen.is_some() && f(r));
            if v.is_empty() {
                "–".to_string()
            } else {
                v.join(", ")
            }
        };
        let bad = self.properties(|r| r.agreement == Agreement::Disagree);
        let nf = self.properties(|r| r.agreement == Agreement::NotForced);
        let mut verdict = if !bad.is_empty() {
            format!("**DISAGREE** ({})", bad.join(", "))
        } else if !nf.is_empty() {
            format!("agree; not forced: {}", nf.join(", "))
        } else {
            "agree".to_string()
        };
        let np = self.properties(|r| r.agreement == Agreement::NotPlayable);
        if !np.is_empty() {
            verdict.push_str(&format!("; not playable: {}", np.join(", ")));
        }
        RowText {
            model: list(&|r| r.predicted == Verdict::Fails),
            real: list(&|r| r.seen == Some(Seen::Fails)),
            verdict,
        }
    }

    /// The rows that disagree.
    pub fn disagreements(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| r.agreement == Agreement::Disagree)
    }

    /// Both sides, and what happened, for a failing test.
    pub fn explain(&self) -> String {
        let mut s = format!(
            "scenario `{}` on {} (policy {}):\n",
            self.obs.scenario, self.obs.runner, self.obs.policy
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "  {:<22} model {:<5} real {:<5} {:<12} {}",
                r.property,
                r.predicted.name(),
                r.seen.map_or("-", Seen::name),
                r.agreement.name(),
                r.note
            );
        }
        for r in &self.obs.remarks {
            let _ = writeln!(s, "  remark: {r}");
        }
        s.push_str("  what happened:\n");
        for l in &self.obs.log {
            let _ = writeln!(s, "    {l}");
        }
        s
    }
}

/// Model verdicts, computed once per (policy, scenario).
#[derive(Default)]
pub struct Predictions {
    cache: HashMap<(Policy, String), PairResult>,
}

impl Predictions {
    /// The model's result for `policy` on `scenario`.
    pub fn get(&mut self, policy: Policy, scenario: &str) -> &PairResult {
        self.cache
            .entry((policy, scenario.to_string()))
            .or_insert_with(|| {
                let sc = Scenario::parse(scenario).expect("suite scenarios parse");
                check_pair(policy, &sc)
            })
    }
}

/// Puts the model's verdicts beside `obs`.
pub fn compare(pred: &mut Predictions, obs: Observation) -> Compared {
    let result = pred.get(obs.policy, &obs.scenario);
    let mut rows = Vec::new();
    for (property, predicted) in &result.verdicts {
        let name = property.name();
        let seen = obs.get(name);
        if *predicted == Verdict::NotApplicable && seen.is_none() {
            continue;
        }
        let (agreement, note) = match (seen, predicted) {
            (None, _) => (
                Agreement::Unobserved,
                "this scenario does not observe it".to_string(),
            ),
            (Some(s), Verdict::NotApplicable) => {
                (Agreement::Unobserved, format!("model: n/a; {}", s.note))
            }
            (Some(s), v) if s.seen.name() == v.name() => (Agreement::Agree, s.note.clone()),
            (Some(s), _) if !s.forced => match &s.unplayable {
                Some(why) => (Agreement::NotPlayable, format!("not playable: {why}")),
                None => (Agreement::NotForced, s.note.clone()),
            },
            (Some(s), _) => (Agreement::Disagree, s.note.clone()),
        };
        rows.push(Row {
            property: name,
            predicted: *predicted,
            seen: seen.map(|s| s.seen),
            agreement,
            note,
        });
    }
    Compared { obs, rows }
}

/// The markdown of `docs/fidelity.md`. `runners` gives the column order.
pub fn table(all: &[Compared], runners: &[String], scenarios: &[&str]) -> String {
    let mut s = String::new();
    s.push_str(
        "# Model fidelity: the model's policies against real uv and the cachelock command\n\n\
         Generated by `CACHELOCK_WRITE_DOCS=1 cargo test -p cachelock-conformance --test fidelity`;\n\
         the same test fails when this file is stale or when a real run disagrees with the model.\n\
         Each scenario (model syntax) is played for real, offline, with the interleaving that\n\
         decides it forced (see `conformance/src/realuv.rs`), by each uv release (uv 0.8.19 is\n\
         policy `uv-0.8.19`, 0.8.20 is `uv-0.8.20`, 0.13.9 is `uv-0.13`) and by the `cachelock`\n\
         command under each policy named in its column, and compared with the model's verdicts\n\
         under that policy.\n\n\
         *agree*: every property the run observed has the model's verdict. *nf*: not forced,\n\
         the model's verdict needs an interleaving the real run could not produce (the real run\n\
         kept the property; that is not a pass, it is a gap the table admits). *np*: not\n\
         playable, the model's verdict needs a process the binary has no counterpart of (the\n\
         per-property table says which); a fact about the binary, not a gap in the forcing.\n\n",
    );
    let cell = |c: &Compared| {
        let bad: Vec<&str> = c.disagreements().map(|r| r.property).collect();
        let nf: Vec<&str> = c
            .rows
            .iter()
            .filter(|r| r.agreement == Agreement::NotForced)
            .map(|r| r.property)
            .collect();
        let np: Vec<&str> = c
            .rows
            .iter()
            .filter(|r| r.agreement == Agreement::NotPlayable)
            .map(|r| r.property)
            .collect();
        let mut text = if !bad.is_empty() {
            format!("**DISAGREE** ({})", bad.join(", "))
        } else if !nf.is_empty() {
            format!("agree; nf: {}", nf.join(", "))
        } else {
            "agree".to_string()
        };
        if !np.is_empty() {
            let _ = write!(text, "; np: {}", np.join(", "));
        }
        text
    };
    let find = |sc: &str, r: &String| {
        all.iter()
            .find(|c| c.obs.scenario == sc && &c.obs.runner == r)
    };
    s.push_str("| scenario |");
    for r in runners {
        let _ = write!(s, " {r} |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(runners.len()));
    s.push('\n');
    let (mut agree, mut disagree, mut nf_cells, mut np_cells) = (0, 0, 0, 0);
    for sc in scenarios {
        let _ = write!(s, "| `{sc}` |");
        for r in runners {
            let text = match find(sc, r) {
                Some(c) => {
                    if c.disagreements().next().is_some() {
                        disagree += 1;
                    } else {
                        agree += 1;
                    }
                    if c.rows.iter().any(|r| r.agreement == Agreement::NotForced) {
                        nf_cells += 1;
                    }
                    if c.rows.iter().any(|r| r.agreement == Agreement::NotPlayable) {
                        np_cells += 1;
                    }
                    cell(c)
                }
                None => "not run".to_string(),
            };
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n{} scenarios × {} columns: {agree} agree, {disagree} disagree; {nf_cells} cells have a \
         property not forced; {np_cells} have a property the binary cannot play (np).\n",
        scenarios.len(),
        runners.len()
    );
    s.push_str(
        "## Notes\n\n\
         - Besides the scenario's own play, further plays force the interleaving of the\n  \
         model's shortest counterexample with the gate: a clean held at its exclusive lock call\n  \
         while a run starts after it (`no-overtaking`; a forced clean's `mutual-exclusion`), a\n  \
         clean held at its first deletion under the lock while a run sets up (`clean-succeeds`:\n  \
         under `uv-0.8.19` the run's scaffold makes the root non-empty and the clean exit 2;\n  \
         a cachelock clean's first deletion others see is its first `move-to-trash` rename),\n  \
         two runs each held just after their shared lock was granted (`runs-share-lock`). A\n  \
         property breaks if any play breaks it (a witness shows if any play shows it).\n\
         - Not playable: uv 0.8.19 has no `clean --force` (plain `clean` stands in and waits\n  \
         for the lock), so the model's forced clean deleting under a run's lock cannot be\n  \
         played on it (`run-script,clean-force`, `mutual-exclusion`).\n\
         - `run-daemon,clean`: the child forks a daemon and exits; the clean starts once the\n  \
         run has exited; the daemon then checks its environment. The environment is the\n  \
         model's cached one (the probe's files under uv, `$CACHELOCK_ENV/cachelock-env`\n  \
         under cachelock). uv's `run --with` also runs the child in an overlay venv of its\n  \
         own (`builds-v0/.tmpX`, the child's `sys.prefix`) that uv removes when it exits,\n  \
         clean or not: a daemon loses its `sys.prefix` even with no clean at all. The model\n  \
         has it (`Design::run_overlay`, found here), and so does `cachelock` under the uv\n  \
         policies; the table records the loss as a remark beside the verdict.\n\
         - `prune` keeps the scaffold, so `clean-removes-unused` is judged on environments\n  \
         (directories holding `pyvenv.cfg` or `cachelock-env`), not on every entry, for\n  \
         cleans and prunes alike; an environment whose child still runs is not counted.\n\
         - cachelock's runs hold environment locks besides the root lock; only locks on\n  \
         `.lock` (any inode it had) count as holding the cache.\n\n",
    );
    s.push_str(&replayed_table(all, runners));
    s.push_str(
        "## Per run\n\n*model fails* lists the observed properties the model says fail (for the\n\
         witnesses `clean-overlaps-child` and `runs-share-lock`: the situation is unreachable);\n\
         *real fails* the ones the real run broke.\n\n",
    );
    s.push_str("| scenario | runner | model fails | real fails | verdict | note |\n|---|---|---|---|---|---|\n");
    for sc in scenarios {
        for r in runners {
            let Some(c) = all
                .iter()
                .find(|c| c.obs.scenario == *sc && &c.obs.runner == r)
            else {
                let _ = writeln!(s, "| `{sc}` | {r} | | | not run | |");
                continue;
            };
            let RowText {
                model,
                real,
                verdict,
            } = c.row_text();
            let note = row_note(c);
            let _ = writeln!(
                s,
                "| `{sc}` | {r} | {model} | {real} | {verdict} | {note} |"
            );
        }
    }
    s.push_str("\n## Per property\n\n| scenario | runner | property | model | real | | note |\n|---|---|---|---|---|---|---|\n");
    for sc in scenarios {
        for r in runners {
            let Some(c) = all
                .iter()
                .find(|c| c.obs.scenario == *sc && &c.obs.runner == r)
            else {
                continue;
            };
            for row in &c.rows {
                let _ = writeln!(
                    s,
                    "| `{sc}` | {r} | {} | {} | {} | {} | {} |",
                    row.property,
                    row.predicted.name(),
                    row.seen.map_or("–", Seen::name),
                    row.agreement.name(),
                    row.note
                );
            }
            for remark in &c.obs.remarks {
                let _ = writeln!(s, "| `{sc}` | {r} | (remark) | | | | {remark} |");
            }
        }
    }
    s
}

/// One line per (scenario, runner): the most telling observation.
fn row_note(c: &Compared) -> String {
    let first_fail = c
        .obs
        .props
        .iter()
        .find(|p| p.seen == Seen::Fails && !WITNESSES.contains(&p.property))
        .or_else(|| c.obs.get("clean-terminates"))
        .or_else(|| c.obs.get("live-env-intact"));
    let mut note = first_fail.map(|p| p.note.clone()).unwrap_or_default();
    if let Some(r) = c.obs.remarks.first() {
        note.push_str("; ");
        note.push_str(r);
    }
    note
}

/// Per uv binary: how many of the model's counterexamples (one per failing property,
/// the shortest, on each scenario the binary plays) a forced play reproduced on it.
fn replayed_table(all: &[Compared], runners: &[String]) -> String {
    let mut s = String::from(
        "## The model's counterexamples on the uv binaries\n\n\
         For each uv binary: the properties the model says fail under its policy on the\n\
         scenarios above (one shortest counterexample each; witnesses left out), how many\n\
         were played with that interleaving forced, and how many of those the binary broke.\n\n\
         | binary | counterexamples | replayed (forced) | reproduced | not playable | not observed by the scenario |\n|---|---|---|---|---|---|\n",
    );
    for r in runners.iter().filter(|r| r.starts_with("uv ")) {
        let rows: Vec<&Row> = all
            .iter()
            .filter(|c| &c.obs.runner == r)
            .flat_map(|c| c.rows.iter())
            .filter(|row| row.predicted == Verdict::Fails && !WITNESSES.contains(&row.property))
            .collect();
        let replayed = rows
            .iter()
            .filter(|row| matches!(row.agreement, Agreement::Agree | Agreement::Disagree))
            .count();
        let reproduced = rows
            .iter()
            .filter(|row| row.seen == Some(Seen::Fails))
            .count();
        let count = |a: Agreement| rows.iter().filter(|row| row.agreement == a).count();
        let _ = writeln!(
            s,
            "| {r} | {} | {replayed} | {reproduced} | {} | {} |",
            rows.len(),
            count(Agreement::NotPlayable),
            count(Agreement::Unobserved)
        );
    }
    s.push('\n');
    s
}
