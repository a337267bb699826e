//! Loom: the session's guards, in every interleaving of a few threads.
//!
//! The struct under test is the real `cachelock::guards::Held`, whose field order is
//! the protocol's release order; only its guard types are swapped for simulated ones
//! (`Sim`, a `Platform` like the real `Os`), because loom cannot see system calls and a
//! blocking flock inside `loom::model` would hang. The simulated world keeps the
//! lock table (shared/exclusive holders, with flock's rules: a descriptor closed by one
//! holder stays locked while an inherited copy is open), which environments and
//! temporary caches exist, and which children run. Every child checks its environment
//! while it runs; a violation is recorded and asserted on at the end.
//!
//! Each test is one race, named for what it rules out. `LOOM_MAX_PREEMPTIONS` defaults
//! to 3 here (CI); raise it for a deeper run.

// The guards are taken one step at a time, as the session takes them.
#![allow(clippy::field_reassign_with_default)]

use std::fmt;

use cachelock::guards::{Held, Platform};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// The simulated cache and lock table.
#[derive(Default, Debug)]
struct World {
    /// Shared holders of the root lock, and whether one holds it exclusive.
    root_shared: usize,
    root_exclusive: bool,
    /// Open descriptors on the environment lock's description (the run's and the
    /// child's inherited copy); it is locked while any is open.
    env_lock_refs: usize,
    env_present: bool,
    temp_present: bool,
    child_running: bool,
    /// A clean's announcement is published (runs that saw it wait for its withdrawal).
    announced: bool,
    /// What was released, in order.
    events: Vec<&'static str>,
    violations: Vec<String>,
}

type Shared = Arc<(Mutex<World>, Condvar)>;

fn world() -> Shared {
    Arc::new((
        Mutex::new(World {
            env_present: true,
            temp_present: true,
            ..World::default()
        }),
        Condvar::new(),
    ))
}

fn with<R>(w: &Shared, f: impl FnOnce(&mut World) -> R) -> R {
    let r = f(&mut w.0.lock().unwrap());
    w.1.notify_all();
    r
}

/// The simulated guards.
struct Sim;

/// A root-lock descriptor holding a shared or exclusive lock; dropping it closes it.
struct SimRootLock {
    w: Shared,
    exclusive: bool,
}

/// A descriptor on the environment lock; dropping it closes it (the lock stays while
/// another copy is open).
struct SimEnvLock {
    w: Shared,
}

/// Any lock: `Held` has one lock type for its three lock slots.
enum SimLock {
    Root(SimRootLock),
    Env(SimEnvLock),
    /// The temporary cache's own `.lock`, held shared while the cache is in use.
    Temp(Shared),
}

/// A directory removed on drop: the temporary cache (and the environment inside), or a
/// build or an overlay (`what` names the event its removal records).
struct SimDir {
    w: Shared,
    what: &'static str,
}

impl SimDir {
    fn temp(w: &Shared) -> SimDir {
        SimDir {
            w: w.clone(),
            what: "temp-cache-removed",
        }
    }
}

/// A running child; dropping the guard waits for it.
struct SimChild {
    handle: Option<thread::JoinHandle<()>>,
}

/// A clean's announcement; dropping it withdraws it (and wakes the runs waiting on it).
struct SimAnnouncement {
    w: Shared,
}

impl SimAnnouncement {
    fn publish(w: &Shared) -> SimAnnouncement {
        with(w, |w| w.announced = true);
        SimAnnouncement { w: w.clone() }
    }
}

impl Drop for SimAnnouncement {
    fn drop(&mut self) {
        with(&self.w, |w| {
            w.announced = false;
            w.events.push("announcement-withdrawn");
        });
    }
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimLock")
    }
}
impl fmt::Debug for SimDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimDir")
    }
}
impl fmt::Debug for SimChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimChild")
    }
}
impl fmt::Debug for SimAnnouncement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimAnnouncement")
    }
}

