//! Proof that the lockstep suite can fail: each fault injected into the implementation
//! (the `faults` feature, `CACHELOCK_FAULT` in the drivers' environment) must be caught
//! by the same generated sequences that pass without it, and shrunk to a short story.
//! Run with `--nocapture` to read the stories.

use cachelock_conformance::lockstep::{Lockstep, generate};
use cachelock_model::{Kind, Policy};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};

const DRIVER: &str = env!("CARGO_BIN_EXE_cl-driver");

/// Searches for a case that leaves the model under `policy` with `fault` injected, and
/// returns its shrunk story.
fn caught(policy: Policy, runs: &'static [Kind], fault: &str) -> String {
    let mut runner = TestRunner::new(Config {
        cases: 300,
        max_shrink_iters: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&generate::case(runs), |(sc, ops)| {
        let harness = Lockstep::with_env(
            policy,
            &sc,
            std::path::Path::new(DRIVER),
            &[("CACHELOCK_FAULT", fault)],
        )
        .map_err(TestCaseError::fail)?;
        harness.play(&ops).map(|_| ()).map_err(TestCaseError::fail)
    });
    match result {
        Err(TestError::Fail(story, _)) => {
            eprintln!("== {fault} under {policy}, caught:\n{story}");
            story.to_string()
        }
        Err(TestError::Abort(why)) => panic!("{fault}: the search aborted: {why}"),
        Ok(()) => panic!("{fault} under {policy} was NOT caught in 300 cases"),
    }
}

#[test]
fn a_temp_cache_dropped_before_spawn_is_caught_under_cachelock() {
    let story = caught(
        Policy::Cachelock,
        &[Kind::RunNoCache],
        "drop-temp-before-spawn",
    );
    assert!(story.contains("spawn-child"), "{story}");
}

#[test]
fn a_lock_released_before_the_child_exits_is_caught_under_uv_0_8_20() {
    let story = caught(
        Policy::Uv0820,
        &[Kind::Run, Kind::RunScript, Kind::ToolRun],
        "release-before-child-exit",
    );
    assert!(story.contains("spawn-child"), "{story}");
}

#[test]
fn a_clean_deleting_an_environment_it_could_not_lock_is_caught_under_cachelock() {
    let story = caught(
        Policy::Cachelock,
        &[Kind::Run, Kind::RunScript, Kind::ToolRun, Kind::RunServer],
        "delete-unlockable",
    );
    // The deletion others see is the clean's move of the environment into its trash.
    assert!(story.contains("move-to-trash"), "{story}");
}

#[test]
fn a_skipped_lock_step_is_caught_under_uv_0_13() {
    let story = caught(
        Policy::Uv013,
        &[Kind::Run, Kind::RunScript, Kind::ToolRun],
        "skip-lock-step",
    );
    assert!(story.contains("lock-"), "{story}");
}
