//! The protocol's promises, as named predicates over the model's state.
//!
//! `always` properties must hold in every reachable state; `eventually` ones on every
//! fair behaviour; `sometimes` ones are witnesses that a scenario is not trivial (the
//! interesting situation is reachable at all).
//!
//! Fairness: which events a behaviour may assume will happen.
//! - Fair (weak fairness: an action that stays enabled is eventually taken): a process's
//!   enabled step (it does not stall for ever between two steps, and a lock wait returns
//!   once the lock can be granted); `child-exits` where the child's kind exits (a
//!   server's child never does, a nested clean's only once its clean has finished);
//!   `child-starts-daemon` and `daemon-exits`; `lock-timeout`, which is enabled only
//!   where the policy has a lock timeout and the process is `+timeout` (for
//!   `clean-terminates`: a wait with a timeout does end).
//! - Not fair: `killed`. A fault *may* happen; a behaviour in which it never fires is a
//!   behaviour of the scenario as if the fault did not exist, so `+crash` only adds
//!   behaviours and can never turn a failing `always` or `eventually` property into a
//!   holding one. For `clean-succeeds`, `lock-timeout` is not fair either: the model has
//!   no clock, so a timeout may fire during any wait, even one that will end (a run
//!   setting up slowly); a clean cut short by it is excused like a killed one, and a
//!   wait that only the timeout can end (beside a server) is a failure.
//!
//! How `eventually` is checked: the model is acyclic (every action moves a process, a
//! child or a daemon forward), so every path is finite, and a fair behaviour is a path
//! that ends in a *quiescent* state ([`CacheModel::quiescent`](crate::machine::CacheModel::quiescent)): one in which no fair
//! action is enabled (only unfair ones, or nothing), and stays there. Each `eventually`
//! goal is monotone (once reached, no action undoes it: see each goal's comment), so
//! "every fair behaviour eventually reaches the goal" is exactly "the goal holds in every
//! reachable quiescent state". The checker is given that as an invariant, `goal || !
//! quiescent` ([`PropertyName::settled`]), and the shortest counterexample is the
//! shortest path to a quiescent state that misses the goal: where a failure needs no
//! fault, a story with no kill in it. (stateright's own `eventually` judges only states
//! with no action at all: a kill that stays enabled beside a clean waiting for ever made
//! the failure invisible.)
//!
//! `no-deadlock` is an `always` property and makes the same choice: a waiting process is
//! stuck unless its lock can be granted or its wait can time out (`+timeout`, under a
//! policy with a timeout); a possible kill is never counted as a way out.

use crate::protocol::{Event, Kind, Scenario};

/// A property, by its fixed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PropertyName {
    LiveEnvIntact,
    MutualExclusion,
    NoDeadlock,
    CleanTerminates,
    CleanSucceeds,
    NoOvertaking,
    NoLeakedTemp,
    CleanRemovesUnused,
    CleanOverlapsChild,
    RunsShareLock,
}

/// Every property, in table order.
pub const ALL: [PropertyName; 10] = [
    PropertyName::LiveEnvIntact,
    PropertyName::MutualExclusion,
    PropertyName::NoDeadlock,
    PropertyName::CleanTerminates,
    PropertyName::CleanSucceeds,
    PropertyName::NoOvertaking,
    PropertyName::NoLeakedTemp,
    PropertyName::CleanRemovesUnused,
    PropertyName::CleanOverlapsChild,
    PropertyName::RunsShareLock,
];

/// How a property is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind3 {
    Always,
    Eventually,
    Sometimes,
}

