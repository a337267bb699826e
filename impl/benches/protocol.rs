//! The protocol's costs, whole processes measured from outside, each beside its floor or
//! peer measured in the same run:
//!
//! - `cachelock hold --shared -- true` vs `flock -s <cache>/.lock true` (median of
//!   alternating pairs);
//! - lock handover: a holder (`flock -x .lock cat`, kept alive by a pipe) exits, and a
//!   waiting `cachelock hold --shared` finishes, vs a waiting `flock -s`; each waiter is
//!   seen blocked in the kernel's lock table before the pipe is closed;
//! - a `cachelock run` started while a clean deletes N files vs the same run on an idle
//!   cache;
//! - `cachelock clean` of an N-file cache vs `rm -rf` and vs uv 0.13.9's `uv cache clean`
//!   (installed on first use, like the real-uv tests do), and, when
//!   `CACHELOCK_BENCH_OTHER_BUILD` names another build of `cachelock`, vs its clean.
//!   Each cache is written to disk (sync(2)) before its deletion is timed, and each round
//!   starts with another contender.
//!
//! `cargo bench -p cachelock --bench protocol`: full mode (N = 100 000); `-- hold` (or
//! `handover`, `run-during-clean`, `clean`) runs only the rows named and writes no record;
//! `CACHELOCK_WRITE_DOCS=1` also rewrites its section of `docs/performance.md`. Without
//! `--bench` (as `cargo test` runs it) a smoke mode checks that every measurement works.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cachelock_inspect::locks;
use cachelock_model::Mode;
use common::{Figure, cachelock, full_mode, median};

/// The uv release compared with (the newest 0.13.x), unless `CACHELOCK_UV` names one.
const UV_VERSION: &str = "0.13.9";

/// How long a wait for another process's state may take before the benchmark fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// The rows, by the names that select them on the command line.
const ROWS: [&str; 4] = ["hold", "handover", "run-during-clean", "clean"];

struct Sizes {
    pairs: usize,
    handovers: usize,
    files: usize,
    rounds: usize,
}

fn main() {
    let full = full_mode();
    let sizes = if full {
        Sizes {
            pairs: 40,
            handovers: 20,
            files: 100_000,
            rounds: 2,
        }
    } else {
        Sizes {
            pairs: 3,
            handovers: 2,
            files: 300,
            rounds: 1,
        }
    };
    let machine = common::machine();
    println!(
        "protocol benchmark ({} mode) on {machine}",
        if full { "full" } else { "smoke" }
    );
    let dir = tempfile::Builder::new()
        .prefix("cachelock-bench-")
        .tempdir()
        .expect("a temporary directory");
    // `cargo bench -p cachelock --bench protocol -- hold handover` runs only those rows
    // (and writes no record); the smoke mode always runs every row.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| full && !a.starts_with('-'))
        .collect();
    for name in &only {
        assert!(
            ROWS.contains(&name.as_str()),
            "no row {name:?}; the rows: {ROWS:?}"
        );
    }
    let wanted = |row: &str| only.is_empty() || only.iter().any(|o| o == row);
    let mut figures = Vec::new();
    if wanted("hold") {
        figures.push(hold_vs_flock(dir.path(), sizes.pairs));
    }
    if wanted("handover") {
        figures.push(handover(dir.path(), sizes.handovers));
    }
    if wanted("run-during-clean") {
        figures.push(run_during_clean(dir.path(), sizes.files, sizes.rounds));
    }
    if wanted("clean") {
        figures.extend(clean_vs_peers(dir.path(), sizes.files, sizes.rounds));
    }
    let md = common::table("protocol costs (ratio = figure / baseline)", &figures);
    if !only.is_empty() {
        return;
    }
    let body = format!(
        "## The protocol's costs\n\nMachine: {machine}.\n\
         Whole processes timed from outside; N = {} files; medians of {} pairs (hold), \
         {} handovers each, {} round(s) of each clean.\n\n{md}\n",
        sizes.files, sizes.pairs, sizes.handovers, sizes.rounds
    );
    common::write_doc_section("protocol", &body);
}

