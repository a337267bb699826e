//! What a session holds, and the order in which it lets go.
//!
//! [`Held`]'s field order is its drop order, and that order is the protocol for a
//! session that ends early (an error, a panic, a forwarded signal):
//! 1. the child is waited for, so that nothing it uses goes away under it;
//! 2. the unpersisted build is removed, and the run's overlay (uv policies), only now
//!    that the child is gone;
//! 3. the environment lock is closed (never unlocked: a copy the child inherited keeps
//!    protecting the environment);
//! 4. the root lock is released;
//! 5. the temporary cache goes, with the build, the environment and the lock files it
//!    holds, only now that nothing in it is locked or used;
//! 6. the temporary cache's own lock is released only once the directory is gone: a
//!    prune removing leaked temporary caches takes only unlocked ones, so it can never
//!    race the run's own removal;
//! 7. a clean's announcement is withdrawn last, so that the runs waiting for the clean
//!    start only once it holds nothing else.
//!
//! `Held` is generic over the [`Platform`] that provides the guard types, so that the
//! loom tests (`conformance/tests/loom_guards.rs`) run this very struct with simulated
//! guards; the session uses [`Os`], the real ones.

use std::fmt::Debug;

use crate::announce::Announcement;
use crate::child::ChildGuard;
use crate::lockfile::LockFile;
use crate::safe_fs::OwnedTree;

/// The guard types a session holds.
pub trait Platform {
    /// A running child; dropping it waits for the child to exit.
    type Child: Debug;
    /// A directory removed on drop (through descriptors, see `safe_fs`).
    type Dir: Debug;
    /// A lock descriptor; dropping it closes the descriptor.
    type Lock: Debug;
    /// A clean's announcement; dropping it withdraws it.
    type Announcement: Debug;
}

/// The real guards: child processes, directories, flock(2) descriptors.
#[derive(Debug)]
pub struct Os;

impl Platform for Os {
    type Child = ChildGuard;
    type Dir = OwnedTree;
    type Lock = LockFile;
    type Announcement = Announcement;
}

/// Everything a session holds; see the module documentation for why the fields are in
/// this order.
#[derive(Debug)]
pub struct Held<P: Platform = Os> {
    /// The child (its guard waits for it on drop).
    pub child: Option<P::Child>,
    /// An environment being built under `builds/<env>.build-X`; removed unless persisted.
    pub build: Option<P::Dir>,
    /// The run's overlay environment (`builds/<env>.overlay-X`, uv's `run --with`).
    pub overlay: Option<P::Dir>,
    /// The environment lock.
    pub env_lock: Option<P::Lock>,
    /// The root lock.
    pub root_lock: Option<P::Lock>,
    /// The temporary cache of `--no-cache`.
    pub temp_cache: Option<P::Dir>,
    /// The temporary cache's `.lock`, held shared while the cache is in use.
    pub temp_lock: Option<P::Lock>,
    /// A clean's announcement.
    pub announcement: Option<P::Announcement>,
}

impl<P: Platform> Default for Held<P> {
    fn default() -> Self {
        Held {
            child: None,
            build: None,
            overlay: None,
            env_lock: None,
            root_lock: None,
            temp_cache: None,
            temp_lock: None,
            announcement: None,
        }
    }
}
