//! The protocol's promises, as named predicates over the model's state.
//!
//! `always` properties must hold in every reachable state; `eventually` ones on every
//! complete run; `sometimes` ones are witnesses that a scenario is not trivial (the
//! interesting situation is reachable at all).

use stateright::{Expectation, Property};

use crate::machine::{CacheModel, Child, Daemon, Life, Outcome, State, Temp};
use crate::protocol::{Kind, Mode, Scenario};

/// A property, by its fixed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PropertyName {
    LiveEnvIntact,
    MutualExclusion,
    NoDeadlock,
    CleanCompletes,
    NoOvertaking,
    NoLeakedTemp,
    CleanRemovesUnused,
    CleanOverlapsChild,
    RunsShareLock,
}

/// Every property, in table order.
pub const ALL: [PropertyName; 9] = [
    PropertyName::LiveEnvIntact,
    PropertyName::MutualExclusion,
    PropertyName::NoDeadlock,
    PropertyName::CleanCompletes,
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
            PropertyName::CleanCompletes => "clean-completes",
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
            PropertyName::CleanCompletes => {
                "Every clean finishes (or fails with its timeout) on every complete run, even while a child runs \
                 forever; a clean that fails otherwise (exit 2 on a root that is not empty) has not finished its job."
            }
            PropertyName::NoOvertaking => {
                "A run that starts (takes its first step) after a clean has started does not get the cache lock \
                 before that clean has got the cache."
            }
            PropertyName::NoLeakedTemp => {
                "When every process and child has finished and nothing was killed, no temporary cache remains."
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
            PropertyName::CleanCompletes => Kind3::Eventually,
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
            | PropertyName::CleanCompletes
            | PropertyName::CleanRemovesUnused => cleans,
            PropertyName::NoDeadlock => true,
            PropertyName::NoOvertaking => cleans && shared_runs > 0,
            PropertyName::NoLeakedTemp => sc.has(|k| k == Kind::RunNoCache),
            PropertyName::CleanOverlapsChild => cleans && sc.has(Kind::is_run),
            PropertyName::RunsShareLock => shared_runs >= 2,
        }
    }

    /// True if the predicate holds in `s` (for `sometimes`: the witness is there; for
    /// `eventually`: the goal is reached).
    pub fn holds(self, m: &CacheModel, s: &State) -> bool {
        match self {
            PropertyName::LiveEnvIntact => live_env_intact(m, s),
            PropertyName::MutualExclusion => !s.history.deleted_under_lock_holder,
            PropertyName::NoDeadlock => !deadlocked(m, s),
            PropertyName::CleanCompletes => cleans_finished(m, s),
            PropertyName::NoOvertaking => !s.history.overtook_clean,
            PropertyName::NoLeakedTemp => no_leaked_temp(m, s),
            PropertyName::CleanRemovesUnused => !s.history.left_unused_env,
            PropertyName::CleanOverlapsChild => clean_overlaps_child(m, s),
            PropertyName::RunsShareLock => runs_share_lock(s),
        }
    }

    /// The property as stateright wants it. Conditions are plain `fn`s, so each
    /// property gets its own.
    pub fn to_stateright(self) -> Property<CacheModel> {
        let name = self.name();
        let condition: fn(&CacheModel, &State) -> bool = match self {
            PropertyName::LiveEnvIntact => |m, s| PropertyName::LiveEnvIntact.holds(m, s),
            PropertyName::MutualExclusion => |m, s| PropertyName::MutualExclusion.holds(m, s),
            PropertyName::NoDeadlock => |m, s| PropertyName::NoDeadlock.holds(m, s),
            PropertyName::CleanCompletes => |m, s| PropertyName::CleanCompletes.holds(m, s),
            PropertyName::NoOvertaking => |m, s| PropertyName::NoOvertaking.holds(m, s),
            PropertyName::NoLeakedTemp => |m, s| PropertyName::NoLeakedTemp.holds(m, s),
            PropertyName::CleanRemovesUnused => |m, s| PropertyName::CleanRemovesUnused.holds(m, s),
            PropertyName::CleanOverlapsChild => |m, s| PropertyName::CleanOverlapsChild.holds(m, s),
            PropertyName::RunsShareLock => |m, s| PropertyName::RunsShareLock.holds(m, s),
        };
        let expectation = match self.expectation() {
            Kind3::Always => Expectation::Always,
            Kind3::Eventually => Expectation::Eventually,
            Kind3::Sometimes => Expectation::Sometimes,
        };
        Property {
            expectation,
            name,
            condition,
        }
    }
}

impl std::fmt::Display for PropertyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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

/// Every clean has finished, and none failed (a timeout is an allowed way to finish).
fn cleans_finished(m: &CacheModel, s: &State) -> bool {
    (0..m.procs.len()).all(|p| {
        !m.procs[p].kind.is_clean()
            || (m.finished(s, p) && s.procs[p].life != Life::Done(Outcome::RootNotEmpty))
    })
}

fn no_leaked_temp(m: &CacheModel, s: &State) -> bool {
    let everything_done = (0..m.procs.len()).all(|p| {
        let st = &s.procs[p];
        matches!(st.life, Life::Done(_)) || (m.finished(s, p) && st.life != Life::Killed)
    }) && s
        .procs
        .iter()
        .all(|st| st.child != Child::Running && st.daemon != Daemon::Running);
    !everything_done
        || s.procs
            .iter()
            .all(|st| !matches!(st.temp, Temp::Present(_)))
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
