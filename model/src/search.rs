//! Breadth-first search over every state of one (policy, scenario), without the
//! symmetry reduction, for what needs paths or every state rather than a verdict:
//! - [`shortest_paths`]: for each goal, the first state reached that meets it and the
//!   path to it: breadth-first, so a shortest path, and among the shortest the first in
//!   the model's action order (the order stateright's single-threaded BFS visits in);
//! - [`each_state`]: every reachable state, once.
//!
//! A state is remembered as a 64-bit fingerprint, with the state it was first reached
//! from and the index of the action that reached it. A path is
//! rebuilt only for a goal that was met, by replaying those actions from the initial
//! state. (A stateright visitor rebuilds the path of every state it visits: the
//! counterexample searches cost 3-4 times the exploration that way.) Two states with
//! one fingerprint count as one, as in stateright's own checkers.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};

use stateright::Model;

use crate::fingerprints::FingerprintSet;

use crate::machine::{Action, CacheModel, State};

type Fingerprint = u64;

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

/// What [`breadth_first`] found.
pub(crate) struct Explored {
    /// For each goal, a shortest path to a state that meets it (`None`: no state seen
    /// does).
    pub paths: Vec<Option<Steps>>,
    /// Unique states seen: all the reachable ones unless every goal was met.
    pub states: usize,
}

/// For each of `goals` goals (goal `g` is met by `s` when `meets(g, s)`), a shortest
/// path from the initial state to a state that meets it, or `None` when no reachable
/// state does. Stops as soon as every goal is met.
pub(crate) fn shortest_paths(
    model: &CacheModel,
    goals: usize,
    meets: impl Fn(usize, &State) -> bool,
) -> Vec<Option<Steps>> {
    breadth_first(model, goals, meets).paths
}

