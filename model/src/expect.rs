//! Each policy's declared verdicts over the CI scenario set, with a reason each.
//! `cachelock check` fails when the checker disagrees with a declaration, so any model
//! change that moves a verdict is caught.
//!
//! A declaration lists the CI scenarios in which the property fails (for a `sometimes`
//! property: in which the witness is unreachable). An empty list means it holds in
//! every CI scenario it applies to.

use crate::properties::PropertyName as P;
use crate::protocol::{Policy, Scenario};

/// The scenarios CI checks every policy against. Each is small enough to be checked
/// exhaustively in well under a second; each pins at least one fact.
pub const CI_SCENARIOS: [&str; 29] = [
    "run-no-cache",
    "run-daemon",
    "run,run,clean",
    "run,clean,clean",
    "run-script,clean",
    "run-script,clean-force",
    "run+crash,clean",
    "run-script+crash,clean",
    "run-daemon,clean",
    "run-server,clean",
    "run-server,clean+timeout",
    "run-nested-clean",
    "run-nested-clean+timeout",
    "run,clean,run",
    "tool-run,prune",
    "run-no-cache+crash",
    "run,run-script,clean",
    "run-daemon+crash,clean,run",
    "run+crash+timeout,clean+timeout,clean-force,run-no-cache",
    "run-nested-clean,clean",
    "run-server+crash,clean",
    "run-nested-clean+crash",
    "run+crash,clean,run",
    "run+crash,clean,clean",
    "run-daemon+crash,clean",
    "run-script+crash,clean-force",
    "run-nested-clean+crash,clean",
    "run-no-cache,prune",
    "run-no-cache+crash,prune",
];

/// The mixed scenarios CI checks the policies of [`Policy::BESIDE_OLD_UV`] against: the
/// processes without `@policy` run the checked policy, the others an old uv release.
pub const MIXED_SCENARIOS: [&str; 19] = [
    // old cleans beside new runs
    "run,clean@uv-0.13",
    "run,clean@uv-0.8.20",
    "run-script,prune@uv-0.13",
    "run-server,clean+timeout@uv-0.13",
    "run-daemon,clean@uv-0.13",
    "run+crash,clean@uv-0.13",
    "tool-run,clean-force@uv-0.13",
    "run-no-cache,clean@uv-0.8.20",
    // new cleans beside old runs
    "run@uv-0.13,clean",
    "run@uv-0.8.20,clean",
    "run-script@uv-0.13,prune",
    "tool-run@uv-0.13,clean-force",
    "run+crash@uv-0.8.20,clean",
    "run-server@uv-0.13,run-script@uv-0.13,clean",
    // both, beside a new server
    "run-server,clean,clean@uv-0.13",
    "run-server,run@uv-0.13,clean",
    "run-server,tool-run@uv-0.8.20,prune",
    "run-nested-clean,clean@uv-0.13",
    // the 0.8.19-0.12 orphaned-.lock race (two old cleans), a new run its victim
    "run,clean@uv-0.8.20,clean@uv-0.8.20",
];

/// The mixed scenarios, parsed.
pub fn mixed_scenarios() -> Vec<Scenario> {
    MIXED_SCENARIOS
        .iter()
        .map(|s| Scenario::parse(s).expect("mixed scenarios are well-formed"))
        .collect()
}

/// The CI scenarios, parsed.
pub fn ci_scenarios() -> Vec<Scenario> {
    CI_SCENARIOS
        .iter()
        .map(|s| Scenario::parse(s).expect("CI scenarios are well-formed"))
        .collect()
}

/// A set of CI scenarios, named by listing them or by listing the exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenarios {
    /// Exactly these.
    Only(&'static [&'static str]),
    /// Every CI scenario but these.
    AllBut(&'static [&'static str]),
    /// Every mixed scenario but these.
    AllMixedBut(&'static [&'static str]),
}

/// A declared verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The CI scenarios in which the property fails.
    pub failing: Scenarios,
    pub reason: &'static str,
}

impl Expected {
    /// The failing CI scenarios, in the order of [`CI_SCENARIOS`].
    pub fn failing(&self) -> Vec<&'static str> {
        match self.failing {
            Scenarios::Only(list) => list.to_vec(),
            Scenarios::AllBut(but) => CI_SCENARIOS
                .iter()
                .copied()
                .filter(|s| !but.contains(s))
                .collect(),
            Scenarios::AllMixedBut(but) => MIXED_SCENARIOS
                .iter()
                .copied()
                .filter(|s| !but.contains(s))
                .collect(),
        }
    }

    /// The scenarios the declaration names (to check that they are CI scenarios).
    pub fn named(&self) -> &'static [&'static str] {
        match self.failing {
            Scenarios::Only(list) | Scenarios::AllBut(list) | Scenarios::AllMixedBut(list) => list,
        }
    }
}

const fn holds(reason: &'static str) -> Expected {
    Expected {
        failing: Scenarios::Only(&[]),
        reason,
    }
}

const fn fails(failing: &'static [&'static str], reason: &'static str) -> Expected {
    Expected {
        failing: Scenarios::Only(failing),
        reason,
    }
}

const fn fails_all_but(but: &'static [&'static str], reason: &'static str) -> Expected {
    Expected {
        failing: Scenarios::AllBut(but),
        reason,
    }
}

const BIG: &str = "run+crash+timeout,clean+timeout,clean-force,run-no-cache";

