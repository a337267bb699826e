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
//!
//! Attribution, in mixed scenarios (`run,clean@uv-0.13`): the processes without
//! `@policy` run the *checked* policy, the others an old release. A violation is the
//! checked policy's only if one of its processes is the victim or the culprit; a
//! violation among the old release's own processes is the old release's bug and is not
//! counted (that release's own row shows it). Precisely:
//! - `live-env-intact`: a process of the checked policy lost its environment (its child
//!   or daemon runs without it, it failed to spawn, or it vanished while being built or
//!   reused), whoever deleted it; or a process of the checked policy deleted the
//!   environment of another release's process that was using it *while that process was
//!   protected under its own release's rules* (it held its environment lock, or a lock
//!   through its descriptor on `.lock`). An old run whose protection had already gone
//!   (its uv process killed, or exited with a daemon left behind) is not protected by its
//!   own release either: its loss is that release's bug.
//! - `mutual-exclusion` and `root-lock-exclusion`: the process that deletes, or the
//!   process whose lock it deletes against, runs the checked policy.
//! - `clean-terminates`, `clean-succeeds`, `clean-removes-unused`: judged for the cleans of
//!   the checked policy. What an old clean does beside the checked policy's processes
//!   (wait for them, time out) is the cost of the upgrade, shown in `docs/verdicts.md`'s
//!   upgrading section, not a violation.
//! - `no-overtaking`: the run that overtakes or the clean overtaken runs the checked
//!   policy. `no-leaked-temp`: the checked policy's temporary caches.
//! - `no-deadlock` and the witnesses are about the whole system, whoever runs what.
//!
//! Mutual exclusion, sharpened: a deletion conflicts with a lock holder only if the lock
//! held is the one that protects what is deleted. `.lock` protects the scaffold and every
//! entry of uv's layout; an environment of the new layout (`Design::new_layout`) is
//! protected by its own environment lock. This matters only where a process holds
//! `.lock` without needing it against the deleter: a `cachelock-fenced` run keeps `.lock`
//! shared only as a fence against old cleans, which know no other lock, while its own
//! cleans, finding `.lock` busy, delete only unlocked environments of the new layout.
//! Under every policy and scenario without that, the sharpened reading and the literal
//! one (`root-lock-exclusion`: no deletion at all while another process holds a lock
//! through its descriptor on `.lock`) agree, and the literal one is still checked, so
//! its failures stay visible.

use crate::protocol::{Event, Kind, Scenario};

/// A property, by its fixed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PropertyName {
    LiveEnvIntact,
    MutualExclusion,
    RootLockExclusion,
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
pub const ALL: [PropertyName; 11] = [
    PropertyName::LiveEnvIntact,
    PropertyName::MutualExclusion,
    PropertyName::RootLockExclusion,
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
            PropertyName::RootLockExclusion => "root-lock-exclusion",
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
                "No process deletes an entry while another process believes it holds the lock that protects it: \
                 .lock (a lock through its descriptor on .lock, whichever inode that is) for the scaffold and uv's \
                 layout, the environment's own lock for an environment of the new layout."
            }
            PropertyName::RootLockExclusion => {
                "The literal reading of mutual-exclusion: no process deletes anything while another process holds \
                 a lock through its descriptor on .lock, whatever that lock is held for."
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
            | PropertyName::RootLockExclusion
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
