//! The symmetry reduction: processes of the same class (same kind and faults, not tied
//! to a nested clean) are interchangeable, so a state and its permutations within a
//! class are explored once. `model/tests/metamorphic.rs` checks that it changes no
//! verdict.

use stateright::Representative;

use std::hash::{Hash, Hasher};

use crate::state::{Proc, State};

/// The most processes a state can have (their bit masks are `u16`).
const MAX_PROCS: usize = 16;

/// Where each process goes in the representative: `new_pos[old]`, and whether any
/// moves. Each class is sorted by process state (ties keep their order), into the
/// slots that class occupies; processes of no class (`u8::MAX`) stay. No allocation:
/// this runs for every state the checker generates.
fn canonical_positions(s: &State) -> ([u8; MAX_PROCS], bool) {
    let procs = &s.procs;
    let n = procs.len();
    assert!(n <= MAX_PROCS, "at most {MAX_PROCS} processes");
    let mut new_pos = [0u8; MAX_PROCS];
    for (old, pos) in new_pos.iter_mut().enumerate().take(n) {
        *pos = old as u8;
    }
    let mut moved = false;
    for first in 0..n {
        let class = procs[first].class;
        // Each class once, at its first member.
        if class == u8::MAX || procs[..first].iter().any(|p| p.class == class) {
            continue;
        }
        let mut slots = [0u8; MAX_PROCS];
        let mut k = 0;
        for (m, p) in procs.iter().enumerate().skip(first) {
            if p.class == class {
                slots[k] = m as u8;
                k += 1;
            }
        }
        if k < 2 {
            continue;
        }
        // A stable insertion sort of the members by process state.
        let mut sorted = slots;
        for i in 1..k {
            let mut j = i;
            while j > 0 && procs[sorted[j] as usize] < procs[sorted[j - 1] as usize] {
                sorted.swap(j, j - 1);
                j -= 1;
            }
        }
        for (slot, src) in slots[..k].iter().zip(&sorted[..k]) {
            new_pos[*src as usize] = *slot;
            moved |= slot != src;
        }
    }
    (new_pos, moved)
}

/// `mask` (a bit per process) with each process moved to `new_pos`.
fn remap(mask: u16, new_pos: &[u8; MAX_PROCS]) -> u16 {
    (0..MAX_PROCS)
        .filter(|old| mask & (1 << old) != 0)
        .fold(0, |m, old| m | (1 << new_pos[old]))
}

/// Process `old` as it is in the representative (its masks renumbered).
fn moved_proc(s: &State, old: usize, new_pos: &[u8; MAX_PROCS]) -> Proc {
    let mut p = s.procs[old].clone();
    p.awaited = remap(p.awaited, new_pos);
    p.pending_cleans = remap(p.pending_cleans, new_pos);
    p.leaked_at_start = remap(p.leaked_at_start, new_pos);
    p
}

/// Feeds `hasher` what identifies `s`'s representative, without building it: two
/// states that are permutations of each other within classes feed the same values.
pub(crate) fn hash_representative(s: &State, hasher: &mut impl Hasher) {
    let (new_pos, moved) = canonical_positions(s);
    let n = s.procs.len();
    n.hash(hasher);
    if moved {
        let mut order = [0u8; MAX_PROCS];
        for old in 0..n {
            order[new_pos[old] as usize] = old as u8;
        }
        for &old in &order[..n] {
            moved_proc(s, old as usize, &new_pos).hash(hasher);
        }
    } else {
        for p in &s.procs {
            p.hash(hasher);
        }
    }
    s.fs.hash(hasher);
    s.history.hash(hasher);
}

impl Representative for State {
    fn representative(&self) -> Self {
        let (new_pos, moved) = canonical_positions(self);
        if !moved {
            return self.clone();
        }
        let n = self.procs.len();
        let mut order = [0u8; MAX_PROCS];
        for old in 0..n {
            order[new_pos[old] as usize] = old as u8;
        }
        State {
            procs: order[..n]
                .iter()
                .map(|&old| moved_proc(self, old as usize, &new_pos))
                .collect(),
            fs: self.fs.clone(),
            history: self.history,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{MAX_PROCS, moved_proc};
    use crate::expect::{ci_scenarios, mixed_scenarios};
    use crate::machine::{CacheModel, State};
    use crate::protocol::Policy;
    use crate::search::{each_state, reachable_goals};
    use crate::state::Proc;

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