/// The CI scenarios without a run in the shared cache and a clean.
const NO_RUN_AND_CLEAN: &[&str] = &[
    "run-no-cache",
    "run-daemon",
    "run-nested-clean",
    "run-nested-clean+timeout",
    "run-no-cache+crash",
    "run-nested-clean+crash",
    "run-no-cache,prune",
    "run-no-cache+crash,prune",
];

/// Scenarios where a clean can only reach the cache after every child has exited,
/// because nothing crashes, no `--force`, no daemon.
const CLEAN_AFTER_CHILDREN: &[&str] = &[
    "run,run,clean",
    "run,clean,clean",
    "run-script,clean",
    "run-server,clean",
    "run-server,clean+timeout",
    "run-nested-clean",
    "run-nested-clean+timeout",
    "run,clean,run",
    "tool-run,prune",
    "run,run-script,clean",
    "run-nested-clean,clean",
];

/// A `--force` clean, a killed parent, or a daemon outliving its run (which loses
/// the run's overlay even with no clean at all).
const FORCE_CRASH_DAEMON: &[&str] = &[
    "run-daemon",
    "run-script,clean-force",
    "run+crash,clean",
    "run-script+crash,clean",
    "run-daemon,clean",
    "run-daemon+crash,clean,run",
    BIG,
    "run-server+crash,clean",
    "run-nested-clean+crash",
    "run+crash,clean,run",
    "run+crash,clean,clean",
    "run-daemon+crash,clean",
    "run-script+crash,clean-force",
    "run-nested-clean+crash,clean",
];

const CLEAN_FORCE: &[&str] = &[
    "run-script,clean-force",
    BIG,
    "run-script+crash,clean-force",
];

/// Where a clean that moves to its trash only after releasing `.lock` deletes beside a
/// run that got `.lock` meanwhile (every scenario with a run, or a prune beside one,
/// that a clean outlives), and where `clean --force` does anyway.
const TRASH_AFTER_RELEASE: &[&str] = &[
    "run-script,clean-force",
    BIG,
    "run-script+crash,clean-force",
    "run,run,clean",
    "run,clean,clean",
    "run-script,clean",
    "run+crash,clean",
    "run-script+crash,clean",
    "run-daemon,clean",
    "run-server,clean",
    "run-server,clean+timeout",
    "run,clean,run",
    "tool-run,prune",
    "run,run-script,clean",
    "run-daemon+crash,clean,run",
    "run-nested-clean,clean",
    "run-server+crash,clean",
    "run+crash,clean,run",
    "run+crash,clean,clean",
    "run-daemon+crash,clean",
    "run-nested-clean+crash,clean",
];

/// Where a clean can wait for ever: beside a server, or as the nested clean of a run
/// (or beside one), whose parent holds the lock until its child exits.
const CLEAN_BLOCKED: &[&str] = &[
    "run-server,clean",
    "run-nested-clean",
    "run-nested-clean,clean",
    "run-server+crash,clean",
    "run-nested-clean+crash",
    "run-nested-clean+crash,clean",
];

/// [`CLEAN_BLOCKED`] and the same scenarios with a lock timeout.
const CLEAN_BLOCKED_OR_TIMED_OUT: &[&str] = &[
    "run-server,clean",
    "run-server,clean+timeout",
    "run-nested-clean",
    "run-nested-clean+timeout",
    "run-nested-clean,clean",
    "run-server+crash,clean",
    "run-nested-clean+crash",
    "run-nested-clean+crash,clean",
];

/// The nested-clean deadlock: `uv run uv cache clean` without a timeout.
const NESTED_DEADLOCK: &[&str] = &[
    "run-nested-clean",
    "run-nested-clean,clean",
    "run-nested-clean+crash",
    "run-nested-clean+crash,clean",
];

const FORCE_REASON: &str =
    "clean --force deletes without the lock by definition while a run holds it";
const OVERTAKE_REASON: &str = "a clean that has opened .lock but not locked it is invisible: a run starting later locks shared first (no writer preference)";
const CLEAN_WAITS_REASON: &str = "the clean waits for the lock every run holds until its child exits, so it never holds the cache while a child runs";
const TWO_RUNS_REASON: &str = "runs lock shared, so two runs hold it together";

