//! The set of fingerprints a search has seen: the checker's largest structure (one entry
//! per reachable state) and, with hundreds of megabytes of it, where most of a search's
//! time goes in cache misses. Open addressing with linear probing over a power-of-two
//! array of 64-bit slots (8 bytes a state, filled up to 90% before it doubles), and a
//! [`FingerprintSet::prefetch`] that lets a search ask for the slots of all of a state's
//! successors before it inserts the first, so that their misses overlap. On Linux the
//! array asks for huge pages: a random slot of a large set is otherwise a TLB miss too.

/// A set of 64-bit fingerprints.
pub(crate) struct FingerprintSet {
    /// `0` marks an empty slot; fingerprint 0 itself is `zero`.
    slots: Vec<u64>,
    zero: bool,
    len: usize,
}

impl FingerprintSet {
    pub(crate) fn new() -> FingerprintSet {
        FingerprintSet {
            slots: zeroed_slots(1 << 12),
            zero: false,
            len: 0,
        }
    }

    /// How many fingerprints the set holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, fp: u64) -> usize {
        fp as usize & (self.slots.len() - 1)
    }

    /// Starts loading the slot where `fp` goes, without waiting for it.
    #[inline]
    pub(crate) fn prefetch(&self, fp: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let slot: *const u64 = &self.slots[self.home(fp)];
            // SAFETY: a prefetch is a hint that reads nothing and cannot fault; `slot`
            // points into `slots` anyway, and every x86_64 processor has SSE.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(slot.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = fp;
    }

    /// Adds `fp`; true if it was not there.
    pub(crate) fn insert(&mut self, fp: u64) -> bool {
        if fp == 0 {
            let new = !self.zero;
            self.zero = true;
            self.len += usize::from(new);
            return new;
        }
        if (self.len + 1) * 10 > self.slots.len() * 9 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(fp);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = fp;
                    self.len += 1;
                    return true;
                }
                s if s == fp => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let doubled = zeroed_slots(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.slots.len() - 1;
        for fp in old.into_iter().filter(|fp| *fp != 0) {
            let mut i = self.home(fp);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = fp;
        }
    }
}

/// `n` empty slots. A large zeroed allocation is fresh memory that no page backs yet: on
/// Linux, advise huge pages for it before the first write faults pages in.
fn zeroed_slots(n: usize) -> Vec<u64> {
    let slots = vec![0u64; n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<u64>();
        if bytes >= 2 * HUGE {
            let start = slots.as_ptr() as usize;
            let aligned = start.next_multiple_of(HUGE);
            let len = (start + bytes - aligned) / HUGE * HUGE;
            // SAFETY: the range lies inside `slots`' allocation; the advice changes how
            // the kernel backs it with pages, not its contents. A refusal only costs
            // speed, so its result is ignored.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::FingerprintSet;

    /// The set answers as a `HashSet` does, through growths, with colliding homes,
    /// fingerprint 0 and repeated inserts.
    #[test]
    fn behaves_as_a_hash_set() {
        let mut ours = FingerprintSet::new();
        let mut reference = HashSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A third of the values share their low bits (one home), a few repeat, and
            // zero comes once in a while.
            let fp = match n % 7 {
                0 => x << 20,
                1 => n / 3,
                2 if n % 1000 == 2 => 0,
                _ => x,
            };
            ours.prefetch(fp);
            assert_eq!(ours.insert(fp), reference.insert(fp), "insert {fp:#x}");
            assert_eq!(ours.len(), reference.len());
        }
        assert!(ours.slots.len() > 1 << 16, "the set grew");
        for fp in reference {
            assert!(!ours.insert(fp), "{fp:#x} was kept");
        }
    }
}
