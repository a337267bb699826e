//! The `cachelock` command: runs, cleans and inspects a cache under the cache-lock
//! protocol (ours by default, or one of uv's releases with `--policy`).

mod check_cmd;
mod explorer;
mod messages;
mod printer;
mod replay_cmd;
mod status;
mod trace_cmd;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cachelock::cache::CacheDir;
use cachelock::settings::{CacheOwner, ResolvedCache, resolve_cache_dir};
use cachelock::{Kind, Mode, Policy, Session, SessionConfig};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

// The unwinder linked statically (libgcc_eh, what gcc's `-static-libgcc` links), so that
// the command does not load libgcc_s.so.1 at start: loading it and its constructor's CPU
// probing (cpuid, a trap to the hypervisor on a virtual machine) cost about 0.15 ms of CPU
// per start, against about 1.2 ms for all of `cachelock hold --shared -- true` (timed beside
// flock(1) in impl/benches/protocol.rs). `--as-needed` drops the library: nothing else uses it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[link(name = "gcc_eh", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}

/// Share a package cache between processes safely: uv's cache-lock protocol, and ours.
#[derive(Debug, Parser)]
#[command(name = "cachelock", version, max_term_width = 100, after_help = CACHE_AND_TIMEOUT_HELP)]
struct Cli {
    /// Show each protocol step as it happens (with the model's step names).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

// `defer`: a subcommand's arguments are built only when it is the one invoked, so that
// `cachelock hold` (timed beside flock(1)) does not build the checker's. The argument
// structs carry no doc comment: a deferred one would replace the variant's text below.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Run a command in an environment of the cache (like `uv run --with`).
    #[command(after_help = CACHE_AND_TIMEOUT_HELP)]
    ///
    /// The environment `<cache>/environments/<NAME>` is built once and reused; the child
    /// finds it in CACHELOCK_ENV. Under the default policy the environment's own lock
    /// (inherited by the child, descriptor number in CACHELOCK_ENV_LOCK_FD) keeps it from
    /// being cleaned while the child, or anything it started, runs; the cache lock is held
    /// shared until the child exits and inherited too (CACHELOCK_ROOT_LOCK_FD), because
    /// uv's own cleans respect nothing else.
    /// The child's exit code is passed through (128+n for signal n); SIGINT, SIGTERM and
    /// SIGHUP are forwarded to it.
    Run(RunArgs),
    /// Run a tool in its cached environment (like `uvx NAME`).
    #[command(after_help = CACHE_AND_TIMEOUT_HELP)]
    ToolRun(ToolRunArgs),
    /// Delete the cache's contents (like `uv cache clean`).
    ///
    /// Under uv's policies: waits while the cache is in use (up to CACHELOCK_LOCK_TIMEOUT,
    /// else UV_LOCK_TIMEOUT, else 300 s; then exits 2), or with --force goes on without the
    /// lock and deletes everything. Under the default policy a clean never waits: if the
    /// cache lock is free it cleans everything but environments in use (kept and
    /// reported), and if it is busy it deletes only cachelock's environments not in use;
    /// --force changes nothing there (it never deletes what only the cache lock protects,
    /// such as the environment of a running uv). `.lock` is kept (the uv-0.8.19 and
    /// uv-0.8.20 policies unlink it and remove the root, as those releases did).
    #[command(after_help = CACHE_AND_TIMEOUT_HELP)]
    Clean(CleanArgs),
    /// Delete environments and builds, keep the scaffold (like `uv cache prune`).
    ///
    /// Only cachelock's layout is pruned: what else is at the top of the cache (a uv
    /// cache's `archive-v0`, `wheels-v5`, …) is left alone and listed.
    #[command(after_help = CACHE_AND_TIMEOUT_HELP)]
    Prune(PruneArgs),
    /// Show who holds or waits for the cache's locks, and why a clean hangs.
    ///
    /// Acts on uv's cache unless told otherwise, and answers "why is `uv cache clean`
    /// hanging?": each holder with the processes that keep it holding (a `uv run`'s
    /// `python3` child), each waiter with the holders it waits for, and one line on what
    /// to stop. Also the cache's size (files and links counted as `clean` counts them) and
    /// free space. Reads /proc; never takes a lock. `-v` adds the /proc/locks entries read.
    #[command(after_help = CACHE_AND_TIMEOUT_HELP)]
    Status(StatusArgs),
    /// Hold the cache lock while a command runs (like flock(1), on uv's cache by default).
    ///
    /// `--shared` keeps every clean out (uv's included) while, say, the cache is archived;
    /// `--exclusive` keeps every user out. The lock is released after the command exits,
    /// whose exit code is passed through; a lock that cannot be had exits 2 (or the
    /// --conflict-exit-code).
    #[command(after_help = CACHE_AND_TIMEOUT_HELP)]
    Hold(HoldArgs),
    /// Check the protocol model: every policy against every scenario.
    Check(check_cmd::CheckArgs),
    /// Explore one scenario of the model in a web browser.
    Explore(check_cmd::ExploreArgs),
    /// Run a command under the gate, print its protocol steps and check them on the model.
    ///
    /// The command (a `uv run`, `uv cache clean`, `cachelock run`, a script starting
    /// several of them) and every process it starts run under ptrace; each protocol step is
    /// printed as it happens, and the recorded interleaving is checked against the model of
    /// --policy (without it, of every policy). Linux only.
    Trace(trace_cmd::TraceArgs),
    /// Replay the model's counterexamples with real processes (uv, or cachelock).
    ///
    /// For --policy on --scenario: prints each of the model's shortest counterexamples and
    /// plays the scenario with real processes under the gate, forced through those
    /// interleavings, printing what really happened beside them. Linux only.
    Replay(replay_cmd::ReplayArgs),
}