/// The declaration for one policy and property.
pub fn expected(policy: Policy, property: P) -> Expected {
    use Policy::*;
    match (policy, property) {
        // The literal reading differs from the sharpened one only where a clean deletes
        // its own layout beside a `.lock` holder (the fenced designs).
        (
            Uv0819
            | Uv0820
            | Uv013
            | UvPr15977
            | Cachelock
            | UvAutoprune
            | Serial
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::RootLockExclusion,
        ) => expected(policy, P::MutualExclusion),
        // ---- uv 0.8.19
        (Uv0819, P::LiveEnvIntact) => fails_all_but(
            &[],
            "the handle is dropped before spawning: --no-cache children fail to spawn, and any clean may delete a running child's env",
        ),
        (Uv0819, P::MutualExclusion) => fails(
            &[
                "run,clean,clean",
                "run-script,clean-force",
                BIG,
                "run+crash,clean,clean",
                "run-script+crash,clean-force",
            ],
            "clean unlinks .lock: a run that opened it before locks an orphaned inode and a second clean locks a fresh one",
        ),
        (Uv0819, P::NoDeadlock) => {
            holds("the run releases the lock before its child runs a nested clean")
        }
        (Uv0819, P::CleanTerminates) => holds(
            "the lock is released before spawning, so no clean waits for a child; a clean that fails on a root that is not empty (exit 2) has ended",
        ),
        (Uv0819, P::CleanSucceeds) => fails_all_but(
            &[
                "run-no-cache",
                "run-daemon",
                "run-nested-clean",
                "run-nested-clean+timeout",
                "tool-run,prune",
                "run-no-cache+crash",
                "run-nested-clean+crash",
                "run-no-cache,prune",
                "run-no-cache+crash,prune",
            ],
            "a run that starts while the clean deletes recreates files, and removing the root then fails (exit 2) on 0.8.19; a prune keeps the root, and a nested clean runs after its own run has set up",
        ),
        (Uv0819 | Uv0820 | Uv013 | UvPr15977 | UvAutoprune | Serial, P::NoOvertaking) => {
            fails_all_but(NO_RUN_AND_CLEAN, OVERTAKE_REASON)
        }
        (Uv0819 | Uv0820 | Uv013 | UvPr15977 | UvAutoprune | Serial, P::NoLeakedTemp) => fails(
            &["run-no-cache+crash,prune"],
            "the temporary cache is removed when the handle drops, on success and on error, but a killed run's stays: prune works on the shared cache only",
        ),
        (Uv0819 | Uv0820 | Uv013 | UvPr15977 | Serial, P::CleanRemovesUnused) => {
            holds("a clean that gets the lock deletes every environment")
        }
        (Uv0819, P::CleanOverlapsChild) => fails(
            &["run-no-cache,prune", "run-no-cache+crash,prune"],
            "the lock is released before spawning, so a clean runs beside any child; but a --no-cache child never runs: its temporary cache is dropped before spawning",
        ),
        (Uv0819 | Uv0820 | Uv013 | UvPr15977 | UvAutoprune, P::RunsShareLock) => {
            holds(TWO_RUNS_REASON)
        }

        // ---- uv 0.8.20 .. 0.12
        (Uv0820, P::LiveEnvIntact) => fails(
            &[
                "run-daemon",
                "run,clean,clean",
                "run-script,clean-force",
                "run+crash,clean",
                "run-script+crash,clean",
                "run-daemon,clean",
                "run-daemon+crash,clean,run",
                BIG,
                "run-nested-clean,clean",
                "run-server+crash,clean",
                "run-nested-clean+crash",
                "run+crash,clean,run",
                "run+crash,clean,clean",
                "run-daemon+crash,clean",
                "run-script+crash,clean-force",
                "run-nested-clean+crash,clean",
            ],
            "the orphaned-.lock race (run,clean,clean; a nested clean that locks a fresh inode), --force, a killed parent and a daemon each let a clean delete a live env; a daemon loses the run's overlay anyway",
        ),
        (Uv0820, P::MutualExclusion) => fails(
            &[
                "run,clean,clean",
                "run-script,clean-force",
                BIG,
                "run-nested-clean,clean",
                "run+crash,clean,clean",
                "run-script+crash,clean-force",
                "run-nested-clean+crash,clean",
            ],
            "clean unlinks .lock: a run locks the orphaned inode and a second (or nested) clean locks a fresh one",
        ),
        (Uv0820, P::NoDeadlock) => fails(
            &[
                "run-nested-clean",
                "run-nested-clean+timeout",
                "run-nested-clean,clean",
                "run-nested-clean+crash",
                "run-nested-clean+crash,clean",
            ],
            "uv run uv cache clean: the nested clean waits for the lock its own parent holds until the child exits; no lock timeout before 0.9.16",
        ),
        (Uv013 | Serial, P::NoDeadlock) => fails(
            NESTED_DEADLOCK,
            "uv run uv cache clean: the nested clean waits for the lock its own parent holds until the child exits (+timeout: exit 2); a possible kill of the parent is no way out",
        ),
        (Uv0820, P::CleanTerminates) => fails(
            CLEAN_BLOCKED_OR_TIMED_OUT,
            "a run holds the lock until its child exits, so a server (or the nested clean's own parent) blocks clean forever, unless the run is killed, which need not happen; no lock timeout before 0.9.16",
        ),
        (Uv013 | Serial, P::CleanTerminates) => fails(
            CLEAN_BLOCKED,
            "a run holds the lock until its child exits, so a server (or the nested clean's own parent) blocks clean forever, unless the run is killed, which need not happen (+timeout: exit 2 ends it)",
        ),
        (Uv0820 | Uv013 | Serial, P::CleanSucceeds) => fails(
            CLEAN_BLOCKED_OR_TIMED_OUT,
            "a server (or the nested clean's own parent) holds the lock for ever: the clean waits for ever, or ends with exit 2 on its timeout, whatever the timeout",
        ),
        (Uv0820, P::CleanOverlapsChild) => fails(
            &[
                "run,run,clean",
                "run-script,clean",
                "run-server,clean",
                "run-server,clean+timeout",
                "run-nested-clean",
                "run-nested-clean+timeout",
                "run,clean,run",
                "tool-run,prune",
                "run,run-script,clean",
            ],
            "the clean waits for the lock every run holds until its child exits; only the orphaned-.lock race with two cleans gets around it",
        ),

        // ---- uv 0.13
        (Uv013 | UvAutoprune | Serial, P::LiveEnvIntact) => fails(
            FORCE_CRASH_DAEMON,
            "the lock protects a child only while its uv parent lives and waits: --force, SIGKILL of the parent and daemons get around it, and a daemon loses the run's overlay when the run exits",
        ),
        (Uv013 | UvPr15977 | UvAutoprune | Serial, P::MutualExclusion) => {
            fails(CLEAN_FORCE, FORCE_REASON)
        }
        (Uv013 | Serial, P::CleanOverlapsChild) => fails(CLEAN_AFTER_CHILDREN, CLEAN_WAITS_REASON),

        // ---- uv PR 15977
        (UvPr15977, P::LiveEnvIntact) => fails_all_but(
            &[
                "run-no-cache",
                "run-no-cache+crash",
                "run-no-cache,prune",
                "run-no-cache+crash,prune",
            ],
            "persistent caches are released before spawning, so any clean deletes a running child's env; --no-cache alone is safe",
        ),
        (UvPr15977, P::NoDeadlock) => {
            holds("the lock is released before the child runs its nested clean")
        }
        (UvPr15977, P::CleanTerminates) => holds("no lock is held while a child runs"),
        (UvPr15977, P::CleanSucceeds) => holds(
            "no lock is held while a child runs, and clear keeps .lock and the root as in 0.13",
        ),
        (UvPr15977, P::CleanOverlapsChild) => holds("the lock is released before spawning"),

        // ---- autoprune
        (UvAutoprune, P::NoDeadlock) => {
            holds("a nested clean that finds the lock busy gives up instead of waiting")
        }
        (UvAutoprune, P::CleanTerminates) => {
            holds("a clean never waits: it gives up when the lock is busy")
        }
        (UvAutoprune, P::CleanSucceeds) => fails_all_but(
            &[
                "run-no-cache",
                "run-daemon",
                "run-script,clean-force",
                "run-no-cache+crash",
                "run-script+crash,clean-force",
                "run-no-cache,prune",
                "run-no-cache+crash,prune",
            ],
            "a clean that finds the lock busy gives up: exit 0 with nothing deleted (--force goes on without the lock instead)",
        ),
        (UvAutoprune, P::CleanRemovesUnused) => fails(
            &[
                "run,run,clean",
                "run,clean,clean",
                "run,clean,run",
                "run,run-script,clean",
                "run-daemon+crash,clean,run",
                BIG,
                "run+crash,clean,run",
                "run+crash,clean,clean",
            ],
            "a clean that finds the lock busy gives up and leaves a finished run's environment behind",
        ),
        (UvAutoprune, P::CleanOverlapsChild) => fails(
            CLEAN_AFTER_CHILDREN,
            "a clean never gets a lock that a run holds until its child exits",
        ),

        // ---- serial
        (Serial, P::RunsShareLock) => fails(
            &[
                "run,run,clean",
                "run,clean,run",
                "run,run-script,clean",
                "run-daemon+crash,clean,run",
                "run+crash,clean,run",
            ],
            "runs lock exclusive: one at a time",
        ),

        // ---- cachelock and its broken variants
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::MutualExclusion,
        ) => fails(CLEAN_FORCE, FORCE_REASON),
        (Cachelock, P::LiveEnvIntact) => holds(
            "the env lock is taken under the root lock before the env is built, inherited by the child and its daemon, and clean deletes only what it can lock",
        ),
        (CachelockNoAnnounce | CachelockKeepTemp, P::LiveEnvIntact) => {
            holds("as cachelock: the environment locks are intact")
        }
        (CachelockPruneAnyTemp, P::LiveEnvIntact) => fails(
            &["run-no-cache,prune", "run-no-cache+crash,prune"],
            "prune removes a temporary cache whose lock a --no-cache run (or its child) holds: the run's build or its running child loses its environment",
        ),
        (CachelockLateEnvLock, P::LiveEnvIntact) => fails_all_but(
            NO_RUN_AND_CLEAN,
            "between releasing the root lock and taking the env lock, a clean can lock and delete the env",
        ),
        (CachelockUnlock, P::LiveEnvIntact) => fails(
            &[
                "run-daemon,clean",
                "run-daemon+crash,clean,run",
                "run-daemon+crash,clean",
            ],
            "LOCK_UN releases the lock for the daemon that inherited the descriptor too",
        ),
        (CachelockCloexec, P::LiveEnvIntact) => fails(
            &[
                "run+crash,clean",
                "run-script+crash,clean",
                "run-daemon,clean",
                "run-daemon+crash,clean,run",
                BIG,
                "run-server+crash,clean",
                "run-nested-clean+crash",
                "run+crash,clean,run",
                "run+crash,clean,clean",
                "run-daemon+crash,clean",
                "run-script+crash,clean-force",
                "run-nested-clean+crash,clean",
                "run-no-cache+crash,prune",
            ],
            "the env lock dies with the run: a killed parent's child and a daemon are unprotected; so is a killed --no-cache run's child, whose temporary cache a prune then takes",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::NoDeadlock,
        ) => {
            holds("runs hold the root lock only while setting up, never while waiting for a child")
        }
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::CleanTerminates,
        ) => holds(
            "the root lock is released before spawning and clean skips locked environments instead of waiting",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::CleanSucceeds,
        ) => holds(
            "a clean waits for the root lock only while runs set up, then deletes what no lock protects and keeps .lock and the root; a timeout that cuts a finite wait short is judged like a kill",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::NoOvertaking,
        ) => holds(
            "a clean's first step publishes an already-locked announcement that later runs wait for",
        ),
        (CachelockNoAnnounce, P::NoOvertaking) => fails_all_but(
            NO_RUN_AND_CLEAN,
            "without the announcement a started clean is invisible and later runs lock shared first",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockPruneAnyTemp,
            P::NoLeakedTemp,
        ) => holds(
            "the temporary cache guard drops after the child exits, on every path but SIGKILL; a killed run's temporary cache, its lock free once the child has exited, goes with the next prune",
        ),
        (CachelockKeepTemp, P::NoLeakedTemp) => fails(
            &[
                "run-no-cache",
                "run-no-cache+crash",
                BIG,
                "run-no-cache,prune",
                "run-no-cache+crash,prune",
            ],
            "the kept temporary cache has no owner left to remove it; a prune that runs before the run ends leaves it",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::CleanRemovesUnused,
        ) => holds(
            "an environment is locked exactly while something uses it, so clean skips only live ones",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::CleanOverlapsChild,
        ) => holds(
            "clean takes the root lock while children run: they hold only their environment locks",
        ),
        (
            Cachelock
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp,
            P::RunsShareLock,
        ) => holds(TWO_RUNS_REASON),

        // ---- cachelock-fenced and the designs tried for upgrades
        (FencedForceUnlocked, P::MutualExclusion) => fails(CLEAN_FORCE, FORCE_REASON),
        (
            CachelockFenced | FencedCleanWaits | FencedCleanGivesUp | FencedCloexec,
            P::MutualExclusion,
        ) => holds(
            "clean --force, like a clean that finds .lock busy, deletes only the environments of its own layout whose environment lock it gets, which .lock does not protect (the sharpened reading; root-lock-exclusion shows the literal one)",
        ),
        (CachelockFenced | FencedForceUnlocked | FencedCloexec, P::RootLockExclusion) => {
            fails_all_but(
                NO_CLEAN_BESIDE_RUN,
                "by design: runs keep .lock shared while their child lives, so a clean that finds it busy deletes the unlocked environments of its own layout beside them (which the sharpened mutual-exclusion allows: .lock does not protect them)",
            )
        }
        (FencedCleanWaits | FencedCleanGivesUp, P::RootLockExclusion) => {
            fails(CLEAN_FORCE, FORCE_REASON)
        }
        (FencedCleanAllLayouts | FencedSharedLayout, P::MutualExclusion | P::RootLockExclusion) => {
            fails_all_but(
                NO_CLEAN_BESIDE_RUN,
                "a clean that finds .lock busy deletes entries that .lock protects (uv's layout, the scaffold) while runs hold it",
            )
        }
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanWaits
            | FencedCleanGivesUp
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::LiveEnvIntact,
        ) => holds(
            "among its own processes the environment locks protect every environment, as under cachelock",
        ),
        (FencedCleanWaits, P::NoDeadlock) => fails(
            NESTED_DEADLOCK,
            "the nested clean waits for the .lock its own parent (and itself, through the inherited descriptor) holds until the child exits",
        ),
        (FencedCleanWaits, P::CleanTerminates) => fails(
            CLEAN_BLOCKED,
            "a run holds .lock until its child exits, and the clean waits for it: beside a server, or as a nested clean, for ever",
        ),
        (FencedCleanWaits, P::CleanSucceeds) => fails(
            CLEAN_BLOCKED_OR_TIMED_OUT,
            "a server (or the nested clean's own parent) holds .lock for ever: the clean waits for ever, or times out",
        ),
        (FencedCleanGivesUp, P::CleanSucceeds) => fails_all_but(
            &[
                "run-no-cache",
                "run-daemon",
                "run-script,clean-force",
                "run-no-cache+crash",
                "run-script+crash,clean-force",
                "run-no-cache,prune",
                "run-no-cache+crash,prune",
            ],
            "a clean that finds .lock busy (a run sets up, or its child lives) gives up with nothing deleted",
        ),
        (FencedCleanGivesUp, P::CleanRemovesUnused) => fails(
            &[
                "run,run,clean",
                "run,clean,clean",
                "run,clean,run",
                "run,run-script,clean",
                "run-daemon+crash,clean,run",
                BIG,
                "run+crash,clean,run",
                "run+crash,clean,clean",
            ],
            "a clean that finds .lock busy gives up and leaves a finished run's environment behind",
        ),
        (FencedCleanWaits | FencedCleanGivesUp, P::CleanOverlapsChild) => fails_all_but(
            &[
                "run-no-cache",
                "run-daemon",
                "run-script,clean-force",
                "run-no-cache+crash",
                BIG,
                "run-script+crash,clean-force",
                "run-no-cache,prune",
                "run-no-cache+crash,prune",
            ],
            "every run holds .lock while its child lives, and the clean never goes on without it (but --force)",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout
            | FencedCleanGivesUp,
            P::NoDeadlock | P::CleanTerminates,
        ) => holds(
            "a clean never waits for .lock: it gets it at once or goes on (or gives up) without it",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::CleanSucceeds,
        ) => holds(
            "a clean never waits for .lock: it cleans everything unprotected if it gets it at once, else what it can lock, and exits 0",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanWaits
            | FencedCleanGivesUp
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::NoOvertaking,
        ) => holds(
            "a clean's first step publishes an already-locked announcement that later runs wait for",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanWaits
            | FencedCleanGivesUp
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::NoLeakedTemp,
        ) => holds(
            "the temporary cache guard drops after the child exits, on every path but SIGKILL",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanWaits
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::CleanRemovesUnused,
        ) => holds(
            "among its own processes an environment is locked exactly while something uses it, so a clean (busy or not) skips only live ones",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::CleanOverlapsChild,
        ) => holds("a clean that finds .lock busy goes on beside the running children"),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCleanWaits
            | FencedCleanGivesUp
            | FencedCleanAllLayouts
            | FencedCloexec
            | FencedSharedLayout,
            P::RunsShareLock,
        ) => holds(TWO_RUNS_REASON),
        (FencedTrashAfterRelease, P::MutualExclusion) => fails(
            TRASH_AFTER_RELEASE,
            "a clean that has released .lock moves uv's layout and the scaffold into its trash while a run that got .lock meanwhile (one waiting for it when the clean announced itself) holds it: the moves, not the deletion of the trash, are what others see",
        ),
        (FencedTrashAfterRelease, _) => expected(CachelockFenced, property),
    }
}

