//! The stress harness (`cl-stress`): many real `cachelock` processes hammering one cache,
//! and the checking child (`cl-stress check-env`) that notices when its environment
//! disappears.
//!
//! What it promises to measure:
//! - Every operation is a real `cachelock` process (`run`, a long `run`, `run --script`,
//!   `run --no-cache`, `tool-run`, `clean`, `prune`), looped by `--processes` workers for
//!   `--seconds`, against one cache, with a private `TMPDIR`.
//! - Every run's child is `cl-stress check-env`: it checks `$CACHELOCK_ENV/cachelock-env`
//!   at start, every `--interval-ms` while it runs, and at exit, and exits
//!   [`MISSING_EXIT`] naming the missing file if it is ever gone.
//! - *Lock wait* is the time from spawning the `cachelock` process until its child
//!   started (runs; the child reports its start time) or until it exited (clean, prune).
//!   It includes process start-up, so it is an upper bound on the time spent blocked.
//! - Violations, each making the command exit 1: an environment found missing (by a
//!   running child, or by the run at its spawn), a temporary cache left in the private
//!   `TMPDIR` after every process has exited, a process still running past its deadline
//!   (lock timeout + child time + slack; it is killed), any other failed operation, and
//!   a root lock still held after the end.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachelock::cache::{ENV_MARKER, LOCK_FILE};
use cachelock::lockfile::{LockFile, TryLock};
use cachelock_model::{Kind, Mode, Policy};

/// The exit code of `check-env` when its environment's marker is missing.
pub const MISSING_EXIT: u8 = 86;
/// The lock timeout every stress process runs with (CACHELOCK_LOCK_TIMEOUT).
const LOCK_TIMEOUT_SECS: u64 = 20;
/// Added to a process's lock timeout and child time before it counts as stuck.
const STUCK_SLACK: Duration = Duration::from_secs(10);

/// What to hammer, how hard and for how long.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many processes run at the same time (each one loops over operations), 1 to
    /// 256.
    pub processes: u16,
    /// How long to keep starting operations, in seconds.
    pub seconds: f64,
    /// At most this many operations in all (`--operations`), whichever of this and
    /// `seconds` comes first; `None`: no limit but the time. A traced stress run keeps
    /// it small: every process is one of the model's, and the model takes at most 16.
    pub operations: Option<u64>,
    /// The protocol every process follows (`--policy`).
    pub policy: Policy,
    /// The cache to hammer; `None`: a fresh one in a private directory, removed at the
    /// end unless a violation was found.
    pub cache_dir: Option<PathBuf>,
    /// Seed of the operation mix (for reproducing a run); `None`: from the clock.
    pub seed: Option<u64>,
    /// The `cachelock` binary.
    pub cachelock: PathBuf,
    /// The checking child's program, run as `CHECKER check-env --millis N` (the
    /// `cl-stress` binary itself).
    pub checker: PathBuf,
}

impl Config {
    /// 16 processes for 60 s under `policy`, on a fresh cache.
    pub fn new(policy: Policy, cachelock: PathBuf, checker: PathBuf) -> Config {
        Config {
            processes: 16,
            seconds: 60.0,
            operations: None,
            policy,
            cache_dir: None,
            seed: None,
            cachelock,
            checker,
        }
    }
}

/// The checking child (`cl-stress check-env --millis N [--interval-ms M]`): prints
/// `started <unix nanoseconds>`, then checks `$CACHELOCK_ENV/cachelock-env` every
/// `interval_ms` until `millis` have passed; exits [`MISSING_EXIT`] on the first check
/// that finds it missing, 64 if `CACHELOCK_ENV` is not set.
pub fn check_env(millis: u64, interval_ms: u64) -> ExitCode {
    println!("started {}", unix_nanos(SystemTime::now()));
    let _ = std::io::stdout().flush();
    let Some(env) = std::env::var_os("CACHELOCK_ENV") else {
        eprintln!("check-env: CACHELOCK_ENV is not set; run me under `cachelock run`");
        return ExitCode::from(64);
    };
    let marker = PathBuf::from(env).join(ENV_MARKER);
    let start = Instant::now();
    let run_for = Duration::from_millis(millis);
    let mut at = "at start".to_string();
    loop {
        if !marker.is_file() {
            eprintln!(
                "check-env: missing {} ({at}): the environment was deleted under a running child",
                marker.display()
            );
            return ExitCode::from(MISSING_EXIT);
        }
        let elapsed = start.elapsed();
        if at == "at exit" {
            return ExitCode::SUCCESS;
        }
        if elapsed >= run_for {
            at = "at exit".into();
            continue;
        }
        std::thread::sleep(Duration::from_millis(interval_ms.max(1)).min(run_for - elapsed));
        at = format!("after {} ms", start.elapsed().as_millis());
    }
}

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// One kind of operation in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    Run,
    RunLong,
    RunScript,
    RunNoCache,
    ToolRun,
    Clean,
    Prune,
}