/// The breadth-first search behind [`shortest_paths`], which also says how many states
/// it saw.
///
/// Memory per state: its fingerprint in a set, and in two arrays indexed by the order in
/// which states were first reached, the index of the state it was reached from and the
/// index of the action (5 bytes): a path is followed back through those indices, never
/// looked up by fingerprint.
pub(crate) fn breadth_first(
    model: &CacheModel,
    goals: usize,
    meets: impl Fn(usize, &State) -> bool,
) -> Explored {
    let mut seen = FingerprintSet::new();
    // `parent[id]`: the state `id` was first reached from (`NO_PARENT` for an initial
    // state); `action[id]`: the index of the action, among the parent's actions (among
    // the initial states for an initial state), that reached it.
    let mut parent: Vec<u32> = Vec::new();
    let mut action: Vec<u8> = Vec::new();
    let mut queue: VecDeque<(State, u32)> = VecDeque::new();
    let mut remember = |seen: &mut FingerprintSet, fp: Fingerprint, from: u32, index: usize| {
        if !seen.insert(fp) {
            return None;
        }
        let id = u32::try_from(parent.len()).expect("fewer than 2^32 states");
        parent.push(from);
        action.push(u8::try_from(index).expect("fewer than 256 actions per state"));
        Some(id)
    };
    for (i, s) in model.init_states().into_iter().enumerate() {
        if let Some(id) = remember(&mut seen, fingerprint(&s), NO_PARENT, i) {
            queue.push_back((s, id));
        }
    }
    let mut met: Vec<Option<u32>> = vec![None; goals];
    let mut left = goals;
    let mut actions = Vec::new();
    let mut next_states = Vec::new();
    // States are expanded a few at a time, all their successors' slots asked for before
    // the first is inserted: the misses of one batch overlap. The states are taken and
    // their successors inserted in queue order, so ids and paths are as one at a time.
    let mut batch: Vec<(State, u32)> = Vec::with_capacity(BATCH);
    let mut pending: Vec<(State, Fingerprint, usize, u32)> = Vec::new();
    while left > 0 && !queue.is_empty() {
        let take = queue.len().min(BATCH);
        batch.extend(queue.drain(..take));
        for (s, id) in batch.drain(..) {
            for (goal, at) in met.iter_mut().enumerate() {
                if at.is_none() && meets(goal, &s) {
                    *at = Some(id);
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
            successors(
                model,
                &s,
                &mut actions,
                &mut next_states,
                &seen,
                fingerprint,
            );
            pending.extend(next_states.drain(..).map(|(n, fp, i)| (n, fp, i, id)));
        }
        for (next, fp, i, from) in pending.drain(..) {
            if let Some(next_id) = remember(&mut seen, fp, from, i) {
                queue.push_back((next, next_id));
            }
        }
    }
    drop(queue);
    Explored {
        paths: met
            .into_iter()
            .map(|at| at.map(|id| rebuild(model, &parent, &action, id)))
            .collect(),
        states: seen.len(),
    }
}

/// Fills `next_states` with the successors of `s`, each with its key and the index of
/// its action, and asks for their slots in `seen` before any is inserted.
fn successors(
    model: &CacheModel,
    s: &State,
    actions: &mut Vec<Action>,
    next_states: &mut Vec<(State, Fingerprint, usize)>,
    seen: &FingerprintSet,
    key: impl Fn(&State) -> Fingerprint,
) {
    actions.clear();
    model.actions(s, actions);
    for (i, a) in actions.drain(..).enumerate() {
        if let Some(next) = model.next_state(s, a) {
            let fp = key(&next);
            seen.prefetch(fp);
            next_states.push((next, fp, i));
        }
    }
}

/// How many states [`breadth_first`] expands before it inserts their successors.
const BATCH: usize = 16;

/// The parent of an initial state.
const NO_PARENT: u32 = u32::MAX;

/// The path to state `id`, replayed from the initial state.
fn rebuild(model: &CacheModel, parent: &[u32], action: &[u8], id: u32) -> Steps {
    let mut indices = Vec::new();
    let mut at = id as usize;
    while parent[at] != NO_PARENT {
        indices.push(action[at] as usize);
        at = parent[at] as usize;
    }
    indices.reverse();
    let mut state = model.init_states().swap_remove(action[at] as usize);
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
    let mut seen = FingerprintSet::new();
    let mut stack: Vec<State> = Vec::new();
    for s in model.init_states() {
        if seen.insert(key(&s)) {
            stack.push(s);
        }
    }
    let mut met = vec![false; goals];
    let mut left = goals;
    let mut actions = Vec::new();
    let mut next_states = Vec::new();
    while left > 0
        && let Some(s) = stack.pop()
    {
        for (goal, m) in met.iter_mut().enumerate() {
            if !*m && meets(goal, &s) {
                *m = true;
                left -= 1;
            }
        }
        successors(model, &s, &mut actions, &mut next_states, &seen, key);
        for (next, fp, _) in next_states.drain(..) {
            if seen.insert(fp) {
                stack.push(next);
            }
        }
    }
    (met, seen.len())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::machine::{CacheModel, Fs, History, Proc};
    use crate::protocol::{Policy, Scenario};

    /// Two reachable states with the same packed words are the same state.
    #[test]
    fn packing_is_injective() {
        let mut checked = 0;
        let mut file_systems = 0;
        for (policy, text) in [
            (Policy::Uv0819, "run+crash,run-script+timeout,clean+crash"),
            (
                Policy::Cachelock,
                "run-daemon+crash,tool-run,clean+crash,prune",
            ),
            (Policy::Uv013, "run-no-cache+crash,prune,clean+timeout"),
        ] {
            let model = CacheModel::new(policy, &Scenario::parse(text).unwrap());
            let mut procs: HashMap<u128, Proc> = HashMap::new();
            let mut fss: HashMap<(u64, u8), (Fs, History)> = HashMap::new();
            super::each_state(&model, |s| {
                for p in &s.procs {
                    let seen = procs.entry(p.packed()).or_insert_with(|| p.clone());
                    assert_eq!(seen, p, "two processes pack alike");
                }
                let key = (s.fs.packed(), s.history.packed());
                let seen = fss.entry(key).or_insert_with(|| (s.fs.clone(), s.history));
                assert_eq!(
                    seen,
                    &(s.fs.clone(), s.history),
                    "two file systems pack alike"
                );
                checked += 1;
            });
            assert!(
                procs.len() > 50,
                "{policy} on {text}: only {} process values",
                procs.len()
            );
            file_systems += fss.len();
        }
        assert!(file_systems > 100, "only {file_systems} file systems");
        assert!(checked > 10_000, "checked only {checked} states");
    }
}

#[cfg(test)]
mod symmetry_tests {
    use std::collections::HashSet;

    use super::{each_state, reachable_goals};
    use crate::expect::{ci_scenarios, mixed_scenarios};
    use crate::machine::{CacheModel, State};
    use crate::protocol::Policy;
    use crate::state::Proc;
    use crate::symmetry::{MAX_PROCS, moved_proc};

    /// Every `new_pos` that moves processes only within their classes.
    fn class_permutations(s: &State) -> Vec<[u8; MAX_PROCS]> {
        let n = s.procs.len();
        let mut all = vec![[0u8; MAX_PROCS]];
        for old in 0..n {
            let mut next = Vec::new();
            for p in &all {
                for slot in 0..n {
                    let same_class = slot == old
                        || (s.procs[old].class != u8::MAX
                            && s.procs[slot].class == s.procs[old].class);
                    if same_class && !p[..old].contains(&(slot as u8)) {
                        let mut q = *p;
                        q[old] = slot as u8;
                        next.push(q);
                    }
                }
            }
            all = next;
        }
        all
    }

    /// The class of `s`: the least of its permutations within classes (the file system
    /// and the history name no process, so the processes alone differ).
    fn class_of(s: &State) -> Vec<Proc> {
        class_permutations(s)
            .iter()
            .map(|new_pos| {
                let mut procs = s.procs.clone();
                for old in 0..s.procs.len() {
                    procs[new_pos[old] as usize] = moved_proc(s, old, new_pos);
                }
                procs
            })
            .min()
            .expect("the identity is a permutation")
    }

    /// The reduction loses nothing: every state reachable without it is a permutation
    /// (within classes) of a state the reduced search visited, on every scenario with
    /// interchangeable processes, under every policy. Its representative need not be
    /// the least permutation: a state count may then exceed the number of classes, but
    /// no class is missed.
    #[test]
    fn the_reduced_search_visits_every_class_of_reachable_states() {
        let mut checked = 0;
        for sc in ci_scenarios().into_iter().chain(mixed_scenarios()) {
            for policy in Policy::ALL {
                let model = CacheModel::new(policy, &sc);
                let init = model.initial_state();
                if init.procs.iter().all(|p| {
                    p.class == u8::MAX
                        || init.procs.iter().filter(|q| q.class == p.class).count() < 2
                }) {
                    continue;
                }
                let mut visited: HashSet<(Vec<Proc>, crate::state::Fs, crate::state::History)> =
                    HashSet::new();
                let (_, states) = reachable_goals(&model, true, 1, |_, s| {
                    visited.insert((class_of(s), s.fs.clone(), s.history));
                    false
                });
                let mut classes = HashSet::new();
                each_state(&model, |s| {
                    let class = (class_of(s), s.fs.clone(), s.history);
                    assert!(
                        visited.contains(&class),
                        "{policy} on {sc}: the reduced search missed the class of {s:?}"
                    );
                    classes.insert(class);
                });
                assert_eq!(visited.len(), classes.len(), "{policy} on {sc}");
                assert!(states >= classes.len(), "{policy} on {sc}");
                checked += 1;
            }
        }
        assert!(
            checked >= 21,
            "only {checked} pairs with interchangeable processes"
        );
    }
}
