//! Metamorphic checks: relations between the verdicts of related scenarios that must
//! hold whatever the model says about each one, over the whole CI set, every policy and
//! every property that applies.
//!
//! - A fault only adds behaviours: adding `+crash` to a process never turns a failing
//!   `always` or `eventually` property into a holding one, nor a reachable `sometimes`
//!   witness into an unreachable one.
//! - The order in which a scenario lists its processes (with their suffixes) is no
//!   part of the protocol: permuting it changes no verdict.
//! - The symmetry reduction merges only states that are the same up to renaming
//!   identical processes: with and without it the verdicts are equal.
//!
//! `cargo test` runs them at CI size (one crash at a time, one permutation); the
//! `#[ignore]`d `full_size_*` test runs every permutation and every set of crashes.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use cachelock_model::check::{
    Kind3, PairResult, Property, Verdict, check_pair, check_pair_only, check_pair_with,
    ci_scenarios,
};
use cachelock_model::{Policy, Scenario};

/// Every (policy, CI scenario) pair, checked once for all the tests of this file.
fn base() -> &'static [PairResult] {
    static BASE: OnceLock<Vec<PairResult>> = OnceLock::new();
    BASE.get_or_init(|| {
        let scenarios = ci_scenarios();
        Policy::ALL
            .iter()
            .flat_map(|p| scenarios.iter().map(|sc| check_pair(*p, sc)))
            .collect()
    })
}

/// The properties whose verdict a fault cannot change: failing `always`/`eventually`
/// ones and holding `sometimes` ones.
fn kept_under_faults(r: &PairResult) -> Vec<Property> {
    r.verdicts
        .iter()
        .filter(|(p, v)| match p.expectation() {
            Kind3::Always | Kind3::Eventually => *v == Verdict::Fails,
            Kind3::Sometimes => *v == Verdict::Holds,
        })
        .map(|(p, _)| *p)
        .collect()
}

/// `sc` with process `i` (and its suffixes) also `+crash`.
fn with_crash(sc: &Scenario, i: usize) -> Scenario {
    let mut out = sc.clone();
    out.procs[i].crash = true;
    out
}

/// The cells where `faulty` (a scenario with more `+crash`) lost a verdict `r` has.
fn crash_regressions(r: &PairResult, faulty: &PairResult) -> Vec<String> {
    kept_under_faults(r)
        .into_iter()
        .filter(|p| faulty.verdict(*p) != r.verdict(*p))
        .map(|p| {
            format!(
                "{} / {p}: {} on `{}` but {} on `{}`",
                r.policy,
                r.verdict(p).name(),
                r.scenario,
                faulty.verdict(p).name(),
                faulty.scenario
            )
        })
        .collect()
}