impl Platform for Sim {
    type Child = SimChild;
    type Dir = SimDir;
    type Lock = SimLock;
    type Announcement = SimAnnouncement;
}

impl SimRootLock {
    /// Blocks until the lock can be granted (flock: no fairness).
    fn lock(w: &Shared, exclusive: bool) -> SimRootLock {
        let (m, cv) = &**w;
        let mut g = m.lock().unwrap();
        while g.root_exclusive || (exclusive && g.root_shared > 0) {
            g = cv.wait(g).unwrap();
        }
        if exclusive {
            g.root_exclusive = true;
        } else {
            g.root_shared += 1;
        }
        SimRootLock {
            w: w.clone(),
            exclusive,
        }
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        match self {
            SimLock::Root(l) => with(&l.w, |w| {
                if l.exclusive {
                    w.root_exclusive = false;
                } else {
                    w.root_shared -= 1;
                }
                w.events.push("root-lock-released");
            }),
            SimLock::Env(l) => with(&l.w, |w| {
                w.env_lock_refs -= 1;
                w.events.push("env-lock-closed");
            }),
            SimLock::Temp(w) => with(w, |w| {
                if w.temp_present {
                    w.violations.push(
                        "the temporary cache's lock was released while the cache was still there"
                            .into(),
                    );
                }
                w.events.push("temp-lock-released");
            }),
        }
    }
}