/// A fresh directory below `base`.
fn fresh(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    if p.exists() {
        std::fs::remove_dir_all(&p).expect("remove an old bench directory");
    }
    std::fs::create_dir_all(&p).expect("create a bench directory");
    p
}

/// The `cachelock` command on `cache`, quiet, with no inherited settings.
fn cl(cache: &Path, args: &[&str]) -> Command {
    cl_at(&cachelock(), cache, args)
}

/// [`cl`] with the binary at `program`.
fn cl_at(program: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("CACHELOCK_LOCK_TIMEOUT")
        .env_remove("UV_LOCK_TIMEOUT")
        .env_remove("RUST_LOG")
        .env("CACHELOCK_CACHE_DIR", cache)
        .env("CACHELOCK_LOCK_TIMEOUT", "120")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn quiet(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Runs `cmd` to its end, checks that it succeeded, and returns how long it took.
fn timed(what: &str, cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let took = start.elapsed();
    assert!(status.success(), "{what} failed: {status}");
    took
}

fn wait_success(what: &str, child: &mut Child) {
    let status = child.wait().expect("wait for a child");
    assert!(status.success(), "{what} failed: {status}");
}

/// Polls `cond` until it is true (the benchmark fails after [`DEADLINE`]).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Makes `root` a cache (its scaffold, made by a first run) and returns the lock file.
fn make_cache(root: &Path) -> PathBuf {
    timed(
        "cachelock run (making the cache)",
        &mut cl(root, &["run", "--env", "seed", "--", "true"]),
    );
    let lock = root.join(".lock");
    assert!(lock.exists(), "a run makes {}", lock.display());
    lock
}

fn hold_vs_flock(base: &Path, pairs: usize) -> Figure {
    let cache = fresh(base, "hold");
    let lock = make_cache(&cache);
    let lock = lock.to_str().expect("utf-8 path");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..pairs {
        let mut hold = || {
            ours.push(timed(
                "cachelock hold",
                &mut cl(&cache, &["hold", "--shared", "--", "true"]),
            ))
        };
        let mut flock = || {
            theirs.push(timed(
                "flock -s",
                &mut quiet("flock", &["-s", lock, "true"]),
            ))
        };
        if i % 2 == 0 {
            hold();
            flock();
        } else {
            flock();
            hold();
        }
    }
    Figure::times(
        &format!("`cachelock hold --shared -- true` (median of {pairs})"),
        median(&ours),
        "`flock -s .lock true`",
        median(&theirs),
        "≤ 1.10x",
    )
}

/// The lock table's entries on the file with inode `ino`.
fn entries_on(ino: u64) -> Vec<locks::FlockEntry> {
    locks::flocks()
        .into_iter()
        .filter(|l| l.inode == ino)
        .collect()
}

/// One handover: an exclusive holder kept alive by a pipe, `waiter` started and seen
/// blocked in flock(2), then the pipe closed; the time from closing to the waiter's exit.
fn one_handover(lock: &Path, mut waiter: Command) -> Duration {
    let ino = locks::inode_of(lock).expect("the lock file exists");
    let lock_s = lock.to_str().expect("utf-8 path");
    let mut holder = Command::new("flock")
        .args(["-x", lock_s, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start flock -x");
    let holder_pid = holder.id();
    until("the holder holds the lock", || {
        entries_on(ino)
            .iter()
            .any(|l| l.pid == holder_pid && !l.waiting && l.mode == Mode::Exclusive)
    });
    let mut waiting = waiter.spawn().expect("start the waiter");
    let pid = waiting.id();
    until("the waiter is blocked in flock(2)", || {
        entries_on(ino).iter().any(|l| l.pid == pid && l.waiting)
    });
    let pipe = holder.stdin.take().expect("the holder's stdin");
    let start = Instant::now();
    drop(pipe);
    let status = waiting.wait().expect("wait for the waiter");
    let took = start.elapsed();
    assert!(status.success(), "the waiter failed: {status}");
    wait_success("the holder", &mut holder);
    took
}

fn handover(base: &Path, rounds: usize) -> Figure {
    let cache = fresh(base, "handover");
    let lock = make_cache(&cache);
    let lock_s = lock.to_str().expect("utf-8 path");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..rounds {
        let mut hold = || {
            ours.push(one_handover(
                &lock,
                cl(&cache, &["hold", "--shared", "--", "true"]),
            ))
        };
        let mut flock =
            || theirs.push(one_handover(&lock, quiet("flock", &["-s", lock_s, "true"])));
        if i % 2 == 0 {
            hold();
            flock();
        } else {
            flock();
            hold();
        }
    }
    Figure::times(
        &format!("lock handover: holder exits → waiting `hold` done (median of {rounds})"),
        median(&ours),
        "waiting `flock -s`",
        median(&theirs),
        "≤ 2x",
    )
}

/// Fills `dir/data` with `n` small files in directories of at most 1000.
fn fill(dir: &Path, n: usize) {
    let data = dir.join("data");
    let per_dir = 1000.min(n.max(1));
    let content = [b'x'; 100];
    let mut made = 0;
    let mut d = 0;
    while made < n {
        let sub = data.join(format!("d{d:04}"));
        std::fs::create_dir_all(&sub).expect("create a data directory");
        for f in 0..per_dir.min(n - made) {
            std::fs::write(sub.join(format!("f{f:04}")), content).expect("write a data file");
        }
        made += per_dir.min(n - made);
        d += 1;
    }
}

fn run_during_clean(base: &Path, files: usize, rounds: usize) -> Figure {
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    let mut started_beside = 0;
    for r in 0..rounds {
        let cache = fresh(base, "busy");
        let lock = make_cache(&cache);
        let ino = locks::inode_of(&lock).expect("the lock file exists");
        fill(&cache, files);
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let mut clean = cl(&cache, &["clean"])
            .spawn()
            .expect("start cachelock clean");
        let clean_pid = clean.id();
        // The clean has started deleting: it holds the cache lock, or (a two-step clean,
        // which holds it only while it renames) the data has left the cache for its
        // trash; or it has ended.
        let data = cache.join("data");
        until(
            "the clean holds the cache lock, has moved the data out, or has ended",
            || {
                entries_on(ino)
                    .iter()
                    .any(|l| l.pid == clean_pid && !l.waiting && l.mode == Mode::Exclusive)
                    || !data.exists()
                    || clean.try_wait().ok().flatten().is_some()
            },
        );
        let clean_running = clean.try_wait().expect("poll the clean").is_none();
        let env = format!("bench{r}");
        busy.push(timed(
            "cachelock run beside a clean",
            &mut cl(&cache, &["run", "--env", &env, "--", "true"]),
        ));
        // Still deleting once the run is done: the run overlapped the deletion.
        if clean_running && clean.try_wait().expect("poll the clean").is_none() {
            started_beside += 1;
        }
        wait_success("cachelock clean", &mut clean);
        assert!(!cache.join("data").exists(), "the clean deleted the data");
        // The same run, on the same cache now idle.
        let env = format!("idle{r}");
        idle.push(timed(
            "cachelock run on an idle cache",
            &mut cl(&cache, &["run", "--env", &env, "--", "true"]),
        ));
    }
    println!(
        "  (the run started and ended while the clean was deleting in {started_beside} of {rounds} rounds)"
    );
    Figure::times(
        &format!(
            "`cachelock run` started while a clean deletes {files} files (median of {rounds})"
        ),
        median(&busy),
        "the same run on an idle cache",
        median(&idle),
        "≤ 5x",
    )
}

/// A cache of `files` files below `base/name`, written out to the disk (so that no
/// write-back of its making is timed with its deletion).
fn filled_cache(base: &Path, name: &str, files: usize) -> PathBuf {
    let cache = fresh(base, name);
    make_cache(&cache);
    fill(&cache, files);
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    cache
}

fn clean_vs_peers(base: &Path, files: usize, rounds: usize) -> Vec<Figure> {
    let uv = uv();
    // Another build of cachelock to compare with in the same run (e.g. the one before a
    // change to deletion), if named.
    let other = std::env::var_os("CACHELOCK_BENCH_OTHER_BUILD").map(PathBuf::from);
    let mut ours = Vec::new();
    let mut rm = Vec::new();
    let mut theirs = Vec::new();
    let mut other_times = Vec::new();
    for round in 0..rounds {
        let mut jobs: Vec<Box<dyn FnMut()>> = Vec::new();
        jobs.push(Box::new(|| {
            let cache = filled_cache(base, "clean-ours", files);
            ours.push(timed("cachelock clean", &mut cl(&cache, &["clean"])));
            assert!(
                !cache.join("data").exists(),
                "cachelock clean deleted the data"
            );
        }));
        jobs.push(Box::new(|| {
            let cache = filled_cache(base, "clean-rm", files);
            let cache_s = cache.to_str().expect("utf-8 path");
            rm.push(timed("rm -rf", &mut quiet("rm", &["-rf", cache_s])));
            assert!(!cache.exists(), "rm -rf deleted the cache");
        }));
        jobs.push(Box::new(|| {
            let cache = filled_cache(base, "clean-uv", files);
            let mut cmd = quiet(uv.to_str().expect("utf-8 path"), &["cache", "clean"]);
            cmd.env("UV_CACHE_DIR", &cache)
                .env("UV_NO_CONFIG", "1")
                .env("UV_OFFLINE", "1")
                .env("UV_LOCK_TIMEOUT", "120");
            theirs.push(timed("uv cache clean", &mut cmd));
            assert!(
                !cache.join("data").exists(),
                "uv cache clean deleted the data"
            );
        }));
        if let Some(program) = &other {
            jobs.push(Box::new(|| {
                let cache = filled_cache(base, "clean-other", files);
                let mut cmd2 = cl_at(program, &cache, &["clean"]);
                other_times.push(timed("the other build's clean", &mut cmd2));
                assert!(
                    !cache.join("data").exists(),
                    "the other build's clean deleted the data"
                );
            }));
        }
        // Each round starts with another of the contenders.
        let n = jobs.len();
        for k in 0..n {
            (jobs[(round + k) % n])();
        }
    }
    let what = format!("`cachelock clean` of a {files}-file cache (median of {rounds})");
    let mut figures = vec![
        Figure::times(&what, median(&ours), "`rm -rf`", median(&rm), "≤ 1.0x"),
        Figure::times(
            &what,
            median(&ours),
            &format!("uv {UV_VERSION} `uv cache clean`"),
            median(&theirs),
            "≤ 0.5x",
        ),
    ];
    if other.is_some() {
        figures.push(Figure::times(
            &what,
            median(&ours),
            "`cachelock clean` of the other build (CACHELOCK_BENCH_OTHER_BUILD)",
            median(&other_times),
            "below 1x: faster",
        ));
    }
    figures
}

/// uv: `CACHELOCK_UV`, or uv [`UV_VERSION`] installed on first use by
/// `conformance/scripts/install-uv.sh` (into `$CACHELOCK_UV_VERSIONS_DIR` or
/// `.uv-versions/`).
fn uv() -> PathBuf {
    static UV: OnceLock<PathBuf> = OnceLock::new();
    UV.get_or_init(|| {
        if let Some(uv) = std::env::var_os("CACHELOCK_UV") {
            return PathBuf::from(uv);
        }
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/scripts/install-uv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(UV_VERSION)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .filter(|p| out.status.success() && p.exists());
        path.unwrap_or_else(|| {
            let _ = std::io::stderr().write_all(&out.stderr);
            panic!(
                "could not install uv {UV_VERSION} with {} ({}); set CACHELOCK_UV to a uv binary",
                script.display(),
                out.status
            )
        })
    })
    .clone()
}