fn differences(a: &PairResult, b: &PairResult) -> Vec<String> {
    a.verdicts
        .iter()
        .filter(|(p, v)| b.verdict(*p) != *v)
        .map(|(p, v)| {
            format!(
                "{} / {p}: {} on `{}` but {} on `{}`",
                a.policy,
                v.name(),
                a.scenario,
                b.verdict(*p).name(),
                b.scenario
            )
        })
        .collect()
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(
        found.is_empty(),
        "{what} ({} cells):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn adding_a_crash_to_any_one_process_never_turns_a_failure_into_a_pass() {
    let mut found = Vec::new();
    let mut variants = 0;
    for r in base() {
        let wanted = kept_under_faults(r);
        for i in 0..r.scenario.procs.len() {
            if r.scenario.procs[i].crash || wanted.is_empty() {
                continue;
            }
            variants += 1;
            // Only the properties that must keep their verdict are checked; the search
            // stops once each has its discovery.
            let faulty = check_pair_only(r.policy, &with_crash(&r.scenario, i), true, &wanted);
            found.extend(crash_regressions(r, &faulty));
        }
    }
    assert!(
        variants > 100,
        "only {variants} crash variants were checked"
    );
    assert_none("+crash turned a verdict around", found);
}

#[test]
fn permuting_a_scenarios_processes_changes_no_verdict() {
    let mut found = Vec::new();
    let mut checked = 0;
    for r in base() {
        let mut rotated = r.scenario.clone();
        rotated.procs.rotate_left(1);
        if rotated == r.scenario {
            continue;
        }
        checked += 1;
        found.extend(differences(r, &check_pair(r.policy, &rotated)));
    }
    assert!(checked > 100, "only {checked} permutations were checked");
    assert_none("the order of processes moved a verdict", found);
}

#[test]
fn symmetry_reduction_changes_no_verdict_on_the_ci_set() {
    let mut found = Vec::new();
    let mut merged = 0;
    for r in base() {
        let without = check_pair_with(r.policy, &r.scenario, false);
        found.extend(differences(r, &without));
        assert!(r.states <= without.states, "{} {}", r.policy, r.scenario);
        if r.states < without.states {
            merged += 1;
        }
    }
    assert!(merged > 0, "the symmetry reduction merged nothing");
    assert_none("the symmetry reduction moved a verdict", found);
}

/// Every distinct order of a scenario's processes.
fn permutations(sc: &Scenario) -> Vec<Scenario> {
    fn go(
        rest: Vec<cachelock_model::ProcSpec>,
        acc: &mut Vec<cachelock_model::ProcSpec>,
        out: &mut BTreeSet<String>,
    ) {
        if rest.is_empty() {
            out.insert(Scenario { procs: acc.clone() }.to_string());
            return;
        }
        for i in 0..rest.len() {
            let mut r = rest.clone();
            let p = r.remove(i);
            acc.push(p);
            go(r, acc, out);
            acc.pop();
        }
    }
    let mut out = BTreeSet::new();
    go(sc.procs.clone(), &mut Vec::new(), &mut out);
    out.iter().map(|s| Scenario::parse(s).unwrap()).collect()
}

/// Runs `jobs` on two threads (the machine's size), collecting what they report.
fn on_two_threads<J: Sync>(jobs: &[J], run: impl Fn(&J) -> Vec<String> + Sync) -> Vec<String> {
    let next = Mutex::new(0usize);
    let found = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(job) = jobs.get(i) else { break };
                    let out = run(job);
                    found.lock().unwrap().extend(out);
                }
            });
        }
    });
    found.into_inner().unwrap()
}

/// Full size: every permutation of every CI scenario, and every set of crashes with
/// every one-crash extension of it, fully checked. Minutes in release; run with
/// `cargo test --release -p cachelock-model --test metamorphic -- --ignored`.
#[test]
#[ignore]
fn full_size_every_permutation_and_every_set_of_crashes() {
    let jobs: Vec<&PairResult> = base().iter().collect();
    let found = on_two_threads(&jobs, |r| {
        let mut found = Vec::new();
        for perm in permutations(&r.scenario) {
            if perm != r.scenario {
                found.extend(differences(r, &check_pair(r.policy, &perm)));
            }
        }
        let free: Vec<usize> = (0..r.scenario.procs.len())
            .filter(|i| !r.scenario.procs[*i].crash)
            .collect();
        // Every subset of the processes without a crash, checked once each.
        let subsets: Vec<PairResult> = (0..1u32 << free.len())
            .map(|mask| {
                let mut sc = r.scenario.clone();
                for (bit, i) in free.iter().enumerate() {
                    if mask & (1 << bit) != 0 {
                        sc.procs[*i].crash = true;
                    }
                }
                if mask == 0 {
                    (*r).clone()
                } else {
                    check_pair(r.policy, &sc)
                }
            })
            .collect();
        for (mask, from) in subsets.iter().enumerate() {
            for bit in 0..free.len() {
                if mask & (1 << bit) == 0 {
                    found.extend(crash_regressions(from, &subsets[mask | (1 << bit)]));
                }
            }
        }
        found
    });
    assert_none("a full-size metamorphic relation failed", found);
}