/// The cache and timeout rules, shown by every `--help`.
const CACHE_AND_TIMEOUT_HELP: &str = "\
Which cache: --cache-dir, else CACHELOCK_CACHE_DIR; else `status`, `hold` and the uv-* policies \
use uv's cache as uv finds it (UV_CACHE_DIR, else $XDG_CACHE_HOME/uv, else ~/.cache/uv), and \
cachelock's own policies use cachelock's cache ($XDG_CACHE_HOME/cachelock, else \
~/.cache/cachelock). A command that waits or deletes says which cache it acts on and why.
Lock waits: at most CACHELOCK_LOCK_TIMEOUT seconds, else UV_LOCK_TIMEOUT (uv's own variable is \
honoured), else 300 s (uv's default); then the command exits 2.";

#[derive(Debug, Args)]
struct CacheArgs {
    /// The cache directory [default: uv's cache for `status`, `hold` and `uv-*` policies
    /// (UV_CACHE_DIR, $XDG_CACHE_HOME/uv, ~/.cache/uv); cachelock's own otherwise
    /// ($XDG_CACHE_HOME/cachelock, ~/.cache/cachelock)]. CACHELOCK_CACHE_DIR counts as
    /// --cache-dir.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    fn resolve(&self, owner: CacheOwner) -> anyhow::Result<ResolvedCache> {
        Ok(resolve_cache_dir(self.cache_dir.as_deref(), owner)?)
    }
}

/// Whose cache a command under `policy` uses by default.
fn owner_of(policy: Policy) -> CacheOwner {
    if policy.name().starts_with("uv-") {
        CacheOwner::Uv
    } else {
        CacheOwner::Cachelock
    }
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// The protocol to follow: `cachelock-fenced` (ours, safe beside every uv release
    /// sharing the cache), `cachelock` (ours, unsafe beside old uv), or a uv release's
    /// behaviour, bugs included (`uv-0.8.19`, `uv-0.8.20`, `uv-0.13`, `uv-pr15977`), or a variant built to
    /// break one property.
    #[arg(
        long,
        default_value = "cachelock-fenced",
        value_parser = PossibleValuesParser::new(Policy::ALL.map(Policy::name)).try_map(|s| Policy::parse(&s)),
    )]
    policy: Policy,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Use a private temporary cache, removed after the child exits; the cache
    /// directory is not touched.
    #[arg(long)]
    no_cache: bool,
    /// The environment's name [default: `with`].
    #[arg(long, value_name = "NAME", conflicts_with = "script")]
    env: Option<String>,
    /// Run a script in its own environment (named after the script); without a command,
    /// the script itself is executed.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct ToolRunArgs {
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The tool; its environment is `tool-NAME`.
    name: String,
    /// The command and its arguments, after `--` [default: the tool's name].
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct CleanArgs {
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Do not wait when the cache is in use. Under uv's policies: go on without the lock
    /// and delete everything. Under the default: delete what a clean that finds the cache
    /// in use deletes (cachelock's environments not in use), as without --force.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct PruneArgs {
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the report as JSON (one object per lock, like `lslocks -J`).
    #[arg(long)]
    json: bool,
    #[arg(skip)]
    verbose: bool,
}