impl Op {
    /// The mix: weights out of 100.
    const MIX: [(Op, u64); 7] = [
        (Op::Run, 28),
        (Op::RunLong, 8),
        (Op::RunScript, 14),
        (Op::RunNoCache, 10),
        (Op::ToolRun, 14),
        (Op::Clean, 16),
        (Op::Prune, 10),
    ];

    /// The process kind this operation is.
    fn kind(self) -> Kind {
        match self {
            Op::Run | Op::RunLong => Kind::Run,
            Op::RunScript => Kind::RunScript,
            Op::RunNoCache => Kind::RunNoCache,
            Op::ToolRun => Kind::ToolRun,
            Op::Clean => Kind::Clean,
            Op::Prune => Kind::Prune,
        }
    }

    /// The operation in the report: its kind's token.
    fn name(self) -> String {
        match self {
            Op::RunLong => format!("{} (long child)", self.kind().token()),
            _ => self.kind().token().to_string(),
        }
    }
}

/// What one operation came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The child found its environment missing while it ran.
    MissingWhileRunning,
    /// The run found its environment missing before or at the spawn.
    MissingAtSpawn,
    /// Killed past its deadline.
    Stuck,
    /// Anything else that exited non-zero.
    Failed,
}

#[derive(Default)]
struct Tally {
    ops: HashMap<Op, u64>,
    waits: Vec<Duration>,
    missing_running: u64,
    missing_spawn: u64,
    stuck: u64,
    failed: u64,
    /// A few examples of each kind of violation.
    samples: Vec<(Outcome, String)>,
}

struct Shared {
    cachelock: PathBuf,
    checker: PathBuf,
    cache: PathBuf,
    tmp: PathBuf,
    work: PathBuf,
    policy: String,
    scripts: [PathBuf; 2],
    stop_at: Instant,
    stop: AtomicBool,
    done: AtomicU64,
    /// Operations started so far, and the most that may be.
    started: AtomicU64,
    max_operations: u64,
    tally: Mutex<Tally>,
}

