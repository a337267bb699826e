//! The symmetry reduction: processes of the same class (same kind and faults, not tied
//! to a nested clean) are interchangeable, so a state and its permutations within a
//! class are explored once. `model/tests/metamorphic.rs` checks that it changes no
//! verdict.

use stateright::Representative;

use crate::state::State;

/// Symmetry: processes of the same class are interchangeable. The representative
/// sorts each class by process state and renumbers the bit masks that name processes.
impl Representative for State {
    fn representative(&self) -> Self {
        let n = self.procs.len();
        let mut order: Vec<usize> = (0..n).collect();
        // Stable sort within classes only: positions of each class stay the same.
        let mut by_class: std::collections::BTreeMap<u8, Vec<usize>> = Default::default();
        for (i, p) in self.procs.iter().enumerate() {
            if p.class != u8::MAX {
                by_class.entry(p.class).or_default().push(i);
            }
        }
        for members in by_class.values() {
            let mut sorted = members.clone();
            sorted.sort_by(|a, b| self.procs[*a].cmp(&self.procs[*b]));
            for (slot, src) in members.iter().zip(sorted) {
                order[*slot] = src;
            }
        }
        if order.iter().enumerate().all(|(i, o)| i == *o) {
            return self.clone();
        }
        // new position of old process `old`
        let mut new_pos = vec![0; n];
        for (slot, old) in order.iter().enumerate() {
            new_pos[*old] = slot;
        }
        let remap = |mask: u16| -> u16 {
            (0..n)
                .filter(|old| mask & (1 << old) != 0)
                .fold(0, |m, old| m | (1 << new_pos[old]))
        };
        let procs = order
            .iter()
            .map(|old| {
                let mut p = self.procs[*old].clone();
                p.awaited = remap(p.awaited);
                p.pending_cleans = remap(p.pending_cleans);
                p.leaked_at_start = remap(p.leaked_at_start);
                p
            })
            .collect();
        State {
            procs,
            fs: self.fs.clone(),
            history: self.history,
        }
    }
}
