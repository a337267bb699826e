//! The symmetry reduction: processes of the same class (same kind and faults, not tied
//! to a nested clean) are interchangeable, so a state and its permutations within a
//! class are explored once. `model/tests/metamorphic.rs` checks that it changes no
//! verdict.

use stateright::Representative;

use std::hash::{Hash, Hasher};

use crate::state::{Proc, State};

/// The most processes a state can have (their bit masks are `u16`).
pub(crate) const MAX_PROCS: usize = 16;

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
pub(crate) fn moved_proc(s: &State, old: usize, new_pos: &[u8; MAX_PROCS]) -> Proc {
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