impl Drop for SimDir {
    fn drop(&mut self) {
        let what = self.what;
        with(&self.w, |w| {
            if w.child_running {
                w.violations
                    .push(format!("{what}: removed while its child ran"));
            }
            if what == "temp-cache-removed" {
                w.temp_present = false;
            }
            w.events.push(what);
        });
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

/// Spawns a child that uses its environment (the temp cache's, or the cached one) for
/// two looks, then exits. With `inherit`, it holds a copy of the environment lock's
/// descriptor until it exits.
fn spawn_child(w: &Shared, in_temp: bool, inherit: bool) -> SimChild {
    with(w, |w| {
        w.child_running = true;
        if inherit {
            w.env_lock_refs += 1;
        }
    });
    let w = w.clone();
    let handle = thread::spawn(move || {
        for _ in 0..2 {
            with(&w, |w| {
                let there = if in_temp {
                    w.temp_present
                } else {
                    w.env_present
                };
                if !there {
                    w.violations
                        .push("a running child's environment is gone".into());
                }
            });
        }
        with(&w, |w| {
            w.child_running = false;
            if inherit {
                w.env_lock_refs -= 1;
            }
            w.events.push("child-exited");
        });
    });
    SimChild {
        handle: Some(handle),
    }
}

/// A clean: exclusive root lock (waiting), then delete the environment unless its lock
/// is held (cachelock) or regardless (uv), then release.
fn clean(w: &Shared, respect_env_locks: bool) {
    let root = SimLock::Root(SimRootLock::lock(w, true));
    with(w, |w| {
        if !respect_env_locks || w.env_lock_refs == 0 {
            w.env_present = false;
        }
    });
    drop(root);
}

fn check(w: &Shared) {
    let g = w.0.lock().unwrap();
    assert!(
        g.violations.is_empty(),
        "{:?} (events {:?})",
        g.violations,
        g.events
    );
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

#[test]
fn temp_cache_is_not_removed_under_its_child_when_the_run_fails_after_spawning() {
    model(|| {
        let w = world();
        // A --no-cache run that errors right after the spawn: everything it holds is
        // dropped at once, in `Held`'s order.
        let held: Held<Sim> = Held {
            temp_cache: Some(SimDir::temp(&w)),
            child: Some(spawn_child(&w, true, false)),
            ..Held::default()
        };
        drop(held);
        check(&w);
        let g = w.0.lock().unwrap();
        assert_eq!(g.events, ["child-exited", "temp-cache-removed"]);
    });
}

/// A cachelock run in a thread: the root lock shared, the environment lock under it,
/// the environment (re)built, the root lock released, the child spawned (inheriting the
/// environment lock if `inherit`); then the run's guards drop, as on an error path, or
/// with the run `killed` first (its own environment descriptor closes at once).
fn cachelock_run(w: &Shared, inherit: bool, killed: bool) -> thread::JoinHandle<()> {
    let w = w.clone();
    thread::spawn(move || {
        let mut held: Held<Sim> = Held::default();
        held.root_lock = Some(SimLock::Root(SimRootLock::lock(&w, false)));
        with(&w, |w| w.env_lock_refs += 1);
        held.env_lock = Some(SimLock::Env(SimEnvLock { w: w.clone() }));
        // build-env, under the environment lock: (re)build it if a clean that came
        // first deleted it.
        with(&w, |w| w.env_present = true);
        held.root_lock = None;
        held.child = Some(spawn_child(&w, false, inherit));
        if killed {
            held.env_lock = None;
        }
        drop(held);
    })
}

/// A run and a clean in parallel, then the world is checked.
fn run_beside_a_clean(inherit: bool, killed: bool) {
    let w = world();
    let run = cachelock_run(&w, inherit, killed);
    let cleaner = {
        let w = w.clone();
        thread::spawn(move || clean(&w, true))
    };
    run.join().unwrap();
    cleaner.join().unwrap();
    check(&w);
}

#[test]
fn clean_does_not_delete_the_env_of_a_child_whose_run_was_dropped() {
    // cachelock: the child inherits the environment lock, so the run's guards may drop
    // (an error path, or the run killed) while a clean runs.
    model(|| run_beside_a_clean(true, false));
    model(|| run_beside_a_clean(true, true));
}

#[test]
fn two_runs_and_a_clean_never_meet_a_missing_env_under_uv_0_13() {
    // uv 0.13: each run holds the root lock shared until its child exits (its child
    // guard drops before its root lock); the clean deletes everything once it gets the
    // lock exclusive.
    model(|| {
        let w = world();
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || {
                    let mut held: Held<Sim> = Held::default();
                    held.root_lock = Some(SimLock::Root(SimRootLock::lock(&w, false)));
                    // The run's own check that its environment is there, then its child
                    // uses it (in this thread, to stay within loom's thread limit).
                    with(&w, |w| {
                        if !w.env_present {
                            // Rebuilt under the lock, as build-env would.
                            w.env_present = true;
                        }
                        w.child_running = true;
                    });
                    with(&w, |w| {
                        if !w.env_present {
                            w.violations
                                .push("a running child's environment is gone".into());
                        }
                        w.child_running = false;
                    });
                    drop(held);
                })
            })
            .collect();
        let cleaner = {
            let w = w.clone();
            thread::spawn(move || clean(&w, false))
        };
        for r in runs {
            r.join().unwrap();
        }
        cleaner.join().unwrap();
        check(&w);
    });
}

#[test]
fn held_releases_in_the_documented_order() {
    model(|| {
        let w = world();
        let mut held: Held<Sim> = Held::default();
        held.root_lock = Some(SimLock::Root(SimRootLock::lock(&w, false)));
        with(&w, |w| w.env_lock_refs += 1);
        held.env_lock = Some(SimLock::Env(SimEnvLock { w: w.clone() }));
        held.temp_cache = Some(SimDir::temp(&w));
        held.temp_lock = Some(SimLock::Temp(w.clone()));
        held.build = Some(SimDir {
            w: w.clone(),
            what: "build-removed",
        });
        held.overlay = Some(SimDir {
            w: w.clone(),
            what: "overlay-removed",
        });
        held.announcement = Some(SimAnnouncement::publish(&w));
        held.child = Some(spawn_child(&w, true, false));
        drop(held);
        check(&w);
        let g = w.0.lock().unwrap();
        assert_eq!(
            g.events,
            [
                "child-exited",
                "build-removed",
                "overlay-removed",
                "env-lock-closed",
                "root-lock-released",
                "temp-cache-removed",
                "temp-lock-released",
                "announcement-withdrawn"
            ]
        );
    });
}

