//! Model fidelity: every suite scenario played on every uv release and on the
//! `cachelock` binary under each of its uv-like policies and its own, compared with the
//! model's verdict under the matching policy.
//!
//! Installs the uv releases on first use (`conformance/scripts/install-uv.sh`, PyPI
//! once; it fails, never skips, when that is impossible); then runs offline. Needs the
//! `cachelock` binary built (`cargo test --workspace` builds it).
//! `CACHELOCK_WRITE_DOCS=1` rewrites `docs/fidelity.md`; without it the test fails when
//! that file is stale. `CACHELOCK_FIDELITY_SCENARIOS=a;b` plays only those scenarios
//! and `CACHELOCK_FIDELITY_RUNNERS=uv 0.13.9;cachelock uv-0.13` only those runners (then
//! neither writes nor checks the docs); `CACHELOCK_FIDELITY_JOBS=n` sets the workers.

use std::path::Path;
use std::time::Instant;

use cachelock_conformance::realuv::cachelock::Cachelock;
use cachelock_conformance::realuv::compare::{
    Compared, Predictions, compare, disagreement_report, table,
};
use cachelock_conformance::realuv::mixed::SECTION_MARKER;
use cachelock_conformance::realuv::scenarios::{SCENARIOS, play};
use cachelock_conformance::realuv::{Runner, Setup, play_all, scenarios_from_env};

#[test]
fn real_uv_agrees_with_the_model() {
    let setup = Setup::from_env();
    let uvs = setup.uv_binaries().unwrap_or_else(|e| panic!("{e}"));
    let cls = Cachelock::all().unwrap_or_else(|e| panic!("{e}"));
    let mut runners: Vec<&dyn Runner> = uvs.iter().map(|u| u as &dyn Runner).collect();
    runners.extend(cls.iter().map(|c| c as &dyn Runner));
    let (scenarios, narrowed) = scenarios_from_env(&SCENARIOS);
    let only_runners = std::env::var("CACHELOCK_FIDELITY_RUNNERS").ok();
    if let Some(list) = &only_runners {
        runners.retain(|r| list.split(';').any(|l| l.trim() == r.label()));
    }
    // (runner, scenario) jobs, played on a few workers.
    let jobs: Vec<(&dyn Runner, &str)> = runners
        .iter()
        .flat_map(|r| scenarios.iter().map(move |s| (*r, s.as_str())))
        .collect();
    let start = Instant::now();
    let (observed, workers) = play_all(&jobs, |&(runner, sc)| {
        play(runner, &setup, sc).map_err(|e| format!("`{sc}` on {}: {e}", runner.label()))
    });
    let played = start.elapsed();
    let mut pred = Predictions::default();
    let mut errors = Vec::new();
    let mut all: Vec<Compared> = Vec::new();
    for o in observed {
        match o {
            Ok(obs) => all.push(compare(&mut pred, obs)),
            Err(e) => errors.push(e),
        }
    }
    eprintln!(
        "played {} scenario runs in {:.1}s with {workers} workers (model: {:.1}s more)",
        all.len() + errors.len(),
        played.as_secs_f32(),
        (start.elapsed() - played).as_secs_f32()
    );
    let mut report = disagreement_report(&all);
    for e in &errors {
        report.push_str(&format!("could not play {e}\n"));
    }

    if !narrowed && only_runners.is_none() {
        let labels: Vec<String> = runners.iter().map(|r| r.label()).collect();
        let doc = table(&all, &labels, &SCENARIOS);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/fidelity.md");
        // The section "Beside old uv" at the end is the mixed suite's
        // (`tests/fidelity_mixed.rs`): kept as it is, and not checked here.
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let (head, tail) = old.split_at(old.find(SECTION_MARKER).unwrap_or(old.len()));
        if std::env::var_os("CACHELOCK_WRITE_DOCS").is_some() {
            std::fs::write(&path, format!("{doc}{tail}")).expect("write docs/fidelity.md");
        } else {
            if head != doc {
                report.push_str(
                    "docs/fidelity.md is stale: regenerate it with \
                     `CACHELOCK_WRITE_DOCS=1 cargo test -p cachelock-conformance --test fidelity`\n",
                );
                // The lines that differ (at most 5), so that a run whose table differs
                // from the recorded one says how.
                let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
                    (head.lines().collect(), doc.lines().collect());
                let differing = (0..old_lines.len().max(new_lines.len()))
                    .filter(|i| old_lines.get(*i) != new_lines.get(*i))
                    .take(5);
                for i in differing {
                    report.push_str(&format!(
                        "  line {}:\n    recorded: {}\n    this run: {}\n",
                        i + 1,
                        old_lines.get(i).unwrap_or(&"(none)"),
                        new_lines.get(i).unwrap_or(&"(none)")
                    ));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "real uv (or cachelock) and the model disagree:\n{report}"
    );
}
