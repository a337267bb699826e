//! The gate: real process trees (uv, or `cachelock`) run under ptrace with a seccomp
//! filter that stops them only at the system calls that are cache-lock protocol steps.
//!
//! - [`Gate`] starts commands, names each stop in the model's vocabulary
//!   ([`cachelock_model::protocol::Step`], mapped by [`vocab`]), and holds or releases it
//!   as the harness says: an interleaving is *forced*, not hoped for.
//! - [`trace()`] runs a command with nothing held and reports each process's steps as
//!   they happen (the `cl-trace` binary; the `cachelock trace` command).
//!
//! - [`check::check`] replays a recorded interleaving on the model of a policy and
//!   reports the first step the model does not allow.
//!
//! Linux only (ptrace, seccomp, `/proc`); where ptrace is forbidden every entry point
//! fails with [`Error::Unavailable`], saying so. What ptrace does not tell (what a
//! descriptor names, a thread's process, whether it sleeps in the flock wait) is read
//! from `/proc` through the workspace's one reader, `cachelock-inspect`.

pub mod check;
pub mod filter;
mod gate;
pub mod kinds;
pub mod realuv;
pub mod trace;
pub mod vocab;

pub use gate::{
    Error, Event, EventId, Exit, Gate, Hold, Moment, Process, Record, Settled, Spawned,
};
pub use trace::{Outcome, TraceReport, Verdict, trace, trace_and_check};
pub use vocab::{LockOp, Syscall};
