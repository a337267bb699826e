//! Each property of `crate::properties` as a predicate over the model's state, and as
//! stateright wants it. The fairness rules and why an `eventually` goal is checked as
//! "the goal, or not quiescent" are in `crate::properties`.

use stateright::{Expectation, Property};

use crate::machine::CacheModel;
use crate::properties::{Kind3, PropertyName};
use crate::protocol::Mode;
use crate::state::{Child, Daemon, Life, Outcome, State, Temp};

impl PropertyName {
    /// True if the predicate holds in `s` (for `sometimes`: the witness is there; for
    /// `eventually`: the goal is reached).
    pub fn holds(self, m: &CacheModel, s: &State) -> bool {
        match self {
            PropertyName::LiveEnvIntact => live_env_intact(m, s),
            PropertyName::MutualExclusion => !s.history.deleted_under_lock_holder,
            PropertyName::NoDeadlock => !deadlocked(m, s),
            PropertyName::CleanTerminates => cleans_ended(m, s),
            PropertyName::CleanSucceeds => cleans_succeeded(m, s),
            PropertyName::NoOvertaking => !s.history.overtook_clean,
            PropertyName::NoLeakedTemp => no_leaked_temp(m, s),
            PropertyName::CleanRemovesUnused => !s.history.left_unused_env,
            PropertyName::CleanOverlapsChild => clean_overlaps_child(m, s),
            PropertyName::RunsShareLock => runs_share_lock(s),
        }
    }

    /// True if `s` ends a fair behaviour for this property: no action is enabled but
    /// the [`PropertyName::unfair_events`].
    pub fn settled(self, m: &CacheModel, s: &State) -> bool {
        m.quiescent_with(s, self.unfair_events())
    }

    /// The property as stateright wants it. Conditions are plain `fn`s, so each
    /// property gets its own.
    pub fn to_stateright(self) -> Property<CacheModel> {
        let name = self.name();
        let condition: fn(&CacheModel, &State) -> bool = match self {
            PropertyName::LiveEnvIntact => |m, s| PropertyName::LiveEnvIntact.holds(m, s),
            PropertyName::MutualExclusion => |m, s| PropertyName::MutualExclusion.holds(m, s),
            PropertyName::NoDeadlock => |m, s| PropertyName::NoDeadlock.holds(m, s),
            PropertyName::CleanTerminates => |m, s| {
                PropertyName::CleanTerminates.holds(m, s)
                    || !PropertyName::CleanTerminates.settled(m, s)
            },
            PropertyName::CleanSucceeds => |m, s| {
                PropertyName::CleanSucceeds.holds(m, s)
                    || !PropertyName::CleanSucceeds.settled(m, s)
            },
            PropertyName::NoOvertaking => |m, s| PropertyName::NoOvertaking.holds(m, s),
            PropertyName::NoLeakedTemp => |m, s| PropertyName::NoLeakedTemp.holds(m, s),
            PropertyName::CleanRemovesUnused => |m, s| PropertyName::CleanRemovesUnused.holds(m, s),
            PropertyName::CleanOverlapsChild => |m, s| PropertyName::CleanOverlapsChild.holds(m, s),
            PropertyName::RunsShareLock => |m, s| PropertyName::RunsShareLock.holds(m, s),
        };
        // `eventually` goals are checked as the invariant "goal, or not quiescent" (see
        // the module doc): sound here, where stateright's `Eventually` is not.
        let expectation = match self.expectation() {
            Kind3::Always | Kind3::Eventually => Expectation::Always,
            Kind3::Sometimes => Expectation::Sometimes,
        };
        Property {
            expectation,
            name,
            condition,
        }
    }
}

fn live_env_intact(m: &CacheModel, s: &State) -> bool {
    (0..m.procs.len()).all(|p| {
        let st = &s.procs[p];
        let using = st.child == Child::Running || st.daemon == Daemon::Running;
        st.child != Child::FailedToSpawn
            && st.life != Life::Done(Outcome::EnvVanished)
            && (!using || m.env_present(s, p))
    })
}

