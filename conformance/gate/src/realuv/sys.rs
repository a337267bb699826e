//! The operating-system side of the harness: processes under the gate in their own
//! process groups, and what a cache directory holds. What the kernel says about locks and
//! processes is read through `cachelock_inspect`.
//!
//! Nothing here decides an order by waiting a while. The harness *controls* (the gate
//! holds and releases each process's steps, the probe's go file lets its child check)
//! and *observes* (the gate saw an exit, the probe's ready signal, a lock wait). The one
//! wait that looks again and again ([`observe`], every [`POLL`]) is for a probe child's
//! report once it was let go: a wait for an end, whose deadline only bounds a failure.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;

use std::path::{Path, PathBuf};

use std::thread::sleep;

use cachelock_inspect::{process, wait};
use std::time::{Duration, Instant};

use super::gated::{self, Gated, Reached};

/// How often the harness polls files, processes and the kernel's lock table.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `what` until it yields a value; an error naming `what` after `limit` (a bound on
/// a failure: the condition must come true, the deadline only stops a hang).
pub fn observe<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if Instant::now() >= end {
            return Err(format!("not seen within {}s: {}", limit.as_secs(), what()));
        }
        sleep(POLL);
    }
}

/// What a process was seen doing while the harness waited for it to exit or block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code (signal n: 128+n).
    Exited(i32),
    /// It (or a process of its group) was blocked in a lock wait: how, and the details.
    Blocked(String, String),
    /// The probe child signalled that it runs.
    Ready,
}

/// A process the harness started: under the gate on a tracer thread of its own
/// ([`Gated`]), in its own process group (so that a nested clean or an orphaned child can
/// be reaped), stdout and stderr in files (so that nothing blocks on a full pipe), and
/// the probe's signal files. Its steps run as the harness asks: the probe's ready signal
/// (its rename onto the ready file) and a lock wait are seen by the gate, not looked for.
pub struct Proc {
    /// `run#1`, `clean#2`: the process's name in evidence.
    pub name: String,
    inner: Gated,
    /// Created by the probe child once it runs.
    pub ready: PathBuf,
    /// Created by the harness to let the probe child check its environment and exit.
    pub go: PathBuf,
    /// The probe child's report (JSON).
    pub report: PathBuf,
    /// The lock wait [`Proc::exit_or_block`] last saw it in. It stays true while the
    /// harness lets nothing go (the holder it waits for is held by the harness).
    pub seen_blocked: Option<(String, String)>,
    limit: Duration,
}