/// A small xorshift generator: the mix needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs the stress test and prints its report on stdout (progress on stderr): true if
/// no violation was found. An error if it could not be set up.
pub fn run(args: Config) -> Result<bool, String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 86_400.0) {
        return Err(format!(
            "--seconds {} is not a duration; give a number of seconds between 0 and 86400",
            args.seconds
        ));
    }
    if args.operations == Some(0) {
        return Err("--operations 0 would run nothing; give at least 1".into());
    }
    if !(1..=256).contains(&args.processes) {
        return Err(format!(
            "--processes {} is out of range; give a number from 1 to 256",
            args.processes
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("cachelock-stress-")
        .tempdir()
        .map_err(|e| format!("could not create the stress directory: {e}"))?;
    let cache = match &args.cache_dir {
        Some(dir) => std::path::absolute(dir)
            .map_err(|e| format!("could not resolve --cache-dir {}: {e}", dir.display()))?,
        None => work.path().join("cache"),
    };
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).map_err(|e| format!("could not create the private TMPDIR: {e}"))?;
    let scripts = [0, 1].map(|i| work.path().join(format!("stress-script-{i}.py")));
    for s in &scripts {
        std::fs::write(s, "# a script for cachelock stress\n")
            .map_err(|e| format!("could not write {}: {e}", s.display()))?;
    }
    let before = list_dir(&tmp);
    let seed = args
        .seed
        .unwrap_or_else(|| (unix_nanos(SystemTime::now()) as u64) ^ u64::from(std::process::id()));
    let policy = args.policy;
    eprintln!(
        "stress: policy {policy}, {} processes, {} s, seed {seed}, cache {}",
        args.processes,
        args.seconds,
        cache.display()
    );
    let start = Instant::now();
    let shared = Arc::new(Shared {
        cachelock: args.cachelock.clone(),
        checker: args.checker.clone(),
        cache: cache.clone(),
        tmp: tmp.clone(),
        work: work.path().to_path_buf(),
        policy: policy.name().to_string(),
        scripts,
        stop_at: start + Duration::from_secs_f64(args.seconds),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        started: AtomicU64::new(0),
        max_operations: args.operations.unwrap_or(u64::MAX),
        tally: Mutex::new(Tally::default()),
    });
    let workers: Vec<_> = (0..args.processes)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let mut rng =
                Rng(seed.wrapping_add(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
            std::thread::spawn(move || worker(&shared, usize::from(i), &mut rng))
        })
        .collect();
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut next_report = start + every;
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_report {
            next_report += every;
            let t = shared
                .tally
                .lock()
                .map_err(|_| "a worker panicked".to_string())?;
            eprintln!(
                "  {:>4.0} s: {} operations, {} missing environments, {} stuck, {} other failures",
                start.elapsed().as_secs_f64(),
                shared.done.load(Ordering::Relaxed),
                t.missing_running + t.missing_spawn,
                t.stuck,
                t.failed
            );
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join()
            .map_err(|_| "a stress worker panicked".to_string())?;
    }
    let elapsed = start.elapsed();
    let after = list_dir(&tmp);
    let leaked: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    let lock_held = root_lock_held(&cache);
    let t = shared
        .tally
        .lock()
        .map_err(|_| "a worker panicked".to_string())?;
    let total: u64 = t.ops.values().sum();
    let mut ops: Vec<_> = t.ops.iter().collect();
    ops.sort();
    println!(
        "policy {policy}: {} processes for {:.1} s",
        args.processes,
        elapsed.as_secs_f64()
    );
    println!(
        "operations completed: {total} ({})",
        ops.iter()
            .map(|(op, n)| format!("{} {n}", op.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut waits = t.waits.clone();
    waits.sort();
    println!(
        "lock waits (spawn to child start for runs, spawn to exit for clean/prune; {} samples): median {}, p99 {}, max {}",
        waits.len(),
        ms(percentile(&waits, 50.0)),
        ms(percentile(&waits, 99.0)),
        ms(waits.last().copied())
    );
    println!(
        "environments found missing: {} ({} by a running child, {} at the spawn)",
        t.missing_running + t.missing_spawn,
        t.missing_running,
        t.missing_spawn
    );
    println!("leaked temporary caches: {}", leaked.len());
    for name in &leaked {
        println!("  {}", tmp.join(name).display());
    }
    println!("processes stuck past their timeout: {}", t.stuck);
    println!("other failed operations: {}", t.failed);
    let mut samples = t.samples.clone();
    samples.sort_by_key(|(o, _)| format!("{o:?}"));
    if !samples.is_empty() {
        println!("examples:");
    }
    for (o, s) in &samples {
        println!("  {o:?}: {s}");
    }
    if lock_held {
        println!("root lock still held after every process exited: yes");
    }
    let ok = t.missing_running + t.missing_spawn + t.stuck + t.failed == 0
        && leaked.is_empty()
        && !lock_held;
    println!("verdict: {}", if ok { "ok" } else { "VIOLATIONS FOUND" });
    if !ok {
        let kept = work.keep();
        println!(
            "the stress directory is kept for inspection: {}",
            kept.display()
        );
    }
    Ok(ok)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn list_dir(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .map(|es| es.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// True if somebody still holds the cache's root lock (nobody should, at the end).
fn root_lock_held(cache: &Path) -> bool {
    match LockFile::open_existing(&cache.join(LOCK_FILE)) {
        Ok(Some(mut lock)) => !matches!(lock.try_lock(Mode::Exclusive), Ok(TryLock::Acquired)),
        _ => false,
    }
}

fn pick(rng: &mut Rng) -> Op {
    let total: u64 = Op::MIX.iter().map(|(_, w)| w).sum();
    let mut r = rng.below(total);
    for (op, w) in Op::MIX {
        if r < w {
            return op;
        }
        r -= w;
    }
    Op::Run
}

fn worker(shared: &Shared, index: usize, rng: &mut Rng) {
    while Instant::now() < shared.stop_at && !shared.stop.load(Ordering::SeqCst) {
        if shared.started.fetch_add(1, Ordering::SeqCst) >= shared.max_operations {
            return;
        }
        let op = pick(rng);
        let (outcome, wait, sample) = one_op(shared, index, op, rng);
        shared.done.fetch_add(1, Ordering::Relaxed);
        let Ok(mut t) = shared.tally.lock() else {
            return;
        };
        *t.ops.entry(op).or_default() += 1;
        if let Some(w) = wait {
            t.waits.push(w);
        }
        match outcome {
            Outcome::Ok => {}
            Outcome::MissingWhileRunning => t.missing_running += 1,
            Outcome::MissingAtSpawn => t.missing_spawn += 1,
            Outcome::Stuck => t.stuck += 1,
            Outcome::Failed => t.failed += 1,
        }
        let same = t.samples.iter().filter(|(o, _)| *o == outcome).count();
        if outcome != Outcome::Ok && same < 3 {
            t.samples
                .push((outcome, format!("{}: {sample}", op.name())));
        }
    }
}

/// Runs one operation; returns its outcome, its lock wait, and a line for the report.
fn one_op(
    shared: &Shared,
    index: usize,
    op: Op,
    rng: &mut Rng,
) -> (Outcome, Option<Duration>, String) {
    let child_ms = match op {
        Op::RunLong => 200 + rng.below(600),
        _ => 2 + rng.below(20),
    };
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &str| args.push(a.into());
    match op {
        Op::Run | Op::RunLong => {
            push("run");
            push("--env");
            push(&format!("stress-{}", rng.below(3)));
        }
        Op::RunScript => {
            push("run");
            args.push("--script".into());
            args.push(shared.scripts[rng.below(2) as usize].clone().into());
        }
        Op::RunNoCache => {
            push("run");
            push("--no-cache");
        }
        Op::ToolRun => {
            push("tool-run");
            push(&format!("tool{}", rng.below(2)));
        }
        Op::Clean => push("clean"),
        Op::Prune => push("prune"),
    }
    args.extend(["--policy".into(), shared.policy.clone().into()]);
    args.extend(["--cache-dir".into(), shared.cache.clone().into()]);
    let is_run = !matches!(op, Op::Clean | Op::Prune);
    if is_run {
        args.push("--".into());
        args.push(shared.checker.clone().into());
        args.extend([
            "check-env".into(),
            "--millis".into(),
            child_ms.to_string().into(),
        ]);
    }
    let out_path = shared.work.join(format!("worker-{index}.out"));
    let err_path = shared.work.join(format!("worker-{index}.err"));
    let files =
        std::fs::File::create(&out_path).and_then(|o| Ok((o, std::fs::File::create(&err_path)?)));
    let Ok((out, err)) = files else {
        return (
            Outcome::Failed,
            None,
            "could not create the output files".into(),
        );
    };
    let mut cmd = Command::new(&shared.cachelock);
    cmd.args(&args)
        .env_remove("CACHELOCK_CACHE_DIR")
        .env_remove("UV_LOCK_TIMEOUT")
        .env_remove("RUST_LOG")
        .env("CACHELOCK_LOCK_TIMEOUT", LOCK_TIMEOUT_SECS.to_string())
        .env("TMPDIR", &shared.tmp)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let spawned_at = SystemTime::now();
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return (Outcome::Failed, None, format!("could not spawn: {e}")),
    };
    let deadline =
        Duration::from_secs(LOCK_TIMEOUT_SECS) + Duration::from_millis(child_ms) + STUCK_SLACK;
    let mut stuck = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if started.elapsed() > deadline && !stuck {
            stuck = true;
            // Its own process group: the run and its child go together.
            let pgid = i32::try_from(child.id()).unwrap_or(0);
            if pgid > 0 {
                // SAFETY: kill(2) on the process group of a child we spawned.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let ended = started.elapsed();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let last_line = stderr.lines().last().unwrap_or("").to_string();
    if stuck {
        return (
            Outcome::Stuck,
            None,
            format!("killed after {} s", ended.as_secs()),
        );
    }
    let code = status.map_or(-1, |s| {
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    let wait = if is_run {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("started "))
            .and_then(|n| n.trim().parse::<u128>().ok())
            .map(|n| Duration::from_nanos(n.saturating_sub(unix_nanos(spawned_at)) as u64))
    } else {
        Some(ended)
    };
    let outcome = match code {
        0 => Outcome::Ok,
        c if c == i32::from(MISSING_EXIT) => Outcome::MissingWhileRunning,
        _ if stderr.contains("is missing") || stderr.contains("was deleted") => {
            Outcome::MissingAtSpawn
        }
        _ => Outcome::Failed,
    };
    (outcome, wait, format!("exit {code}: {last_line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v[..1], 99.0), Some(Duration::from_millis(1)));
    }
}