impl PropertyName {
    /// The fixed name.
    pub fn name(self) -> &'static str {
        match self {
            PropertyName::LiveEnvIntact => "live-env-intact",
            PropertyName::MutualExclusion => "mutual-exclusion",
            PropertyName::NoDeadlock => "no-deadlock",
            PropertyName::CleanTerminates => "clean-terminates",
            PropertyName::CleanSucceeds => "clean-succeeds",
            PropertyName::NoOvertaking => "no-overtaking",
            PropertyName::NoLeakedTemp => "no-leaked-temp",
            PropertyName::CleanRemovesUnused => "clean-removes-unused",
            PropertyName::CleanOverlapsChild => "clean-overlaps-child",
            PropertyName::RunsShareLock => "runs-share-lock",
        }
    }

    /// Looks a property up by name.
    pub fn parse(name: &str) -> Option<PropertyName> {
        ALL.into_iter().find(|p| p.name() == name)
    }

    /// Two lines for the docs.
    pub fn summary(self) -> &'static str {
        match self {
            PropertyName::LiveEnvIntact => {
                "No running child's (or its daemon's) environment is missing, no child fails to spawn because its \
                 environment is gone, and no environment vanishes while its run builds or reuses it."
            }
            PropertyName::MutualExclusion => {
                "No process deletes cache contents while another process believes it holds the cache lock \
                 (holds a lock through its descriptor on .lock, whichever inode that is)."
            }
            PropertyName::NoDeadlock => {
                "No reachable state in which unfinished processes exist and every one of them is blocked: waiting \
                 for a lock with no timeout, or for a child that is itself blocked."
            }
            PropertyName::CleanTerminates => {
                "Every clean ends on every fair behaviour, even while a child runs forever: no hang. Exit 0, exit 2 \
                 on its lock timeout or any other failure exit all count as ended, and so does a killed clean."
            }
            PropertyName::CleanSucceeds => {
                "Every clean that is not killed ends with exit 0 having deleted what its policy deletes, on every fair \
                 behaviour, even beside a server, a daemon or a nested clean. \"No cache found\" (exit 0, nothing to \
                 delete) counts; a timeout, a failure or giving up on a busy lock does not."
            }
            PropertyName::NoOvertaking => {
                "A run that starts (takes its first step) after a clean has started does not get the cache lock \
                 before that clean has got the cache."
            }
            PropertyName::NoLeakedTemp => {
                "When every process and child has finished and nothing was killed, no temporary cache remains; and \
                 the temporary cache of a killed --no-cache run whose child has exited is gone once a prune that \
                 started after that has finished (exit 0)."
            }
            PropertyName::CleanRemovesUnused => {
                "When a clean finishes its work (deleted, or gave up), every cached environment that no live process \
                 uses is gone."
            }
            PropertyName::CleanOverlapsChild => {
                "Witness (sometimes): a clean holds the cache (past its lock step, before releasing it) while some \
                 child runs, i.e. cleaning is not simply blocked by every running program."
            }
            PropertyName::RunsShareLock => {
                "Witness (sometimes): two processes hold the cache lock shared at the same time."
            }
        }
    }

    /// How the property is checked.
    pub fn expectation(self) -> Kind3 {
        match self {
            PropertyName::CleanTerminates | PropertyName::CleanSucceeds => Kind3::Eventually,
            PropertyName::CleanOverlapsChild | PropertyName::RunsShareLock => Kind3::Sometimes,
            _ => Kind3::Always,
        }
    }

    /// True if the scenario can say anything about this property.
    pub fn applies_to(self, sc: &Scenario) -> bool {
        let cleans = sc.has(Kind::is_clean) || sc.has(|k| k == Kind::RunNestedClean);
        let shared_runs = sc
            .procs
            .iter()
            .filter(|p| p.kind.uses_shared_cache())
            .count();
        match self {
            PropertyName::LiveEnvIntact => sc.has(Kind::is_run),
            PropertyName::MutualExclusion
            | PropertyName::CleanTerminates
            | PropertyName::CleanSucceeds
            | PropertyName::CleanRemovesUnused => cleans,
            PropertyName::NoDeadlock => true,
            PropertyName::NoOvertaking => cleans && shared_runs > 0,
            PropertyName::NoLeakedTemp => sc.has(|k| k == Kind::RunNoCache),
            PropertyName::CleanOverlapsChild => cleans && sc.has(Kind::is_run),
            PropertyName::RunsShareLock => shared_runs >= 2,
        }
    }

    /// The events an `eventually` property does not assume will happen: `killed` for
    /// both; for `clean-succeeds` also `lock-timeout`, which the model (it has no clock)
    /// lets fire during any wait, even one that will end: a clean cut short by it is
    /// judged like a killed one, and a wait that only the timeout can end is a failure.
    pub fn unfair_events(self) -> &'static [Event] {
        match self {
            PropertyName::CleanSucceeds => &[Event::Killed, Event::LockTimeout],
            _ => &[Event::Killed],
        }
    }
}

impl std::fmt::Display for PropertyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
