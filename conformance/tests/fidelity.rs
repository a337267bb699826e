//! Model fidelity: every suite scenario played on every installed uv release, compared
//! with the model's verdict under the matching policy.
//!
//! Needs `bash conformance/scripts/install-uv.sh` once (PyPI); then runs offline.
//! `CACHELOCK_WRITE_DOCS=1` rewrites `docs/fidelity.md`; without it the test fails when
//! that file is stale. `CACHELOCK_FIDELITY_SCENARIOS=a;b` plays only those scenarios
//! (and then neither writes nor checks the docs).

use std::path::Path;
use std::thread;
use std::time::Instant;

use cachelock_conformance::realuv::compare::{Compared, Predictions, compare, table};
use cachelock_conformance::realuv::scenarios::{SCENARIOS, play};
use cachelock_conformance::realuv::{Runner, Setup};

#[test]
fn real_uv_agrees_with_the_model() {
    let setup = Setup::from_env();
    let uvs = setup.uv_binaries().unwrap_or_else(|e| panic!("{e}"));
    let only = std::env::var("CACHELOCK_FIDELITY_SCENARIOS").ok();
    let scenarios: Vec<&str> = match &only {
        Some(list) => list
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        None => SCENARIOS.to_vec(),
    };
    let start = Instant::now();
    // One thread per release: the scenarios of one release run one after the other.
    let observed: Vec<Result<_, String>> = thread::scope(|s| {
        let handles: Vec<_> = uvs
            .iter()
            .map(|uv| {
                let setup = &setup;
                let scenarios = &scenarios;
                s.spawn(move || {
                    scenarios
                        .iter()
                        .map(|sc| {
                            play(uv, setup, sc)
                                .map_err(|e| format!("`{sc}` on {}: {e}", uv.label()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scenario thread panicked"))
            .collect()
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
        "played {} scenario runs in {:.1}s (model: {:.1}s more)",
        all.len() + errors.len(),
        played.as_secs_f32(),
        (start.elapsed() - played).as_secs_f32()
    );
    let mut report = String::new();
    for c in &all {
        if c.disagreements().next().is_some() {
            report.push_str(&c.explain());
        } else if std::env::var_os("CACHELOCK_FIDELITY_VERBOSE").is_some() {
            eprintln!("{}", c.explain());
        }
    }
    for e in &errors {
        report.push_str(&format!("could not play {e}\n"));
    }

    if only.is_none() {
        let runners: Vec<String> = uvs.iter().map(|u| u.label()).collect();
        let doc = table(&all, &runners, &SCENARIOS);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/fidelity.md");
        if std::env::var_os("CACHELOCK_WRITE_DOCS").is_some() {
            std::fs::write(&path, &doc).expect("write docs/fidelity.md");
        } else {
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            if old != doc {
                report.push_str(
                    "docs/fidelity.md is stale: regenerate it with \
                     `CACHELOCK_WRITE_DOCS=1 cargo test -p cachelock-conformance --test fidelity`\n",
                );
            }
        }
    }
    assert!(
        report.is_empty(),
        "real uv and the model disagree:\n{report}"
    );
}
