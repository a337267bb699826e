//! cachelock: uv's cache-lock protocol (and ours) on real lock files, caches and child
//! processes.
//!
//! The front API ([`api`]): open a [`Cache`], lease an environment ([`Cache::lease`],
//! an [`EnvLease`] to fill, committed into a [`LiveEnv`] that hands its lock to the
//! caller's own `std::process::Command`), clean or prune beside running children
//! ([`Cache::clean`], a [`CleanReport`]), and use a [`TempCache`]. The policy is
//! [`Policy::DEFAULT`] (`cachelock-fenced`) unless chosen otherwise; errors are [`CacheError`]s.
//!
//! The rules, for every policy (`cachelock_model::Policy`):
//! - `<cache>/.lock` is the cache's lock, the same file with the same flock(2) semantics
//!   as uv's: users of the cache lock it shared, cleans exclusive. cachelock and uv on
//!   one cache directory exclude each other.
//! - A process runs its policy's program (`Policy::program`), one `Step` at a time, in a
//!   [`session::Session`]. Steps have the model's names; `--verbose` logs each one.
//! - Locks are never converted and never unlocked on drop (a child may hold an inherited
//!   copy); what a session holds is released in the declared drop order of its guards.
//! - Under the `cachelock` policy a run holds the root lock only while it prepares its
//!   environment, and its child holds `environments/<env>.lock` shared for as long as it
//!   (or anything it started) lives. A clean deletes only environments whose lock it can
//!   take exclusive without waiting, and announces itself so later runs do not overtake it.
//!
//! Modules: [`api`] (the front API), [`session`] (the protocol), [`lockfile`] (one lock
//! descriptor), [`cache`] (layout, scaffold, what a clean deletes), [`safe_fs`] (deletion
//! and renames through directory descriptors, never through links), [`child`] (spawn,
//! signals, exit codes), [`hold`], [`settings`] (environment variables), [`error`].
//! `announce` (a clean's announcement) and `guards` (what a session holds, in its drop
//! order) are internal; `guards` is public only for the loom tests of the conformance
//! crate.
//!
//! The library neither prints nor inspects other processes: lock waits and a clean's
//! results are told to a [`lockfile::Observer`] (or through `tracing`); its errors say
//! what happened. The `cachelock` command (feature `cli`, in `src/command/`) prints them,
//! adds its command-line advice, and asks the `cachelock-inspect` crate who holds a busy
//! lock.

#[doc(hidden)]
pub mod announce;
pub mod api;
pub mod cache;
pub mod child;
pub mod error;
mod faults;
#[doc(hidden)]
pub mod guards;
pub mod hold;
pub mod lockfile;
pub mod safe_fs;
pub mod session;
pub mod settings;

pub use api::{
    Cache, CacheError, CleanOutcome, CleanReport, ENV_DIR_VAR, ENV_LOCK_FD_VAR, EnvLease, KeptEnv,
    LiveEnv, Progress, ROOT_LOCK_FD_VAR, TempCache,
};
pub use cache::CacheDir;
pub use cachelock_model::{Kind, Mode, Policy, Step};
pub use error::Error;
pub use session::{LockView, Session, SessionConfig, SessionView, StepOutcome, Wait};