#[derive(Debug, Args)]
#[group(id = "mode", required = true, multiple = false)]
struct HoldArgs {
    #[command(flatten)]
    cache: CacheArgs,
    /// Hold the lock shared, as a run does: cleans wait.
    #[arg(long, group = "mode")]
    shared: bool,
    /// Hold the lock exclusive, as a clean does: everybody waits.
    #[arg(long, group = "mode")]
    exclusive: bool,
    /// Do not wait for the lock: if it is busy, exit with the conflict exit code at once.
    #[arg(short = 'n', long, conflicts_with = "timeout")]
    nonblock: bool,
    /// Wait at most this many seconds for the lock [default: CACHELOCK_LOCK_TIMEOUT, else
    /// UV_LOCK_TIMEOUT, else 300].
    #[arg(short = 'w', long, value_name = "SECONDS")]
    timeout: Option<String>,
    /// The exit code when the lock cannot be had (busy with --nonblock, or timed out), so
    /// that it is told apart from the command's own [default: 2].
    #[arg(short = 'E', long, value_name = "CODE", default_value_t = 2)]
    conflict_exit_code: u8,
    /// The command to run while holding the lock, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let doing = messages::Doing {
        clean: matches!(&cli.command, Command::Clean(_) | Command::Prune(_)),
    };
    let result = match cli.command {
        Command::Check(mut args) => {
            args.verbose |= cli.verbose;
            return check_cmd::check(args);
        }
        Command::Explore(args) => return check_cmd::explore(args),
        Command::Replay(args) => return replay_cmd::replay(args),
        Command::Trace(args) => {
            let owner = args.policy.map_or(CacheOwner::Uv, owner_of);
            return trace_cmd::trace(args, owner);
        }
        Command::Run(args) => run(args),
        Command::ToolRun(args) => tool_run(args),
        Command::Clean(args) => {
            let kind = if args.force {
                Kind::CleanForce
            } else {
                Kind::Clean
            };
            clean(&args.cache, args.policy.policy, kind)
        }
        // Which leaked temporary caches a prune removes is the policy's design
        // (`Design::prune_temp`, step `remove-leaked-temp`), checked by the model.
        Command::Prune(args) => clean(&args.cache, args.policy.policy, Kind::Prune),
        Command::Status(mut args) => {
            args.verbose |= cli.verbose;
            status(&args)
        }
        Command::Hold(args) => hold(args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {}", messages::error_message(&e, doing));
            ExitCode::from(2)
        }
    }
}

/// Messages on stderr: warnings, and with `-v` each protocol step; `RUST_LOG` takes
/// `target=level` directives (`cachelock=trace`). `Targets` rather than `EnvFilter`, whose
/// span and field matching would link a regex engine: its tables cost the loader thousands
/// of relocations at every start.
fn init_tracing(verbose: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = if verbose {
        Targets::new().with_target("cachelock", LevelFilter::DEBUG)
    } else {
        let warn = || Targets::new().with_default(LevelFilter::WARN);
        match std::env::var("RUST_LOG") {
            Ok(directives) => directives.parse().unwrap_or_else(|e| {
                eprintln!(
                    "warning: RUST_LOG={directives:?} is not a list of `target=level` \
                     directives ({e}); showing warnings only"
                );
                warn()
            }),
            Err(_) => warn(),
        }
    };
    let messages = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time();
    tracing_subscriber::registry()
        .with(filter)
        .with(messages)
        .init();
}

fn session(
    cache: CacheDir,
    resolved: Option<ResolvedCache>,
    policy: Policy,
    kind: Kind,
) -> anyhow::Result<SessionConfig> {
    let mut config = SessionConfig::new(cache, policy, kind);
    config.lock_timeout = Some(cachelock::settings::lock_timeout_from_env()?);
    config.observer = std::sync::Arc::new(printer::Printer::new(resolved).clean(kind.is_clean()));
    config.forward_signals = true;
    Ok(config)
}

