//! Model fidelity beside old uv: the mixed scenarios (`run,clean@uv-0.13`) played by
//! the `cachelock` binary under its default policy and the real uv 0.8.20 / 0.13.9
//! binaries on one cache, compared with the model's verdicts under `cachelock-fenced`
//! (`conformance/gate/src/realuv/mixed.rs`).
//!
//! `CACHELOCK_WRITE_DOCS=1` rewrites the section "Beside old uv" of
//! `docs/fidelity.md`; without it the test fails when that section is stale.
//! `CACHELOCK_FIDELITY_SCENARIOS=a;b` plays only those (then the docs are neither
//! written nor checked); `CACHELOCK_FIDELITY_JOBS=n` sets the workers.

use std::path::Path;
use std::time::Instant;

use cachelock_conformance::realuv::cachelock::Cachelock;
use cachelock_conformance::realuv::compare::{Compared, Predictions, compare, disagreement_report};
use cachelock_conformance::realuv::mixed::{MIXED, SECTION_MARKER, play_mixed, section};
use cachelock_conformance::realuv::{Setup, play_all, scenarios_from_env};

#[test]
fn real_uv_beside_the_default_policy_agrees_with_the_model() {
    let setup = Setup::from_env();
    let uvs = setup.uv_binaries().unwrap_or_else(|e| panic!("{e}"));
    let cl = Cachelock::locate().unwrap_or_else(|e| panic!("{e}"));
    let (scenarios, narrowed) = scenarios_from_env(&MIXED);
    let start = Instant::now();
    let (observed, workers) = play_all(&scenarios, |sc| {
        play_mixed(&setup, &cl, &uvs, sc).map_err(|e| format!("`{sc}`: {e}"))
    });
    eprintln!(
        "played {} mixed scenarios in {:.1}s with {workers} workers",
        observed.len(),
        start.elapsed().as_secs_f32()
    );
    let mut pred = Predictions::default();
    let mut report = String::new();
    let mut all: Vec<Compared> = Vec::new();
    for o in observed {
        match o {
            Ok(obs) => all.push(compare(&mut pred, obs)),
            Err(e) => report.push_str(&format!("could not play {e}\n")),
        }
    }
    report.push_str(&disagreement_report(&all));
    if !narrowed {
        let doc = section(&all);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/fidelity.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let (head, tail) = match old.find(SECTION_MARKER) {
            Some(i) => old.split_at(i),
            None => (old.as_str(), ""),
        };
        if std::env::var_os("CACHELOCK_WRITE_DOCS").is_some() {
            std::fs::write(&path, format!("{head}{doc}")).expect("write docs/fidelity.md");
        } else if tail != doc {
            report.push_str(
                "the section \"Beside old uv\" of docs/fidelity.md is stale: regenerate it with \
                 `CACHELOCK_WRITE_DOCS=1 cargo test -p cachelock-conformance --test fidelity_mixed`\n",
            );
        }
    }
    assert!(
        report.is_empty(),
        "real uv beside cachelock and the model disagree:\n{report}"
    );
}
