//! The CI gate of the model: every policy's verdicts on the CI scenarios are the ones it
//! declares, and the generated docs are up to date.

use std::sync::OnceLock;

use cachelock_model::check::{Row, check_policy, ci_scenarios};
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

#[test]
fn every_verdict_is_as_its_policy_declares() {
    let mismatches = report::mismatches(rows());
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
        let allowed: &[&str] = if cell.property.name() == "mutual-exclusion" {
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
        &report::verdicts_markdown(rows()),
        "cargo run --release -p cachelock -- check --markdown > docs/verdicts.md",
    );
}

#[test]
fn docs_traces_md_is_fresh() {
    assert_fresh(
        "docs/traces.md",
        &report::traces_markdown(rows()),
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
