//! Generated operation sequences: the real implementation, driven step by step, must
//! take only transitions the model allows and land in the model's states.
//!
//! `PROPTEST_CASES` sets the depth (default 24 per policy here; CI uses the default).
//! A deeper run: `PROPTEST_CASES=2000 cargo test -p cachelock-conformance --test lockstep`.

use cachelock_conformance::lockstep::{Lockstep, Op};
use cachelock_model::{Kind, Policy, ProcSpec, Scenario};
use proptest::prelude::*;

const DRIVER: &str = env!("CARGO_BIN_EXE_cl-driver");

const RUNS: [Kind; 5] = [
    Kind::Run,
    Kind::RunScript,
    Kind::ToolRun,
    Kind::RunNoCache,
    Kind::RunServer,
];
const CLEANS: [Kind; 3] = [Kind::Clean, Kind::CleanForce, Kind::Prune];

fn spec(kinds: &'static [Kind]) -> impl Strategy<Value = ProcSpec> {
    (
        proptest::sample::select(kinds),
        proptest::bool::weighted(0.25),
        proptest::bool::weighted(0.25),
    )
        .prop_map(|(kind, crash, timeout)| ProcSpec {
            kind,
            crash,
            timeout,
        })
}

/// A run and a clean, and sometimes a third process of either sort: every case has a
/// clean that can arrive while a child runs.
fn scenario() -> impl Strategy<Value = Scenario> {
    const ANY: [Kind; 8] = [
        Kind::Run,
        Kind::RunScript,
        Kind::ToolRun,
        Kind::RunNoCache,
        Kind::RunServer,
        Kind::Clean,
        Kind::CleanForce,
        Kind::Prune,
    ];
    (spec(&RUNS), spec(&CLEANS), proptest::option::of(spec(&ANY))).prop_map(|(r, c, x)| {
        let mut procs = vec![r, c];
        procs.extend(x);
        Scenario { procs }
    })
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..n).prop_map(Op::Advance),
        3 => (0..n).prop_map(Op::ChildExit),
        1 => (0..n).prop_map(Op::Kill),
        1 => (0..n).prop_map(Op::Timeout),
    ]
}

fn case() -> impl Strategy<Value = (Scenario, Vec<Op>)> {
    scenario().prop_flat_map(|sc| {
        let n = sc.procs.len();
        (Just(sc), proptest::collection::vec(op(n), 1..48))
    })
}

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
    fn cachelock_follows_the_model((sc, ops) in case()) {
        check(Policy::Cachelock, &sc, &ops)?;
    }

    #[test]
    fn uv_0_13_follows_the_model((sc, ops) in case()) {
        check(Policy::Uv013, &sc, &ops)?;
    }

    #[test]
    fn uv_0_8_20_follows_the_model((sc, ops) in case()) {
        check(Policy::Uv0820, &sc, &ops)?;
    }

    #[test]
    fn uv_0_8_19_follows_the_model((sc, ops) in case()) {
        check(Policy::Uv0819, &sc, &ops)?;
    }

    #[test]
    fn uv_pr15977_follows_the_model((sc, ops) in case()) {
        check(Policy::UvPr15977, &sc, &ops)?;
    }

    #[test]
    fn the_variants_follow_the_model(
        policy in proptest::sample::select(&Policy::ALL[5..]),
        (sc, ops) in case(),
    ) {
        check(policy, &sc, &ops)?;
    }
}
