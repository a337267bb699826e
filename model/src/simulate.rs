//! Sampling the model where exhaustive checking cannot reach (8 to 16 processes: a CI
//! machine with a dozen parallel jobs on one cache): random walks from the initial state,
//! each choosing uniformly among the enabled actions until none is left (the model is
//! acyclic, so every walk ends), on several threads.
//!
//! Every state a walk passes is judged as the exhaustive checker judges it
//! ([`crate::check`]): an `always` property fails in a state where it does not hold, an
//! `eventually` one in a settled state that misses its goal, a `sometimes` one is
//! witnessed where it holds. A walk that shows a verdict is kept as its trace (the
//! shortest such walk per property).
//!
//! A sampled "no violation found" is **not a proof**: the walks visit a fraction of the
//! states, and a violation that needs a rare interleaving may be missed. A violation found
//! is a real one (its trace replays in the model).
//!
//! Walks are numbered; walk `i` uses its own generator seeded from `(seed, i)`, so a walk
//! is the same on any number of threads, and so is the result when all the walks are
//! done; a run that stops early (every property shown) may have done a few walks more or
//! fewer, depending on the threads' timing.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stateright::{Model, Representative};

use crate::machine::{Action, CacheModel, State};
use crate::properties::{Kind3, PropertyName};
use crate::protocol::{Policy, Scenario};
use crate::story;

/// A walk: each state with the action taken from it (`None` for the last).
pub type WalkPath = Vec<(State, Option<Action>)>;

/// What one property's sampling found.
#[derive(Clone, Debug)]
pub struct Sampled {
    pub property: PropertyName,
    /// The shortest walk that shows the property's verdict (a violation of an `always` or
    /// `eventually` property, a witness of a `sometimes` one): its number and path.
    pub found: Option<(usize, WalkPath)>,
    /// The found path as a numbered story.
    pub story: Vec<String>,
}

/// The result of sampling one policy on one scenario.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub policy: Policy,
    pub scenario: Scenario,
    /// Walks done (fewer than asked when every property had shown its verdict).
    pub walks: usize,
    /// Distinct states visited, after the symmetry reduction.
    pub distinct_states: usize,
    pub elapsed: Duration,
    pub properties: Vec<Sampled>,
}

/// A small, fast generator (SplitMix64): statistical quality is all a walk needs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fingerprint(s: &State) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.representative().hash(&mut h);
    h.finish()
}

/// True if `s` shows `p`'s verdict: a violation, or for `sometimes` a witness.
fn shows(m: &CacheModel, p: PropertyName, s: &State) -> bool {
    match p.expectation() {
        Kind3::Always => !p.holds(m, s),
        Kind3::Sometimes => p.holds(m, s),
        Kind3::Eventually => !p.holds(m, s) && p.settled(m, s),
    }
}

/// One walk from the initial state; returns the path and, per checked property, the
/// index of the first state that shows its verdict.
fn walk(
    m: &CacheModel,
    checked: &[PropertyName],
    rng: &mut SplitMix,
    seen: &mut HashSet<u64>,
) -> (WalkPath, Vec<Option<usize>>) {
    let mut path: WalkPath = Vec::new();
    let mut shown = vec![None; checked.len()];
    let mut state = m.initial_state();
    let mut actions = Vec::new();
    loop {
        seen.insert(fingerprint(&state));
        for (i, p) in checked.iter().enumerate() {
            if shown[i].is_none() && shows(m, *p, &state) {
                shown[i] = Some(path.len());
            }
        }
        actions.clear();
        m.actions(&state, &mut actions);
        if actions.is_empty() {
            path.push((state, None));
            return (path, shown);
        }
        let action = actions.swap_remove(rng.below(actions.len()));
        let Some(next) = m.next_state(&state, action) else {
            path.push((state, None));
            return (path, shown);
        };
        path.push((state, Some(action)));
        state = next;
    }
}

/// Samples `walks` random walks of `policy` on `scenario` on `threads` threads, stopping
/// early once every applicable property has shown its verdict.
pub fn simulate(
    policy: Policy,
    scenario: &Scenario,
    walks: usize,
    threads: usize,
    seed: u64,
) -> Simulation {
    let model = CacheModel::new(policy, scenario);
    let checked = model.property_names();
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let all_found = AtomicBool::new(false);
    // Per property: the shortest showing walk so far (length, walk number, path).
    type Best = Option<(usize, usize, WalkPath)>;
    let best: Mutex<Vec<Best>> = Mutex::new(vec![None; checked.len()]);
    let seen: Mutex<HashSet<u64>> = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut mine = HashSet::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= walks || all_found.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut rng = SplitMix(seed ^ (i as u64).wrapping_mul(0xa076_1d64_78bd_642f));
                    let (path, shown) = walk(&model, &checked, &mut rng, &mut mine);
                    done.fetch_add(1, Ordering::Relaxed);
                    if shown.iter().all(Option::is_none) {
                        continue;
                    }
                    let mut best = best.lock().unwrap_or_else(|e| e.into_inner());
                    for (k, at) in shown.iter().enumerate() {
                        let Some(at) = at else { continue };
                        let better = match &best[k] {
                            None => true,
                            Some((len, walk, _)) => (at + 1, i) < (*len, *walk),
                        };
                        if better {
                            let mut p: Vec<_> = path[..=*at].to_vec();
                            if let Some(last) = p.last_mut() {
                                last.1 = None;
                            }
                            best[k] = Some((at + 1, i, p));
                        }
                    }
                    if best.iter().all(Option::is_some) {
                        all_found.store(true, Ordering::Relaxed);
                    }
                }
                seen.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            });
        }
    });
    let best = best.into_inner().unwrap_or_else(|e| e.into_inner());
    let properties = checked
        .iter()
        .zip(best)
        .map(|(p, b)| {
            let found = b.map(|(_, walk, path)| (walk, path));
            let story = found
                .as_ref()
                .map(|(_, path)| story::tell(&model, path, *p))
                .unwrap_or_default();
            Sampled {
                property: *p,
                found,
                story,
            }
        })
        .collect();
    Simulation {
        policy,
        scenario: scenario.clone(),
        walks: done.into_inner(),
        distinct_states: seen.into_inner().unwrap_or_else(|e| e.into_inner()).len(),
        elapsed: start.elapsed(),
        properties,
    }
}