/// The CI scenarios in which no clean can run beside a run holding `.lock`: no run in
/// the shared cache.
const NO_CLEAN_BESIDE_RUN: &[&str] = &[
    "run-no-cache",
    "run-daemon",
    "run-no-cache+crash",
    "run-no-cache,prune",
    "run-no-cache+crash,prune",
];

/// Every mixed scenario with a run in the shared cache and a clean of another release.
const MIXED_WITH_SHARED_RUN: &[&str] = &["run-no-cache,clean@uv-0.8.20"];

/// Two cleans of a release that unlinks `.lock` (uv 0.8.19 to 0.12) beside a run of the
/// checked policy: the orphaned-inode race, with the new run as its victim. Such a clean
/// releases `.lock` and only then unlinks it; a run that locks the old inode in between
/// holds a lock on a file no longer at `.lock`, and the second clean creates a new one,
/// gets it at once and deletes everything it knows, the run's environment included.
const MIXED_ORPHANED_LOCK: &str = "run,clean@uv-0.8.20,clean@uv-0.8.20";

/// What no new policy can prevent: an old release's forced clean, and the old
/// orphaned-`.lock` race.
const MIXED_OLD_BUGS: &[&str] = &["tool-run,clean-force@uv-0.13", MIXED_ORPHANED_LOCK];

