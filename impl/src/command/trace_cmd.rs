//! `cachelock trace`: runs any command under the gate (`cachelock-gate`) with nothing
//! held back, prints each process's protocol steps as they happen, and checks the
//! recorded interleaving against the model. The tracing and the check are the gate's
//! ([`cachelock_gate::trace_and_check`]); this file only reads the command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use cachelock::Policy;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use cachelock::settings::{CacheOwner, resolve_cache_dir};

/// What `cachelock trace --help` says after the options.
pub const TRACE_HELP: &str = "\
What it stops at: the system calls that are cache-lock protocol steps, for the command and \
every thread and process it starts (ptrace with a seccomp filter; other calls run at full \
speed): opening, locking (flock) and unlinking the cache's `.lock`, creating the scaffold \
(CACHEDIR.TAG), making a build directory and persisting an environment, deleting entries, \
a clean's renames into its trash and the deletion of the trash, removing the root, creating and dropping a temporary cache (`--no-cache`), locking an \
environment's lock, a clean's announcement, the exec of a child, and each process's exit. \
Nothing is held back: every stop is printed (`PID STEP PATH`, with the model's step names) \
and let go at once.
What it checks: each process is classified as one of the model's kinds from what was seen: its \
arguments at exec (`uv run` is run, `uv run --script` run-script, `uv tool run`/`uvx` tool-run, \
`--no-cache` run-no-cache, `uv cache clean` clean, `clean --force` clean-force, `uv cache prune` \
prune; `cachelock run|tool-run|clean|prune` likewise), and for any other program that used the \
cache's `.lock` its steps (locked it exclusive: a clean; else a run); one killed by a signal (its \
wait status) is `+crash`, and its death is the model's kill. A run's child is the process it \
started that runs its command (not uv's helpers). The recorded interleaving of at most 16 such \
processes is replayed on the model of --policy: is it a behaviour of that policy? Without \
--policy it is replayed on every policy's model and the policies that admit it are named. A \
server or a daemon is checked as a plain run.
Exit codes: the command's own (128+n if it was killed by signal n); 1 if the interleaving is \
not a behaviour of the policy (without --policy: of any policy), after a line naming the \
first step the model does not allow (`check: not a behaviour of P (...): run#1 (pid N) did \
STEP; the model allows STEP2 next`); 2 on bad input, or when the command cannot be traced \
(ptrace forbidden here: the message says why).";

// Arguments of `cachelock trace` (a plain comment: see `defer` on the command enum).
#[derive(Debug, clap::Args)]
#[command(after_help = TRACE_HELP)]
pub struct TraceArgs {
    /// The cache directory the steps are named against [default: as for the other
    /// commands: uv's cache without --policy or with a uv-* policy (UV_CACHE_DIR,
    /// $XDG_CACHE_HOME/uv, ~/.cache/uv), cachelock's own otherwise]. CACHELOCK_CACHE_DIR
    /// counts as --cache-dir.
    #[arg(long, visible_alias = "cache", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The policy whose model the interleaving is checked against [default: every
    /// policy; the ones that admit it are named].
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(Policy::ALL.map(Policy::name)).try_map(|s| Policy::parse(&s)),
    )]
    pub policy: Option<Policy>,
    /// The command to trace and its arguments, after `--` (a `uv run`, a `cachelock
    /// clean`, a shell script starting several of them, …).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs `cachelock trace`. The steps are named against the cache directory resolved as
/// for the other commands, `owner`'s by default (uv's without --policy or with a uv
/// policy).
pub fn trace(args: TraceArgs, owner: CacheOwner) -> ExitCode {
    let resolved = match resolve_cache_dir(args.cache_dir.as_deref(), owner) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("error: no command given; put it after `--`: cachelock trace -- CMD ARGS…");
        return ExitCode::from(2);
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    match cachelock_gate::trace_and_check(
        cmd,
        &resolved.root,
        args.policy,
        Box::new(std::io::stdout()),
    ) {
        Ok(outcome) => {
            print!("{}", outcome.verdict);
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