impl Proc {
    /// Starts `argv` with `env` (added to the harness's own environment), its steps named
    /// against `cache`; every wait on it is bounded by `limit` (a bound on a failure).
    pub fn spawn(
        name: &str,
        dir: &Path,
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cache: &Path,
        limit: Duration,
    ) -> Result<Proc, String> {
        let inner = Gated::spawn(name, dir, argv, env, cache, limit)?;
        Ok(Proc {
            name: name.to_string(),
            ready: inner.ready.clone(),
            go: inner.go_file.clone(),
            report: inner.report.clone(),
            inner,
            seen_blocked: None,
            limit,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The exit code as a shell reports it (signal n: 128+n), if it has exited.
    pub fn code(&mut self) -> Option<i32> {
        self.inner.status()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.inner.stderr()
    }

    /// Runs the process until the probe child signals that it runs (the gate holds the
    /// signal, then lets it go), or it blocks in a lock wait, or its tree ends. True if
    /// the child signalled.
    pub fn wait_ready(&mut self, _limit: Duration) -> bool {
        matches!(self.exit_or_block(self.limit, true), Ok(Outcome::Ready))
    }

    /// Lets the process and all it started run free and waits until it has exited; an
    /// error after the spawn's limit (a bound on a failure).
    pub fn wait_exit(&mut self, _limit: Duration) -> Result<i32, String> {
        self.seen_blocked = None;
        self.inner.free()
    }

    /// The lock wait that this process, or a process of its group (its child, a nested
    /// clean), is blocked in now ([`wait::lock_wait`]).
    pub fn blocked(&self) -> Option<(String, String)> {
        process::group_members(self.pid())
            .into_iter()
            .find_map(wait::lock_wait)
            .map(|w| (w.how.to_string(), w.details))
    }

    /// Runs the process (its steps released one by one) until it exits or a `flock` of
    /// its tree is seen sleeping in the kernel's lock wait (the gate's `settle`); with
    /// `ready`, also until the probe child signals. One of them must happen: a process
    /// that does none is a failure (the spawn's limit), not a verdict.
    pub fn exit_or_block(&mut self, _limit: Duration, ready: bool) -> Result<Outcome, String> {
        let at = if ready {
            gated::at_signal(&self.ready)
        } else {
            gated::nowhere()
        };
        match self.inner.until(at)? {
            Reached::Held(_) => {
                self.inner.release()?;
                Ok(Outcome::Ready)
            }
            Reached::Blocked(event) => {
                let how =
                    "in a blocking flock (the gate saw it sleep in the lock wait)".to_string();
                let details = match self.blocked() {
                    Some((_, d)) => format!("{event}: {d}"),
                    None => event,
                };
                self.seen_blocked = Some((how.clone(), details.clone()));
                Ok(Outcome::Blocked(how, details))
            }
            Reached::Ended(code) => Ok(Outcome::Exited(code.unwrap_or(-1))),
        }
    }

    /// The probe child's pid, once it has signalled.
    pub fn child_pid(&self) -> Option<u32> {
        fs::read_to_string(&self.ready)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The probe child's environment (`sys.prefix`, or `$CACHELOCK_ENV`), once it has
    /// signalled.
    pub fn child_env(&self) -> Option<PathBuf> {
        let text = fs::read_to_string(&self.ready).ok()?;
        text.lines().nth(1).map(PathBuf::from)
    }

    /// Lets the probe child check its environment and exit.
    pub fn go(&mut self) {
        self.seen_blocked = None;
        let _ = fs::write(&self.go, b"go");
    }

    /// Waits for the probe child's report (it may outlive this process): until it is
    /// there, or until the child (its pid from the ready file) is gone without writing
    /// one (`None`). An error after `limit` (a bound on a failure).
    pub fn wait_report(&self, limit: Duration) -> Result<Option<Report>, String> {
        let child = self.child_pid();
        observe(
            limit,
            || format!("{}'s child reporting or exiting", self.name),
            || {
                if let Ok(text) = fs::read_to_string(&self.report) {
                    return Some(Some(Report::parse(&text)));
                }
                let alive = child.is_some_and(process::alive);
                if alive {
                    return None;
                }
                // Gone: a report written just before it exited is read now.
                Some(
                    fs::read_to_string(&self.report)
                        .ok()
                        .map(|t| Report::parse(&t)),
                )
            },
        )
    }

    /// SIGKILL to this process only (its child lives on, as after a crash).
    pub fn kill_self(&mut self) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe { libc::kill(self.pid() as i32, libc::SIGKILL) };
        let _ = self.inner.wait_exit();
    }

    /// SIGKILL to the whole process group (this process, its child, nested processes).
    pub fn kill_group(&mut self) {
        // SAFETY: as above; a negative pid names our own process group.
        unsafe { libc::kill(-(self.pid() as i32), libc::SIGKILL) };
        let _ = self.inner.wait_exit();
    }
}

/// What the probe child saw (see `conformance/gate/scripts/build-probe-wheel.py`).
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The environment was intact when the child checked it.
    pub ok: bool,
    /// The failed import or missing path, when not ok.
    pub problem: String,
    /// The environment's own files (the probe's module, or cachelock's marker) were
    /// there and importable, whatever became of `sys.prefix`.
    pub files_ok: bool,
    /// `sys.prefix` (or `$CACHELOCK_ENV`) still existed.
    pub prefix_ok: bool,
    /// Exit code of the command the child ran (`CLPROBE_EXEC`), if any.
    pub exec_code: Option<i32>,
    /// Its stderr.
    pub exec_stderr: String,
}

impl Report {
    /// Reads the probe's JSON report.
    pub fn parse(text: &str) -> Report {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let ok = v["ok"].as_bool().unwrap_or(false);
        let mut problem = String::new();
        if !ok {
            if v["prefix_exists"] == false {
                problem.push_str("sys.prefix gone; ");
            }
            if v["module_file_exists"] == false {
                problem.push_str("clprobe's files gone; ");
            }
            if let Some(s) = v["late_import"].as_str().filter(|s| *s != "ok") {
                problem.push_str(s);
            }
        }
        Report {
            ok,
            files_ok: v["module_file_exists"] == true && v["late_import"] == "ok",
            prefix_ok: v["prefix_exists"] == true,
            problem,
            exec_code: v["exec_code"].as_i64().map(|c| c as i32),
            exec_stderr: v["exec_stderr"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// Inode of a path, if it exists.
pub fn inode(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// The names in a directory, sorted; `None` if it does not exist.
pub fn entries(dir: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names)
}

/// The environments below `dir`: directories holding `pyvenv.cfg` (uv) or the marker
/// `cachelock-env` (cachelock), not looking inside an environment or a symlink.
pub fn envs_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if p.join("pyvenv.cfg").is_file() || p.join("cachelock-env").is_file() {
            out.push(p);
        } else {
            out.extend(envs_below(&p));
        }
    }
    out.sort();
    out
}

/// True if the stderr of a process says a lock wait timed out (uv or cachelock).
pub fn says_timeout(stderr: &str) -> bool {
    stderr.contains("Timeout") || stderr.contains("timed out")
}

/// Number of directory entries below `dir` (recursively, not following symlinks).
pub fn count_below(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            1 + if is_dir { count_below(&e.path()) } else { 0 }
        })
        .sum()
}
