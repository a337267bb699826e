//! Breadth-first search over every state of one (policy, scenario), without the
//! symmetry reduction, for what needs paths or every state rather than a verdict:
//! - [`shortest_paths`]: for each goal, the first state reached that meets it and the
//!   path to it: breadth-first, so a shortest path, and among the shortest the first in
//!   the model's action order (the order stateright's single-threaded BFS visits in);
//! - [`each_state`]: every reachable state, once.
//!
//! A state is remembered as a 64-bit fingerprint, with the fingerprint of the state it
//! was first reached from and the index of the action that reached it. A path is
//! rebuilt only for a goal that was met, by replaying those actions from the initial
//! state. (A stateright visitor rebuilds the path of every state it visits: the
//! counterexample searches cost 3-4 times the exploration that way.) Two states with
//! one fingerprint count as one, as in stateright's own checkers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use nohash_hasher::NoHashHasher;
use stateright::Model;

use crate::machine::{Action, CacheModel, State};

type Fingerprint = u64;

/// Maps keyed by fingerprints, which are already hashes.
type ByFingerprint<V> = HashMap<Fingerprint, V, BuildHasherDefault<NoHashHasher<u64>>>;

/// A path as stateright gives it: each state with the action taken from it (`None` for
/// the last).
pub(crate) type Steps = Vec<(State, Option<Action>)>;

/// Fixed seeds: the same state has the same fingerprint in every run.
fn hasher() -> ahash::AHasher {
    ahash::RandomState::with_seeds(0x6361_6368, 0x656c_6f63, 0x6b5f_6266, 0x7331_0000)
        .build_hasher()
}

fn fingerprint(s: &State) -> Fingerprint {
    let mut h = hasher();
    s.hash(&mut h);
    h.finish()
}

/// The fingerprint of `s`'s representative under the symmetry reduction.
fn representative_fingerprint(s: &State) -> Fingerprint {
    let mut h = hasher();
    crate::symmetry::hash_representative(s, &mut h);
    h.finish()
}

/// Where a state was first reached from: its parent's fingerprint and the index of the
/// action, among the parent's actions, that led to it (`None` for an initial state).
type Origin = Option<(Fingerprint, u32)>;

/// For each of `goals` goals (goal `g` is met by `s` when `meets(g, s)`), a shortest
/// path from the initial state to a state that meets it, or `None` when no reachable
/// state does. Stops as soon as every goal is met.
pub(crate) fn shortest_paths(
    model: &CacheModel,
    goals: usize,
    meets: impl Fn(usize, &State) -> bool,
) -> Vec<Option<Steps>> {
    let mut origin: ByFingerprint<Origin> = ByFingerprint::default();
    let mut queue: VecDeque<(State, Fingerprint)> = VecDeque::new();
    for s in model.init_states() {
        let fp = fingerprint(&s);
        if origin.insert(fp, None).is_none() {
            queue.push_back((s, fp));
        }
    }
    let mut met: Vec<Option<Fingerprint>> = vec![None; goals];
    let mut left = goals;
    let mut actions = Vec::new();
    while left > 0
        && let Some((s, fp)) = queue.pop_front()
    {
        for (goal, at) in met.iter_mut().enumerate() {
            if at.is_none() && meets(goal, &s) {
                *at = Some(fp);
                left -= 1;
            }
        }
        actions.clear();
        model.actions(&s, &mut actions);
        for (i, a) in actions.drain(..).enumerate() {
            let Some(next) = model.next_state(&s, a) else {
                continue;
            };
            let next_fp = fingerprint(&next);
            if let std::collections::hash_map::Entry::Vacant(e) = origin.entry(next_fp) {
                e.insert(Some((fp, i as u32)));
                queue.push_back((next, next_fp));
            }
        }
    }
    met.into_iter()
        .map(|at| at.map(|fp| rebuild(model, &origin, fp)))
        .collect()
}

/// The path to the state `fp`, replayed from the initial state.
fn rebuild(model: &CacheModel, origin: &ByFingerprint<Origin>, fp: Fingerprint) -> Steps {
    let mut indices = Vec::new();
    let mut at = fp;
    while let Some(Some((parent, i))) = origin.get(&at) {
        indices.push(*i as usize);
        at = *parent;
    }
    indices.reverse();
    let mut state = model
        .init_states()
        .into_iter()
        .find(|s| fingerprint(s) == at)
        .expect("a path starts at an initial state");
    let mut steps = Vec::with_capacity(indices.len() + 1);
    let mut actions = Vec::new();
    for i in indices {
        actions.clear();
        model.actions(&state, &mut actions);
        let action = actions[i];
        let next = model
            .next_state(&state, action)
            .expect("an action that was taken once is taken again");
        steps.push((state, Some(action)));
        state = next;
    }
    steps.push((state, None));
    steps
}

/// Calls `visit` on every reachable state, once each.
pub(crate) fn each_state(model: &CacheModel, mut visit: impl FnMut(&State)) {
    // One goal that no state meets: the search sees every state.
    reachable_goals(model, false, 1, |_, s| {
        visit(s);
        false
    });
}

/// Depth-first search of every reachable state, up to symmetry when `symmetry` (a state
/// stands for its permutations within each class of interchangeable processes: only its
/// representative's fingerprint is remembered, and the search goes on from the state
/// itself). For each of `goals` goals, whether some state meets it; stops as soon as
/// every goal is met. Returns those flags and the number of unique states seen.
pub(crate) fn reachable_goals(
    model: &CacheModel,
    symmetry: bool,
    goals: usize,
    mut meets: impl FnMut(usize, &State) -> bool,
) -> (Vec<bool>, usize) {
    let key = |s: &State| {
        if symmetry {
            representative_fingerprint(s)
        } else {
            fingerprint(s)
        }
    };
    let hasher = BuildHasherDefault::<NoHashHasher<u64>>::default();
    let mut seen: HashSet<Fingerprint, _> = HashSet::with_hasher(hasher);
    let mut stack: Vec<State> = Vec::new();
    for s in model.init_states() {
        if seen.insert(key(&s)) {
            stack.push(s);
        }
    }
    let mut met = vec![false; goals];
    let mut left = goals;
    let mut actions = Vec::new();
    while left > 0
        && let Some(s) = stack.pop()
    {
        for (goal, m) in met.iter_mut().enumerate() {
            if !*m && meets(goal, &s) {
                *m = true;
                left -= 1;
            }
        }
        actions.clear();
        model.actions(&s, &mut actions);
        for a in actions.drain(..) {
            if let Some(next) = model.next_state(&s, a)
                && seen.insert(key(&next))
            {
                stack.push(next);
            }
        }
    }
    (met, seen.len())
}