/// A `clean --force`, of either release, beside a run of the other; and the
/// orphaned-`.lock` race.
const MIXED_FORCE_OR_ORPHANED: &[&str] = &[
    "tool-run,clean-force@uv-0.13",
    "tool-run@uv-0.13,clean-force",
    MIXED_ORPHANED_LOCK,
];

/// Mixed scenarios where the checked policy's clean finds `.lock` held by an old run
/// and leaves uv's layout alone (or only old cleans, which never hold it beside a child).
const MIXED_OLD_LAYOUT_LEFT: &[&str] = &[
    "run@uv-0.13,clean",
    "run@uv-0.8.20,clean",
    "run-script@uv-0.13,prune",
    "run+crash@uv-0.8.20,clean",
    "run-server@uv-0.13,run-script@uv-0.13,clean",
    "run-server,run@uv-0.13,clean",
    "run-server,tool-run@uv-0.8.20,prune",
];

/// [`MIXED_OLD_LAYOUT_LEFT`], and a forced clean beside an old run: it never waits, so
/// it too leaves uv's layout (the old run's environment, once finished) behind.
const MIXED_OLD_LAYOUT_LEFT_OR_FORCED: &[&str] = &[
    "run@uv-0.13,clean",
    "run@uv-0.8.20,clean",
    "run-script@uv-0.13,prune",
    "tool-run@uv-0.13,clean-force",
    "run+crash@uv-0.8.20,clean",
    "run-server@uv-0.13,run-script@uv-0.13,clean",
    "run-server,run@uv-0.13,clean",
    "run-server,tool-run@uv-0.8.20,prune",
];