/// A run that saw a clean's announcement waits for its withdrawal, then goes on: the
/// clean must by then hold nothing else (release step 7). Run in a thread beside the
/// clean's `held`, which is dropped at once, as on the clean's error path.
fn clean_with_a_waiting_run<P: Platform>(held: impl FnOnce(&Shared) -> Held<P>) {
    let w = world();
    let held = held(&w);
    let run = {
        let w = w.clone();
        thread::spawn(move || {
            let (m, cv) = &*w;
            let mut g = m.lock().unwrap();
            while g.announced {
                g = cv.wait(g).unwrap();
            }
            if g.root_exclusive {
                g.violations.push(
                    "a run waiting for the clean went on while the clean still held the cache lock"
                        .into(),
                );
            }
        })
    };
    drop(held);
    run.join().unwrap();
    check(&w);
}

#[test]
fn runs_waiting_for_a_clean_go_on_only_once_it_holds_nothing() {
    model(|| {
        clean_with_a_waiting_run(|w| {
            let mut held: Held<Sim> = Held::default();
            held.root_lock = Some(SimLock::Root(SimRootLock::lock(w, true)));
            held.announcement = Some(SimAnnouncement::publish(w));
            held
        })
    });
}

/// The broken orders go through the real `Held`: a platform that puts a guard in an
/// earlier slot makes `Held`'s own drop glue release it too early.
///
/// The temporary cache in the child's slot: it is removed before the child is waited
/// for (steps 1 and 5 swapped).
struct TempFirst;

impl Platform for TempFirst {
    type Child = SimDir;
    type Dir = SimChild;
    type Lock = SimLock;
    type Announcement = SimAnnouncement;
}

#[test]
#[should_panic(expected = "removed while its child ran")]
fn loom_catches_a_temp_cache_dropped_before_the_child() {
    model(|| {
        let w = world();
        let held: Held<TempFirst> = Held {
            child: Some(SimDir::temp(&w)),
            temp_cache: Some(spawn_child(&w, true, false)),
            ..Held::default()
        };
        drop(held);
        check(&w);
    });
}

/// The announcement in the child's slot: withdrawn before the cache lock is released
/// (step 7 moved first).
struct AnnouncementFirst;

impl Platform for AnnouncementFirst {
    type Child = SimAnnouncement;
    type Dir = SimDir;
    type Lock = SimLock;
    type Announcement = SimAnnouncement;
}

#[test]
#[should_panic(expected = "went on while the clean still held the cache lock")]
fn loom_catches_an_announcement_withdrawn_before_the_cache_lock() {
    model(|| {
        clean_with_a_waiting_run(|w| {
            let mut held: Held<AnnouncementFirst> = Held::default();
            held.root_lock = Some(SimLock::Root(SimRootLock::lock(w, true)));
            held.child = Some(SimAnnouncement::publish(w));
            held
        })
    });
}

/// The temporary cache's lock in the root lock's slot: released while the temporary
/// cache is still there (steps 5 and 6 swapped), which a prune of leaked temporary
/// caches could take for a leak.
#[test]
#[should_panic(expected = "lock was released while the cache was still there")]
fn loom_catches_a_temp_lock_released_before_its_cache() {
    model(|| {
        let w = world();
        let held: Held<Sim> = Held {
            root_lock: Some(SimLock::Temp(w.clone())),
            temp_cache: Some(SimDir::temp(&w)),
            ..Held::default()
        };
        drop(held);
        check(&w);
    });
}

/// The same race as `clean_does_not_delete_the_env_of_a_child_whose_run_was_dropped`,
/// with the environment lock not inherited by the child (`cachelock-cloexec`): loom
/// must find the interleaving in which the clean deletes the environment under it.
#[test]
#[should_panic(expected = "environment is gone")]
fn loom_catches_a_child_that_did_not_inherit_the_env_lock() {
    model(|| run_beside_a_clean(false, true));
}
