//! Generated operation sequences: the real implementation, driven step by step, must
//! take only transitions the model allows and land in the model's states.
//!
//! `PROPTEST_CASES` sets the depth (24 cases per test by default, what CI runs; the
//! persisted failures in `lockstep.proptest-regressions` are replayed first). A deeper
//! run: `PROPTEST_CASES=2000 cargo test -p cachelock-conformance --test lockstep`.

use cachelock_conformance::lockstep::{Lockstep, Op, generate};
use cachelock_model::{Policy, Scenario};
use proptest::prelude::*;

const DRIVER: &str = env!("CARGO_BIN_EXE_cl-driver");

fn check(policy: Policy, sc: &Scenario, ops: &[Op]) -> Result<(), TestCaseError> {
    let harness =
        Lockstep::new(policy, sc, std::path::Path::new(DRIVER)).map_err(TestCaseError::fail)?;
    match harness.play(ops) {
        Ok(_) => Ok(()),
        Err(story) => Err(TestCaseError::fail(story)),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        max_shrink_iters: 400,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cachelock_follows_the_model((sc, ops) in generate::case(&generate::RUNS)) {
        check(Policy::Cachelock, &sc, &ops)?;
    }

    #[test]
    fn cachelock_fenced_follows_the_model((sc, ops) in generate::case(&generate::RUNS)) {
        check(Policy::CachelockFenced, &sc, &ops)?;
    }

    #[test]
    fn uv_0_13_follows_the_model((sc, ops) in generate::case(&generate::RUNS)) {
        check(Policy::Uv013, &sc, &ops)?;
    }

    #[test]
    fn uv_0_8_20_follows_the_model((sc, ops) in generate::case(&generate::RUNS)) {
        check(Policy::Uv0820, &sc, &ops)?;
    }

    #[test]
    fn uv_0_8_19_follows_the_model((sc, ops) in generate::case(&generate::RUNS)) {
        check(Policy::Uv0819, &sc, &ops)?;
    }

    #[test]
    fn uv_pr15977_follows_the_model((sc, ops) in generate::case(&generate::RUNS)) {
        check(Policy::UvPr15977, &sc, &ops)?;
    }

    #[test]
    fn the_variants_follow_the_model(
        policy in proptest::sample::select(&Policy::ALL[5..]),
        (sc, ops) in generate::case(&generate::RUNS),
    ) {
        check(policy, &sc, &ops)?;
    }
}