fn run(args: RunArgs) -> anyhow::Result<i32> {
    let policy = args.policy.policy;
    let (kind, resolved) = if args.no_cache {
        (Kind::RunNoCache, None)
    } else if args.script.is_some() {
        (Kind::RunScript, Some(args.cache.resolve(owner_of(policy))?))
    } else {
        (Kind::Run, Some(args.cache.resolve(owner_of(policy))?))
    };
    let cache = resolved.as_ref().map_or(CacheDir::Temporary, |r| {
        CacheDir::Persistent(r.root.clone())
    });
    let mut config = session(cache, resolved, policy, kind)?;
    let mut command = args.command;
    if let Some(script) = &args.script {
        // Checked before anything is created: a missing script leaves no environment.
        if !script.is_file() {
            anyhow::bail!(
                "the script `{}` does not exist (or is not a file); check the path",
                script.display()
            );
        }
        config.env_name = script_env_name(script)?;
        if command.is_empty() {
            // By its absolute path: `myscript.sh` is a file here, not a command on PATH.
            let abs = std::path::absolute(script).with_context(|| {
                format!("could not resolve the script path `{}`", script.display())
            })?;
            command.push(abs.into_os_string());
        }
    } else if let Some(env) = args.env {
        config.env_name = env;
    }
    if command.is_empty() {
        anyhow::bail!("no command given; put it after `--`: cachelock run -- CMD ARGS…");
    }
    config.command = command;
    Ok(Session::new(config)?.run_to_completion()?)
}

fn tool_run(args: ToolRunArgs) -> anyhow::Result<i32> {
    let resolved = args.cache.resolve(owner_of(args.policy.policy))?;
    let cache = CacheDir::Persistent(resolved.root.clone());
    let mut config = session(cache, Some(resolved), args.policy.policy, Kind::ToolRun)?;
    config.env_name = format!("tool-{}", args.name);
    config.command = if args.command.is_empty() {
        vec![OsString::from(&args.name)]
    } else {
        args.command
    };
    Ok(Session::new(config)?.run_to_completion()?)
}

fn clean(cache: &CacheArgs, policy: Policy, kind: Kind) -> anyhow::Result<i32> {
    let resolved = cache.resolve(owner_of(policy))?;
    let config = session(
        CacheDir::Persistent(resolved.root.clone()),
        Some(resolved),
        policy,
        kind,
    )?;
    Ok(Session::new(config)?.run_to_completion()?)
}

fn status(args: &StatusArgs) -> anyhow::Result<i32> {
    let resolved = args.cache.resolve(CacheOwner::Uv)?;
    let st = status::status(&resolved.root, resolved.source)?;
    let mut text = if args.json {
        format!("{:#}\n", st.to_json())
    } else {
        st.to_string()
    };
    if args.verbose {
        text.push_str(&st.verbose());
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    // A report, whatever it found (a path that is not a directory says so): exit 0.
    Ok(0)
}

fn hold(args: HoldArgs) -> anyhow::Result<i32> {
    let mode = if args.exclusive {
        Mode::Exclusive
    } else {
        Mode::Shared
    };
    let timeout = if args.nonblock {
        std::time::Duration::ZERO
    } else if let Some(secs) = &args.timeout {
        cachelock::settings::parse_timeout("--timeout", secs)?
    } else {
        cachelock::settings::lock_timeout_from_env()?
    };
    let resolved = args.cache.resolve(CacheOwner::Uv)?;
    let root = resolved.root.clone();
    match cachelock::hold::hold(
        &root,
        mode,
        &args.command,
        Some(timeout),
        &printer::Printer::new(Some(resolved)),
    ) {
        Ok(code) => Ok(code),
        Err(e @ cachelock::Error::LockTimeout { .. }) => {
            eprintln!("error: {}", messages::hold_conflict(&e, args.nonblock));
            Ok(i32::from(args.conflict_exit_code))
        }
        Err(e) => Err(e.into()),
    }
}

/// `<stem>-<hash of the absolute path>`, so that two scripts with one name do not share.
fn script_env_name(script: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(script)
        .with_context(|| format!("could not resolve the script path `{}`", script.display()))?;
    let stem: String = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across runs and Rust versions, unlike the std hasher.
    let hash = abs
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    Ok(format!("script-{stem}-{:08x}", hash as u32))
}
