//! Five processes on one cache, `run,run-script,tool-run,clean,prune`, for every policy:
//! beyond the CI set's size (minutes and gigabytes for some policies), so `#[ignore]`d;
//! run with `cargo test --release -p cachelock-model --test five -- --ignored`.
//!
//! Each test checks that every verdict is computed, and that each `always` property a
//! policy declares failing in a CI scenario made of some of these five processes (no
//! `+crash` or `+timeout`) fails here too: a safety violation of the smaller scenario is
//! a behaviour of the larger one in which the extra processes have not started yet.

use cachelock_model::check::{CI_SCENARIOS, Kind3, Verdict, check_pair};
use cachelock_model::expect::expected;
use cachelock_model::properties::ALL;
use cachelock_model::{Policy, Scenario};

const FIVE: &str = "run,run-script,tool-run,clean,prune";

/// True if every process of CI scenario `sub` is one of [`FIVE`]'s, counted with
/// multiplicity, and none has a suffix.
fn is_sub_scenario(sub: &str) -> bool {
    let mut left: Vec<&str> = FIVE.split(',').collect();
    sub.split(',')
        .all(|p| match left.iter().position(|q| *q == p) {
            Some(i) => {
                left.swap_remove(i);
                true
            }
            None => false,
        })
}

fn five_processes(policy: Policy) {
    let sc = Scenario::parse(FIVE).expect("a well-formed scenario");
    let subs: Vec<&str> = CI_SCENARIOS
        .iter()
        .copied()
        .filter(|s| is_sub_scenario(s))
        .collect();
    assert!(
        !subs.is_empty(),
        "some CI scenarios are made of these processes"
    );
    let r = check_pair(policy, &sc);
    eprintln!(
        "{policy} on {FIVE}: {} states in {:.2}s",
        r.states,
        r.elapsed.as_secs_f64()
    );
    for (p, v) in &r.verdicts {
        eprintln!("  {:22} {}", p.name(), v.name());
    }
    assert!(r.states > 0, "explored no state");
    assert_eq!(r.verdicts.len(), ALL.len(), "a verdict for every property");
    for p in ALL {
        assert_eq!(
            r.verdict(p) != Verdict::NotApplicable,
            p.applies_to(&sc),
            "{p}: checked exactly when it applies"
        );
        if p.expectation() != Kind3::Always {
            continue;
        }
        let declared = expected(policy, p).failing();
        for sub in subs.iter().filter(|s| declared.contains(s)) {
            assert_eq!(
                r.verdict(p),
                Verdict::Fails,
                "{p} fails in {sub} (declared) but not in {FIVE}"
            );
        }
    }
}

macro_rules! five {
    ($($name:ident => $policy:expr,)*) => {$(
        #[test]
        #[ignore = "minutes and gigabytes: run with --release -- --ignored"]
        fn $name() {
            five_processes($policy);
        }
    )*};
}

five! {
    five_processes_uv_0_8_19 => Policy::Uv0819,
    five_processes_uv_0_8_20 => Policy::Uv0820,
    five_processes_uv_0_13 => Policy::Uv013,
    five_processes_uv_pr15977 => Policy::UvPr15977,
    five_processes_cachelock => Policy::Cachelock,
    five_processes_uv_autoprune => Policy::UvAutoprune,
    five_processes_serial => Policy::Serial,
    five_processes_cachelock_late_env_lock => Policy::CachelockLateEnvLock,
    five_processes_cachelock_unlock => Policy::CachelockUnlock,
    five_processes_cachelock_cloexec => Policy::CachelockCloexec,
    five_processes_cachelock_no_announce => Policy::CachelockNoAnnounce,
    five_processes_cachelock_keep_temp => Policy::CachelockKeepTemp,
    five_processes_cachelock_prune_any_temp => Policy::CachelockPruneAnyTemp,
    five_processes_cachelock_fenced => Policy::CachelockFenced,
    five_processes_fenced_clean_waits => Policy::FencedCleanWaits,
    five_processes_fenced_clean_gives_up => Policy::FencedCleanGivesUp,
    five_processes_fenced_clean_all_layouts => Policy::FencedCleanAllLayouts,
    five_processes_fenced_cloexec => Policy::FencedCloexec,
    five_processes_fenced_shared_layout => Policy::FencedSharedLayout,
    five_processes_fenced_trash_after_release => Policy::FencedTrashAfterRelease,
}

#[test]
fn every_policy_has_a_five_process_test() {
    // The macro above lists the policies by hand: a new policy must be added there.
    assert_eq!(Policy::ALL.len(), 20, "add the new policy to `five!`");
}

#[test]
fn the_sub_scenarios_are_the_ci_scenarios_of_these_processes() {
    let subs: Vec<&str> = CI_SCENARIOS
        .iter()
        .copied()
        .filter(|s| is_sub_scenario(s))
        .collect();
    assert_eq!(
        subs,
        ["run-script,clean", "tool-run,prune", "run,run-script,clean"]
    );
    assert!(!is_sub_scenario("run,run,clean"));
    assert!(!is_sub_scenario("run+crash,clean"));
}