fn deadlocked(m: &CacheModel, s: &State) -> bool {
    let mut agents = 0;
    for p in 0..m.procs.len() {
        let st = &s.procs[p];
        if st.daemon == Daemon::Running {
            return false;
        }
        if m.finished(s, p) {
            // A finished uv process's orphaned child still runs on its own.
            if st.child == Child::Running {
                return false;
            }
            continue;
        }
        agents += 1;
        if !m.stuck(s, p) {
            return false;
        }
    }
    agents > 0
}

/// Every clean has ended, however: done with any outcome, killed, or moot (a nested
/// clean whose host's child will never run it).
///
/// Monotone: `Done` and `Killed` are final, and each way of being moot is permanent
/// (a failed spawn stays failed, a dead host never spawns, an exited child never runs
/// its clean).
fn cleans_ended(m: &CacheModel, s: &State) -> bool {
    (0..m.procs.len()).all(|p| !m.procs[p].kind.is_clean() || m.finished(s, p))
}

/// Every clean that was neither killed nor cut short by its lock timeout has ended
/// with exit 0 having done its deletion (`Ok`), or found no cache to clean (`NoCache`:
/// exit 0, nothing left to delete); a moot nested clean was never invoked and counts as
/// nothing to answer for. A failure (exit 2 on a root that is not empty) or giving up
/// on a busy lock (exit 0, nothing deleted) does not count. A timeout is excused like a
/// kill because `lock-timeout` is unfair for this property: a wait that only the timeout
/// could end leaves a settled state with the clean still waiting, which fails.
///
/// Monotone for the same reasons as [`cleans_ended`]: it speaks only of final lives and
/// permanent mootness.
fn cleans_succeeded(m: &CacheModel, s: &State) -> bool {
    (0..m.procs.len()).all(|p| {
        !m.procs[p].kind.is_clean()
            || matches!(
                s.procs[p].life,
                Life::Killed | Life::Done(Outcome::Ok | Outcome::NoCache | Outcome::TimedOut)
            )
            || (m.alive(s, p) && m.finished(s, p))
    })
}

/// Two promises. When every process and child has finished and nothing was killed, no
/// temporary cache remains. And a temporary cache that leaked for good (its run killed,
/// its child exited) is gone once a prune that started after that has finished its
/// work (exit 0).
///
/// The second is monotone: a removed temporary cache never comes back, and a finished
/// prune stays finished.
fn no_leaked_temp(m: &CacheModel, s: &State) -> bool {
    let everything_done = (0..m.procs.len()).all(|p| {
        let st = &s.procs[p];
        matches!(st.life, Life::Done(_)) || (m.finished(s, p) && st.life != Life::Killed)
    }) && s
        .procs
        .iter()
        .all(|st| st.child != Child::Running && st.daemon != Daemon::Running);
    let none_left = s
        .procs
        .iter()
        .all(|st| !matches!(st.temp, Temp::Present(_)));
    (!everything_done || none_left) && pruned_leaked_temps(m, s) == 0
}

/// The temporary caches (bit per run) that leaked before a prune started, and are still
/// there though that prune has finished its work.
pub(crate) fn pruned_leaked_temps(m: &CacheModel, s: &State) -> u16 {
    let still_leaked = m.leaked_temps(s);
    (0..m.procs.len())
        .filter(|&p| s.procs[p].life == Life::Done(Outcome::Ok))
        .fold(0, |left, p| {
            left | (s.procs[p].leaked_at_start & still_leaked)
        })
}

fn clean_overlaps_child(m: &CacheModel, s: &State) -> bool {
    let child_runs = s
        .procs
        .iter()
        .any(|st| st.child == Child::Running || st.daemon == Daemon::Running);
    child_runs && (0..m.procs.len()).any(|c| m.clean_holds_cache(s, c))
}

fn runs_share_lock(s: &State) -> bool {
    s.procs.iter().enumerate().any(|(i, a)| {
        s.procs
            .iter()
            .skip(i + 1)
            .any(|b| match (a.root_fd, b.root_fd) {
                (Some(x), Some(y)) => {
                    x.inode == y.inode
                        && x.lock == Some(Mode::Shared)
                        && y.lock == Some(Mode::Shared)
                }
                _ => false,
            })
    })
}