/// Mixed scenarios whose cleans are all old: they wait for `.lock`, so none holds the
/// cache while a child runs.
const MIXED_ONLY_OLD_CLEANS: &[&str] = &[
    "run,clean@uv-0.13",
    "run,clean@uv-0.8.20",
    "run-script,prune@uv-0.13",
    "run-server,clean+timeout@uv-0.13",
    "run-daemon,clean@uv-0.13",
    "run+crash,clean@uv-0.13",
];

const MIXED_OVERTAKE_REASON: &str = "old releases neither announce their cleans nor wait for announced ones: a new run locks .lock shared before an old clean that only waits (flock has no writer preference), and an old run before a new clean has tried it";
const MIXED_OLD_BUGS_REASON: &str = "what an old release does that no lock of the new run can stop. Its clean --force ignores every lock by definition: it does not wait for .lock and knows no environment lock, so it deletes a new run's environment (the new policy's own clean --force keeps an old run's: it deletes only its own layout's unlocked environments). And uv 0.8.19-0.12's clean releases .lock and only then unlinks it: a run that locks the old inode in between holds a lock on a file no longer at .lock, and a second old clean creates a new .lock, gets it at once and deletes the run's environment and the scaffold; no lock or check of the new run closes that window (the unlink may come at any time after the release, after any check the run makes); uv 0.13 fixed it by keeping .lock, so the cure is to upgrade the old release";
const MIXED_OLD_LAYOUT_REASON: &str = "a clean that finds .lock held by an old run leaves uv's layout, which only .lock protects, for a later clean that gets .lock: an old run's finished environment stays";

