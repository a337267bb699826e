//! Sampling beyond exhaustive reach (`cachelock_model::simulate`): it finds uv 0.13's
//! known failures among twelve processes, every trace it reports replays in the model,
//! and it reports no violation of a property the exhaustive checker proves on a smaller
//! scenario of the same kinds.

use cachelock_model::check::{Verdict, check_pair};
use cachelock_model::machine::CacheModel;
use cachelock_model::properties::PropertyName;
use cachelock_model::simulate::{Simulation, simulate};
use cachelock_model::{Policy, Scenario};
use stateright::Model;

/// Twelve processes: a server that never exits (so a uv clean waits for ever), a daemon,
/// a killed run, a forced clean, and the everyday runs, cleans and a prune.
const TWELVE: &str = "run-server,run-daemon,run,run,run-script,tool-run,run+crash,run-no-cache,clean,clean,clean-force,prune";

fn sample(policy: Policy, scenario: &str, walks: usize) -> Simulation {
    let sc = Scenario::parse_at_most(scenario, 16).expect("a well-formed scenario");
    simulate(policy, &sc, walks, 2, 1)
}

fn found(r: &Simulation, p: PropertyName) -> bool {
    r.properties
        .iter()
        .any(|s| s.property == p && s.found.is_some())
}

/// Every reported path starts in the initial state and takes only enabled actions.
fn assert_traces_replay(r: &Simulation) {
    let m = CacheModel::new(r.policy, &r.scenario);
    for s in &r.properties {
        let Some((_, path)) = &s.found else { continue };
        assert_eq!(
            path[0].0,
            m.initial_state(),
            "{}: starts at the start",
            s.property
        );
        for w in path.windows(2) {
            let action = w[0].1.expect("an action between two states");
            let mut enabled = Vec::new();
            m.actions(&w[0].0, &mut enabled);
            assert!(
                enabled.contains(&action),
                "{}: {action:?} is enabled",
                s.property
            );
            assert_eq!(m.next_state(&w[0].0, action), Some(w[1].0.clone()));
        }
        assert!(!s.story.is_empty(), "{}: told as a story", s.property);
    }
}

#[test]
fn sampling_finds_uv_013s_clean_and_live_env_failures_among_twelve_processes() {
    let r = sample(Policy::Uv013, TWELVE, 3000);
    assert!(
        r.distinct_states > 1000,
        "visited {} states",
        r.distinct_states
    );
    assert!(
        found(&r, PropertyName::CleanTerminates),
        "a clean waits for the server for ever"
    );
    assert!(
        found(&r, PropertyName::LiveEnvIntact),
        "--force deletes a live environment"
    );
    assert_traces_replay(&r);
}

#[test]
fn sampling_reports_no_violation_of_what_cachelock_proves() {
    // Exhaustively, cachelock keeps these on three processes of these kinds...
    let small = Scenario::parse("run-server,run-daemon,clean").expect("a scenario");
    let proven = check_pair(Policy::Cachelock, &small);
    for p in [PropertyName::LiveEnvIntact, PropertyName::CleanTerminates] {
        assert_eq!(proven.verdict(p), Verdict::Holds, "{p} on {small}");
    }
    // ...and sampling twelve without a forced clean finds no violation of them.
    let r = sample(
        Policy::Cachelock,
        "run-server,run-daemon,run,run,run-script,tool-run,run+crash,run-no-cache,clean,clean,prune,run",
        500,
    );
    assert!(!found(&r, PropertyName::LiveEnvIntact));
    assert!(!found(&r, PropertyName::CleanTerminates));
    assert_traces_replay(&r);
}

#[test]
fn scenarios_above_the_exhaustive_limit_are_for_sampling_only() {
    let err = Scenario::parse(TWELVE).expect_err("too big to enumerate");
    assert!(err.0.contains("--simulate"), "{err}");
    let seventeen = vec!["run"; 17].join(",");
    assert!(Scenario::parse_at_most(&seventeen, 100).is_err());
}
