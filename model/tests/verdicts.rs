//! The CI gate of the model: every policy's verdicts on the CI scenarios are the ones it
//! declares, and the generated docs are up to date.

use std::sync::OnceLock;

use cachelock_model::check::{Row, check_policy, check_policy_mixed, ci_scenarios};
use cachelock_model::{Policy, report};

fn rows() -> &'static [Row] {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let scenarios = ci_scenarios();
        Policy::ALL
            .iter()
            .map(|p| check_policy(*p, &scenarios, &mut |_| {}))
            .collect()
    })
}

/// The policies meant to live beside old uv, on the mixed scenarios.
fn mixed_rows() -> &'static [Row] {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| {
        Policy::BESIDE_OLD_UV
            .iter()
            .map(|p| check_policy_mixed(*p, &mut |_| {}))
            .collect()
    })
}

#[test]
fn every_verdict_is_as_its_policy_declares() {
    let mut mismatches = report::mismatches(rows());
    mismatches.extend(report::mismatches(mixed_rows()));
    assert!(
        mismatches.is_empty(),
        "verdicts moved:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn cachelock_keeps_every_property_but_mutual_exclusion_under_clean_force() {
    let row = rows()
        .iter()
        .find(|r| r.policy == Policy::Cachelock)
        .unwrap();
    for cell in &row.cells {
        let name = cell.property.name();
        let allowed: &[&str] = if name == "mutual-exclusion" || name == "root-lock-exclusion" {
            &[
                "run-script,clean-force",
                "run+crash+timeout,clean+timeout,clean-force,run-no-cache",
                "run-script+crash,clean-force",
            ]
        } else {
            &[]
        };
        assert_eq!(cell.failing, allowed, "{}", cell.property);
    }
}

const FORCE: [&str; 3] = [
    "run-script,clean-force",
    "run+crash+timeout,clean+timeout,clean-force,run-no-cache",
    "run-script+crash,clean-force",
];

#[test]
fn the_default_keeps_every_property_among_its_own_processes() {
    let row = rows().iter().find(|r| r.policy == Policy::DEFAULT).unwrap();
    for cell in &row.cells {
        match cell.property.name() {
            // Its clean --force deletes what a busy clean deletes: what .lock protects
            // stays, so it keeps the sharpened mutual exclusion too.
            // By design: its cleans go on beside runs that hold .lock only as a fence.
            "root-lock-exclusion" => assert!(cell.failing.len() > FORCE.len()),
            other => assert!(cell.failing.is_empty(), "{other}: {:?}", cell.failing),
        }
    }
}

#[test]
fn the_default_keeps_environments_and_exclusion_beside_old_uv_but_against_old_bugs() {
    let row = mixed_rows()
        .iter()
        .find(|r| r.policy == Policy::DEFAULT)
        .unwrap();
    for cell in &row.cells {
        let name = cell.property.name();
        if ["live-env-intact", "mutual-exclusion"].contains(&name) {
            // Only what an old release does against every lock breaks them: its clean
            // --force, and two 0.8.19-0.12 cleans orphaning the .lock the run holds. The
            // default's own clean --force keeps an old run's environment.
            assert_eq!(
                cell.failing,
                [
                    "tool-run,clean-force@uv-0.13",
                    "run,clean@uv-0.8.20,clean@uv-0.8.20"
                ],
                "{name}: {:?}",
                cell.failing
            );
        }
        if ["no-deadlock", "clean-terminates", "clean-succeeds"].contains(&name) {
            assert!(cell.failing.is_empty(), "{name}: {:?}", cell.failing);
        }
    }
    // Today's cachelock is what the upgrade guards against: an old clean deletes its
    // running child's environment.
    let old = mixed_rows()
        .iter()
        .find(|r| r.policy == Policy::Cachelock)
        .unwrap();
    let lost = old
        .cells
        .iter()
        .find(|c| c.property.name() == "live-env-intact")
        .unwrap();
    assert!(lost.failing.iter().any(|s| s == "run,clean@uv-0.13"));
    // The default's clean --force as it was (the rejected fenced-force-unlocked) deletes
    // a running old run's environment.
    let forced = mixed_rows()
        .iter()
        .find(|r| r.policy == Policy::FencedForceUnlocked)
        .unwrap();
    for name in ["live-env-intact", "mutual-exclusion"] {
        let cell = forced
            .cells
            .iter()
            .find(|c| c.property.name() == name)
            .unwrap();
        assert!(
            cell.failing
                .iter()
                .any(|s| s == "tool-run@uv-0.13,clean-force"),
            "{name}: {:?}",
            cell.failing
        );
    }
}

fn assert_fresh(path: &str, generated: &str, command: &str) {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} is stale: regenerate it with `{command}` and commit it"
    );
}

#[test]
fn docs_verdicts_md_is_fresh() {
    assert_fresh(
        "docs/verdicts.md",
        &report::verdicts_markdown(rows(), mixed_rows()),
        "cargo run --release -p cachelock -- check --markdown > docs/verdicts.md",
    );
}

#[test]
fn docs_traces_md_is_fresh() {
    assert_fresh(
        "docs/traces.md",
        &report::traces_markdown(rows(), mixed_rows()),
        "cargo run --release -p cachelock -- check --traces > docs/traces.md",
    );
}

#[test]
fn docs_protocol_md_is_fresh() {
    assert_fresh(
        "docs/protocol.md",
        &report::protocol_markdown(),
        "cargo run --release -p cachelock -- check --protocol > docs/protocol.md",
    );
}