/// The declarations for the mixed scenarios ([`MIXED_SCENARIOS`]), checked for the
/// policies of [`Policy::BESIDE_OLD_UV`] only. The attribution of a violation to the
/// checked policy is `crate::properties`'.
pub fn expected_mixed(policy: Policy, property: P) -> Expected {
    use Policy::*;
    match (policy, property) {
        (_, P::NoOvertaking) => Expected {
            failing: Scenarios::AllMixedBut(MIXED_WITH_SHARED_RUN),
            reason: MIXED_OVERTAKE_REASON,
        },
        (_, P::NoLeakedTemp) => holds("a --no-cache run never touches the shared cache"),
        (_, P::RunsShareLock) => holds("a new run and an old one hold .lock shared together"),

        // ---- cachelock: rejected, it releases .lock before spawning
        (Cachelock, P::LiveEnvIntact | P::MutualExclusion) => fails(
            &[
                "run,clean@uv-0.13",
                "run,clean@uv-0.8.20",
                "run-script,prune@uv-0.13",
                "run-server,clean+timeout@uv-0.13",
                "run-daemon,clean@uv-0.13",
                "run+crash,clean@uv-0.13",
                "tool-run,clean-force@uv-0.13",
                "tool-run@uv-0.13,clean-force",
                "run-server,clean,clean@uv-0.13",
                "run-nested-clean,clean@uv-0.13",
                MIXED_ORPHANED_LOCK,
            ],
            "the run releases .lock before spawning: an old clean, which respects only .lock, gets it and deletes the running child's environment (the bug seen for real with uv 0.13.9); and --force, and the old orphaned-.lock race",
        ),
        (Cachelock, P::RootLockExclusion) => fails(
            MIXED_FORCE_OR_ORPHANED,
            "clean --force deletes without .lock by definition (both releases'); and the old orphaned-.lock race",
        ),
        (Cachelock, P::CleanTerminates | P::CleanSucceeds) => fails(
            &["run-server@uv-0.13,run-script@uv-0.13,clean"],
            "its clean waits for .lock, which an old server holds for ever",
        ),
        (Cachelock, P::NoDeadlock) => {
            holds("no run holds .lock while its child runs its nested clean")
        }
        (Cachelock, P::CleanRemovesUnused) => {
            holds("its clean waits for .lock and then deletes every unlocked environment")
        }
        (Cachelock, P::CleanOverlapsChild) => fails(
            &[
                "run@uv-0.13,clean",
                "run@uv-0.8.20,clean",
                "run-script@uv-0.13,prune",
                "run-server@uv-0.13,run-script@uv-0.13,clean",
            ],
            "its clean waits for the .lock an old run holds until its child exits, and an old clean never holds the cache beside a child",
        ),

        // ---- cachelock-fenced and the designs tried for upgrades
        (
            CachelockFenced | FencedCleanWaits | FencedCleanGivesUp,
            P::LiveEnvIntact | P::MutualExclusion,
        ) => fails(MIXED_OLD_BUGS, MIXED_OLD_BUGS_REASON),
        (FencedForceUnlocked, P::LiveEnvIntact | P::MutualExclusion) => fails(
            MIXED_FORCE_OR_ORPHANED,
            "its clean --force goes on unlocked and deletes uv's layout: an old run's environment, which only .lock protects, goes while its child uses it; and the old release's --force, which ignores every lock, and the old orphaned-.lock race",
        ),
        (FencedCloexec, P::LiveEnvIntact | P::MutualExclusion) => fails(
            &[
                "run-daemon,clean@uv-0.13",
                "run+crash,clean@uv-0.13",
                "tool-run,clean-force@uv-0.13",
                MIXED_ORPHANED_LOCK,
            ],
            "the child does not inherit .lock: once the run has exited (daemon) or was killed, an old clean gets .lock and deletes the environment the child or daemon still uses (and the old release's --force, and the old orphaned-.lock race)",
        ),
        (FencedCleanAllLayouts | FencedSharedLayout, P::LiveEnvIntact) => fails(
            &[
                "tool-run,clean-force@uv-0.13",
                "run@uv-0.13,clean",
                "run@uv-0.8.20,clean",
                "run-script@uv-0.13,prune",
                "tool-run@uv-0.13,clean-force",
                "run+crash@uv-0.8.20,clean",
                "run-server@uv-0.13,run-script@uv-0.13,clean",
                "run-server,run@uv-0.13,clean",
                "run-server,tool-run@uv-0.8.20,prune",
                MIXED_ORPHANED_LOCK,
            ],
            "a clean that finds .lock busy deletes an environment in uv's layout while the old run that holds .lock for it uses it (and --force, and the old orphaned-.lock race)",
        ),
        (
            CachelockFenced
            | FencedForceUnlocked
            | FencedCloexec
            | FencedCleanAllLayouts
            | FencedSharedLayout,
            P::RootLockExclusion,
        )
        | (FencedCleanAllLayouts | FencedSharedLayout, P::MutualExclusion) => Expected {
            failing: Scenarios::AllMixedBut(&[
                "run,clean@uv-0.13",
                "run,clean@uv-0.8.20",
                "run-script,prune@uv-0.13",
                "run-server,clean+timeout@uv-0.13",
                "run-daemon,clean@uv-0.13",
                "run+crash,clean@uv-0.13",
                "run-no-cache,clean@uv-0.8.20",
            ]),
            reason: "a clean that finds .lock busy goes on beside its holders (only the variants that then delete uv's layout break the sharpened mutual-exclusion); and --force, and the old orphaned-.lock race",
        },
        (FencedCleanWaits | FencedCleanGivesUp, P::RootLockExclusion) => fails(
            MIXED_FORCE_OR_ORPHANED,
            "clean --force deletes without .lock by definition (both releases'); and the old orphaned-.lock race",
        ),
        (FencedCleanWaits, P::NoDeadlock) => fails(
            &["run-nested-clean,clean@uv-0.13"],
            "the nested clean waits for the .lock its own parent holds until the child exits",
        ),
        (_, P::NoDeadlock) => holds(
            "no clean of the checked policy waits for .lock; old cleans wait only for runs that end",
        ),
        (FencedCleanWaits, P::CleanTerminates | P::CleanSucceeds) => fails(
            &[
                "run-server@uv-0.13,run-script@uv-0.13,clean",
                "run-server,clean,clean@uv-0.13",
                "run-server,run@uv-0.13,clean",
                "run-server,tool-run@uv-0.8.20,prune",
                "run-nested-clean,clean@uv-0.13",
            ],
            "its clean waits for .lock, which a server (old or new) or its own parent holds for ever",
        ),
        (FencedCleanGivesUp, P::CleanSucceeds) => fails(
            &[
                "run@uv-0.13,clean",
                "run@uv-0.8.20,clean",
                "run-script@uv-0.13,prune",
                "run+crash@uv-0.8.20,clean",
                "run-server@uv-0.13,run-script@uv-0.13,clean",
                "run-server,clean,clean@uv-0.13",
                "run-server,run@uv-0.13,clean",
                "run-server,tool-run@uv-0.8.20,prune",
                "run-nested-clean,clean@uv-0.13",
            ],
            "its clean gives up, nothing deleted, whenever a run (old or new) holds .lock",
        ),
        (_, P::CleanTerminates | P::CleanSucceeds) => holds(
            "its clean never waits for .lock: it cleans everything unprotected if it gets .lock at once, else its own layout's unlocked environments; old cleans are not judged (their waits are the upgrade's cost, tabled below)",
        ),
        (CachelockFenced | FencedCloexec, P::CleanRemovesUnused) => {
            fails(MIXED_OLD_LAYOUT_LEFT_OR_FORCED, MIXED_OLD_LAYOUT_REASON)
        }
        (FencedForceUnlocked, P::CleanRemovesUnused) => {
            fails(MIXED_OLD_LAYOUT_LEFT, MIXED_OLD_LAYOUT_REASON)
        }
        (FencedCleanGivesUp, P::CleanRemovesUnused) => fails(
            &[
                "tool-run@uv-0.13,clean-force",
                "run-server@uv-0.13,run-script@uv-0.13,clean",
                "run-server,run@uv-0.13,clean",
                "run-server,tool-run@uv-0.8.20,prune",
            ],
            "its clean gives up while a server holds .lock and leaves a finished old run's environment; its clean --force leaves uv's layout as the default's does",
        ),
        (FencedCleanWaits, P::CleanRemovesUnused) => fails(
            &["tool-run@uv-0.13,clean-force"],
            "its clean waits and then deletes every unlocked environment of both layouts, but its clean --force, which never waits, leaves uv's layout beside an old run as the default's does",
        ),
        (FencedCleanAllLayouts | FencedSharedLayout, P::CleanRemovesUnused) => {
            holds("its clean deletes every unlocked environment of both layouts once it goes on")
        }
        (
            CachelockFenced | FencedForceUnlocked | FencedCleanAllLayouts | FencedSharedLayout,
            P::CleanOverlapsChild,
        ) => fails(
            MIXED_ONLY_OLD_CLEANS,
            "the only cleans are old ones, which wait for the .lock every run holds while its child lives",
        ),
        (FencedCloexec, P::CleanOverlapsChild) => fails(
            &[
                "run,clean@uv-0.13",
                "run,clean@uv-0.8.20",
                "run-script,prune@uv-0.13",
                "run-server,clean+timeout@uv-0.13",
            ],
            "the only cleans are old ones; only after a kill or beside a daemon, whose child no longer holds .lock, does one get it while a child runs",
        ),
        (FencedCleanWaits | FencedCleanGivesUp, P::CleanOverlapsChild) => Expected {
            failing: Scenarios::AllMixedBut(&[
                "tool-run,clean-force@uv-0.13",
                "tool-run@uv-0.13,clean-force",
                "run-no-cache,clean@uv-0.8.20",
                "run+crash@uv-0.8.20,clean",
                MIXED_ORPHANED_LOCK,
            ]),
            reason: "every run holds .lock while its child lives and no clean goes on without it but --force (or once an old run is killed: its orphaned child holds nothing; or once the run holds an orphaned .lock inode)",
        },
        (
            Uv0819
            | Uv0820
            | Uv013
            | UvPr15977
            | UvAutoprune
            | Serial
            | CachelockLateEnvLock
            | CachelockUnlock
            | CachelockCloexec
            | CachelockNoAnnounce
            | CachelockKeepTemp
            | CachelockPruneAnyTemp
            | FencedTrashAfterRelease,
            _,
        ) => holds("not checked beside old uv"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_name_only_ci_scenarios_and_give_reasons() {
        for policy in Policy::ALL {
            for property in crate::properties::ALL {
                let e = expected(policy, property);
                assert!(!e.reason.is_empty(), "{policy} {property}");
                for s in e.named() {
                    assert!(
                        CI_SCENARIOS.contains(s),
                        "{policy} {property}: {s} is not a CI scenario"
                    );
                }
            }
        }
    }

    #[test]
    fn mixed_declarations_name_only_mixed_scenarios_and_give_reasons() {
        for policy in Policy::BESIDE_OLD_UV {
            for property in crate::properties::ALL {
                let e = expected_mixed(policy, property);
                assert!(!e.reason.is_empty(), "{policy} {property}");
                for s in e.named() {
                    assert!(
                        MIXED_SCENARIOS.contains(s),
                        "{policy} {property}: {s} is not a mixed scenario"
                    );
                }
            }
        }
    }

    #[test]
    fn every_property_is_broken_by_some_policy() {
        for property in crate::properties::ALL {
            assert!(
                Policy::ALL
                    .iter()
                    .any(|p| !expected(*p, property).failing().is_empty()),
                "{property}: no policy is declared to break it, so checking it proves nothing"
            );
        }
    }
}
