//! The scenarios the fidelity suite plays, each with the interleavings it forces.
//!
//! Every driver follows the same pattern: start the processes (each under the gate) in
//! the order that breaks the scenario's properties if anything does, run each until the
//! gate shows it where it must be (the probe child's ready signal, a lock wait, a held
//! step), observe, and let everything finish. Further plays of the same scenario, in
//! sandboxes of their own, force the model's shortest counterexamples step by step
//! ([`super::gated`]); the plays merge per property.
//!
//! No duration decides an order. "Did the clean finish while the child ran?" is answered
//! by running the clean until it exits or the gate sees its `flock` sleep in the lock
//! wait; one of them must happen. The deadlines below only bound a failure: reaching one
//! fails the scenario, saying what was not seen.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use cachelock_inspect::locks::{self, FlockEntry};
use cachelock_inspect::{process, wait};
use cachelock_model::{Kind, ProcSpec, Scenario};

use super::gated::{self, Gated, Reached};
use super::sys::{self, Outcome, Proc, Report};
use super::{LOCK_TIMEOUT_S, Observation, Runner, Sandbox, Seen, Setup};
use crate::Settled;

/// Bounds a run that never starts its child (a failure, not a verdict).
const READY: Duration = Duration::from_secs(180);
/// Bounds a process that neither exits nor blocks in a lock wait, or that does not exit
/// once it may (a failure, not a verdict).
const FINISH: Duration = Duration::from_secs(180);

pub use super::WITNESSES;

/// The scenarios of the suite, in table order.
pub const SCENARIOS: [&str; 16] = [
    "run,clean",
    "run-script,clean",
    "tool-run,clean",
    "run,prune",
    "tool-run,prune",
    "run-script,clean-force",
    "run-no-cache",
    "run-no-cache+crash",
    "run-server,clean+timeout",
    "run-daemon,clean",
    "run-nested-clean",
    "run-nested-clean+timeout",
    "run,run",
    "run+crash,clean",
    "run,clean,run",
    "clean,run,clean",
];

/// Plays `scenario` on `runner`. An `Err` means the scenario could not be played at
/// all (a run never started its child, say), which the suite reports as a failure.
pub fn play(runner: &dyn Runner, setup: &Setup, scenario: &str) -> Result<Observation, String> {
    let sc = Scenario::parse(scenario).map_err(|e| e.to_string())?;
    let mut cx = Cx::new(runner, setup, scenario)?;
    for p in &sc.procs {
        if let Some(s) = runner.stand_in(p.kind) {
            cx.obs.remarks.push(s.to_string());
        }
    }
    let k: Vec<Kind> = sc.procs.iter().map(|p| p.kind).collect();
    match k.as_slice() {
        [Kind::RunDaemon, c] if c.is_clean() => {
            daemon_then_clean(&mut cx, sc.procs[0], sc.procs[1])
        }
        [r, c] if r.is_run() && c.is_clean() => run_then_clean(&mut cx, sc.procs[0], sc.procs[1]),
        [Kind::RunNoCache] => no_cache(&mut cx, sc.procs[0]),
        [Kind::RunNestedClean] => nested_clean(&mut cx, sc.procs[0]),
        [Kind::Run, Kind::Run] => two_runs(&mut cx),
        [Kind::Run, Kind::Clean, Kind::Run] => overtaking(&mut cx),
        [Kind::Clean, Kind::Run, Kind::Clean] => orphaned_lock(&mut cx),
        _ => Err(format!("no driver for scenario `{scenario}`")),
    }?;
    Ok(cx.obs)
}

/// The state of one scenario being played.
struct Cx<'a> {
    runner: &'a dyn Runner,
    sb: Sandbox,
    obs: Observation,
    started: Instant,
    count: usize,
    /// The kinds of the processes started, in order.
    starts: Vec<Kind>,
}

/// The `no-overtaking` play ([`overtake`]) alone, with `runner`, for a play made
/// elsewhere that needs that property too (the mixed suite's orphaned-`.lock` race).
pub(super) fn overtaking_alone(
    runner: &dyn Runner,
    setup: &Setup,
    scenario: &str,
    run_spec: ProcSpec,
    clean_spec: ProcSpec,
) -> Result<Observation, String> {
    let mut cx = Cx::new(runner, setup, scenario)?;
    overtake(&mut cx, run_spec, clean_spec, &[])?;
    Ok(cx.obs)
}

impl<'a> Cx<'a> {
    fn new(runner: &'a dyn Runner, setup: &Setup, scenario: &str) -> Result<Cx<'a>, String> {
        Ok(Cx {
            runner,
            sb: Sandbox::new(&setup.wheels(), &setup.python).map_err(|e| e.to_string())?,
            obs: Observation {
                scenario: scenario.to_string(),
                runner: runner.label(),
                policy: runner.policy(),
                props: Vec::new(),
                remarks: Vec::new(),
                log: Vec::new(),
            },
            started: Instant::now(),
            count: 0,
            starts: Vec::new(),
        })
    }

    fn start(&mut self, spec: ProcSpec) -> Result<Proc, String> {
        self.start_with(spec, &[])
    }

    fn start_with(
        &mut self,
        spec: ProcSpec,
        extra: &[(OsString, OsString)],
    ) -> Result<Proc, String> {
        self.count += 1;
        self.starts.push(spec.kind);
        let name = format!("{}#{}", spec.kind.token(), self.count);
        let argv = self.runner.argv(spec.kind, &self.sb);
        let mut env = self.runner.env(&self.sb, spec.timeout);
        env.extend(extra.iter().cloned());
        let p = Proc::spawn(&name, &self.sb.root, &argv, &env, &self.sb.cache, FINISH)?;
        self.log(format!("start {name} (pid {}) under the gate", p.pid()));
        Ok(p)
    }

    /// Starts `spec` under the gate (with `extra` environment), in the scenario's
    /// sandbox, or in `other` for a further play of the scenario; it runs nothing until
    /// the harness drives it.
    fn start_gated(
        &mut self,
        other: Option<&Sandbox>,
        spec: ProcSpec,
        extra: &[(OsString, OsString)],
    ) -> Result<Gated, String> {
        self.count += 1;
        self.starts.push(spec.kind);
        let name = format!("{}#{}", spec.kind.token(), self.count);
        let sb = other.unwrap_or(&self.sb);
        let argv = self.runner.argv(spec.kind, sb);
        let mut env = self.runner.env(sb, spec.timeout);
        env.extend(extra.iter().cloned());
        let p = Gated::spawn(&name, &sb.root, &argv, &env, &sb.cache, FINISH)?;
        self.log(format!("start {name} (pid {}) under the gate", p.pid));
        Ok(p)
    }

    /// Starts a clean while `what` runs (using the environments `live`) and waits until
    /// it exits or is seen blocked in a lock wait: one of them must happen. A clean whose
    /// lock wait times out by itself (`+timeout` on a runner that has a lock timeout) is
    /// waited for until it exits. A clean that finished successfully meanwhile has its
    /// leftovers recorded. Returns the clean, whether it exited, and its code.
    fn clean_while(
        &mut self,
        spec: ProcSpec,
        what: &str,
        live: &[std::path::PathBuf],
    ) -> Result<(Proc, bool, Option<i32>), String> {
        let mut clean = self.start(spec)?;
        let outcome = if spec.timeout && self.runner.has_lock_timeout() {
            Outcome::Exited(clean.wait_exit(FINISH)?)
        } else {
            clean.exit_or_block(FINISH, false)?
        };
        let (during, code) = match &outcome {
            Outcome::Exited(c) => {
                self.log(format!("{} exited {c} while {what} runs", clean.name));
                (true, Some(*c))
            }
            Outcome::Blocked(_, details) => {
                self.log(format!(
                    "{} blocked while {what} runs: {details}",
                    clean.name
                ));
                (false, None)
            }
            Outcome::Ready => unreachable!("a clean has no probe child"),
        };
        if during && code == Some(0) {
            self.remark_cache_after_clean();
            self.removes_unused(live, &format!("while {what} ran"));
        }
        Ok((clean, during, code))
    }

    fn log(&mut self, line: impl Into<String>) {
        let t = self.started.elapsed().as_secs_f32();
        self.obs.log.push(format!("{t:6.2}s {}", line.into()));
    }

    /// Records what a play saw of `property`. A scenario may be played more than once
    /// (each play forcing the interleaving that decides other properties); the plays
    /// merge: for a witness (`sometimes`) the play that shows it decides, for any other
    /// property the play that breaks it; else a forced observation beats an unforced one.
    fn see(&mut self, property: &'static str, seen: Seen, forced: bool, note: impl Into<String>) {
        let note = note.into();
        // What is observed of mutual exclusion is a deletion while another process held
        // `.lock`: the literal reading, `root-lock-exclusion`. The runners here (uv's
        // releases, and cachelock under uv's policies and `cachelock`) never delete beside
        // a `.lock` holder what `.lock` does not protect, so the sharpened reading is the
        // same observation.
        if property == "mutual-exclusion" {
            self.record("root-lock-exclusion", seen, forced, note.clone());
        }
        self.record(property, seen, forced, note);
    }

    fn record(&mut self, property: &'static str, seen: Seen, forced: bool, note: String) {
        self.obs.record(property, seen, forced, note);
    }

    /// Marks `property`, not forced by any play, as one this binary cannot play: `why`.
    fn unplayable(&mut self, property: &'static str, why: &str) {
        for p in self.obs.props.iter_mut().filter(|p| {
            (p.property == property
                || (property == "mutual-exclusion" && p.property == "root-lock-exclusion"))
                && !p.forced
        }) {
            p.unplayable = Some(why.to_string());
        }
    }

    /// What was seen of the cleans' ends, as the two clean liveness properties:
    /// `clean-terminates` (every clean ended: any exit, its timeout included) and
    /// `clean-succeeds` (every clean exited 0).
    fn see_clean_end(
        &mut self,
        terminated: bool,
        succeeded: bool,
        forced: bool,
        note: impl Into<String>,
    ) {
        let note = note.into();
        let seen = Seen::holds_if;
        self.see("clean-terminates", seen(terminated), forced, note.clone());
        self.see("clean-succeeds", seen(succeeded), forced, note);
    }

    /// Waits for a run's child to signal; an error with its stderr if it never does.
    fn ready(&mut self, run: &mut Proc) -> Result<(), String> {
        if run.wait_ready(READY) && run.ready.exists() {
            let pid = run.child_pid().unwrap_or_default();
            self.log(format!("{} child runs (pid {pid})", run.name));
            Ok(())
        } else {
            let code = run.code();
            Err(format!(
                "{} never started its child (exit {code:?}); stderr:\n{}",
                run.name,
                run.stderr()
            ))
        }
    }

    /// The flocks `p` holds on the cache's `.lock` (any inode that was ever there is
    /// not known here: this is the current one). Other locks (cachelock's environment
    /// locks) are logged, not returned: they are not the cache lock.
    fn lock_held_by(&mut self, p: &Proc) -> Vec<FlockEntry> {
        let all = locks::held_by(p.pid());
        let ino = sys::inode(&self.sb.lock_file());
        let on_lock: Vec<_> = all
            .iter()
            .filter(|l| Some(l.inode) == ino)
            .cloned()
            .collect();
        self.log(format!(
            "/proc/locks: {} holds {:?} (on .lock: {:?}, .lock inode {:?})",
            p.name, all, on_lock, ino
        ));
        on_lock
    }

    /// `no-deadlock` as `/proc` shows it now, for the processes the scenario started: it
    /// fails only if every one still alive is blocked in a lock wait, itself or through
    /// the processes it waits for (its process group: its child, a nested clean), as
    /// `/proc/locks` and the waiters' descriptors show ([`cachelock_inspect::wait::lock_wait`]); it holds if
    /// every process has exited, or one alive is not in any lock wait.
    fn deadlock_seen(&mut self, procs: &mut [&mut Proc]) -> (Seen, String) {
        let mut live = Vec::new();
        let mut blocked = Vec::new();
        let mut free = Vec::new();
        for p in procs.iter_mut() {
            if let Some(code) = p.code() {
                self.log(format!("{} has exited ({code})", p.name));
                continue;
            }
            live.push(p.name.clone());
            // Seen blocked just before (and nothing let go since), or blocked now.
            let members = process::group_members(p.pid());
            let wait = p.seen_blocked.clone().or_else(|| {
                members
                    .iter()
                    .find_map(|m| wait::lock_wait(*m))
                    .map(|w| (w.how.to_string(), w.details))
            });
            match wait {
                Some((how, details)) => {
                    self.log(format!("{}: {details}", p.name));
                    blocked.push(format!("{} ({how})", p.name));
                }
                None => free.push(p.name.clone()),
            }
        }
        self.log(format!("alive {live:?}; blocked {blocked:?}"));
        if live.is_empty() {
            (Seen::Holds, "every process exited".to_string())
        } else if free.is_empty() {
            (
                Seen::Fails,
                format!(
                    "every live process was blocked in a lock wait: {}",
                    blocked.join(", ")
                ),
            )
        } else {
            (
                Seen::Holds,
                format!(
                    "not every live process was blocked: {} in no lock wait",
                    free.join(", ")
                ),
            )
        }
    }

    /// Waits until `p` exits (it must: everything it waits for has been let go) and logs
    /// its code and stderr tail; an error if it does not exit within `limit`.
    fn finish(&mut self, p: &mut Proc, limit: Duration) -> Result<Option<i32>, String> {
        let code = match p.wait_exit(limit) {
            Ok(c) => Some(c),
            Err(e) => {
                return Err(format!(
                    "{e} (blocked: {:?}); stderr:\n{}",
                    p.blocked(),
                    p.stderr()
                ));
            }
        };
        let err = p.stderr();
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        self.log(format!(
            "{} exit {:?}; stderr tail: {:?}",
            p.name,
            code,
            tail.into_iter().rev().collect::<Vec<_>>()
        ));
        Ok(code)
    }

    /// The cached environments left in the cache, other than `live` (the environments
    /// of children still running), as paths relative to the cache.
    fn envs_left(&self, live: &[std::path::PathBuf]) -> Vec<String> {
        sys::envs_below(&self.sb.cache)
            .into_iter()
            .filter(|e| !live.contains(e))
            .map(|e| {
                e.strip_prefix(&self.sb.cache)
                    .unwrap_or(&e)
                    .display()
                    .to_string()
            })
            .collect()
    }

    /// Observes `clean-removes-unused` once a clean has finished its work: no cached
    /// environment is left but those of the children in `live`.
    fn removes_unused(&mut self, live: &[std::path::PathBuf], when: &str) {
        let left = self.envs_left(live);
        let kept = live.iter().filter(|e| e.exists()).count();
        self.log(format!(
            "environments left {when}: {left:?} (and {kept} in use)"
        ));
        self.see(
            "clean-removes-unused",
            Seen::holds_if(left.is_empty()),
            false,
            if !left.is_empty() {
                format!("the clean left {} unused environment(s)", left.len())
            } else if kept > 0 {
                format!("{when}, the clean removed every environment but the one in use")
            } else {
                format!("{when}, the clean removed every environment")
            },
        );
    }

    fn remark_cache_after_clean(&mut self) {
        let root = sys::entries(&self.sb.cache);
        let s = match root {
            None => "clean removed `.lock` and the root".to_string(),
            Some(e) if e == [".lock"] => "clean kept the root with only `.lock`".to_string(),
            Some(e) => format!("after the clean the root holds {e:?}"),
        };
        self.log(s.clone());
        if !self.obs.remarks.contains(&s) {
            self.obs.remarks.push(s);
        }
    }

    fn live_env(&mut self, run: &Proc, code: Option<i32>, report: Option<Report>, crashed: bool) {
        match report {
            Some(r) if r.ok && (crashed || code == Some(0)) => self.see(
                "live-env-intact",
                Seen::Holds,
                true,
                "the child found its environment intact",
            ),
            Some(r) if !r.ok => {
                let problem = r.problem.clone();
                self.log(format!(
                    "{} child lost its environment: {problem}",
                    run.name
                ));
                let first = problem.split(':').next().unwrap_or("").to_string();
                self.see(
                    "live-env-intact",
                    Seen::Fails,
                    true,
                    format!("the running child lost its environment ({first})"),
                )
            }
            _ => {
                let err = run.stderr();
                let line = err
                    .lines()
                    .find(|l| l.contains("error"))
                    .unwrap_or("no report")
                    .to_string();
                let stable = line
                    .trim_start_matches("error: ")
                    .split([':', '`'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                self.log(format!("{}: {line}", run.name));
                self.see(
                    "live-env-intact",
                    Seen::Fails,
                    true,
                    format!("the child never ran in its environment ({stable})"),
                )
            }
        }
    }
}

/// `RUN,CLEAN`: the clean starts once the run's child runs (and, with `+crash`, once
/// the run has been killed). The child checks its environment only after the clean
/// has finished, or has shown that it waits.
fn run_then_clean(cx: &mut Cx, run_spec: ProcSpec, clean_spec: ProcSpec) -> Result<(), String> {
    let server = run_spec.kind == Kind::RunServer;
    let mut run = cx.start(run_spec)?;
    cx.ready(&mut run)?;
    let held = cx.lock_held_by(&run);
    let run_holds = !held.is_empty();
    if run_spec.crash {
        run.kill_self();
        let after = locks::held_by(run.pid());
        cx.log(format!(
            "SIGKILL {} (held {held:?}); its locks after: {after:?}",
            run.name
        ));
    }
    let live: Vec<_> = run.child_env().into_iter().collect();
    let (mut clean, during, during_code) = cx.clean_while(clean_spec, "the child", &live)?;
    let deleted_during = during && during_code == Some(0);
    let deadlock = cx.deadlock_seen(&mut [&mut run, &mut clean]);
    // A server's clean that is still waiting is ended here: the server never exits.
    let mut clean_code = during_code;
    let mut clean_stuck = false;
    if server && !during {
        clean.kill_group();
        clean_stuck = true;
        cx.log(format!("{} killed by the suite", clean.name));
    }
    run.go();
    let code = if run_spec.crash {
        None
    } else {
        cx.finish(&mut run, FINISH)?
    };
    let report = run.wait_report(FINISH)?;
    if !during && !clean_stuck {
        clean_code = cx.finish(&mut clean, FINISH)?;
        if clean_code == Some(0) {
            cx.remark_cache_after_clean();
            cx.removes_unused(&[], "once the child had exited");
        }
    }
    cx.live_env(&run, code, report, run_spec.crash);

    let force =
        clean_spec.kind == Kind::CleanForce && cx.runner.stand_in(Kind::CleanForce).is_none();
    let holder = run_holds && !run_spec.crash;
    let me_fails = deleted_during && holder;
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!me_fails),
        holder,
        match (me_fails, holder, deleted_during) {
            (true, _, _) => "the clean deleted while the run held its shared lock".to_string(),
            (false, true, _) => {
                "the clean did not delete while the run held its shared lock".to_string()
            }
            (false, false, true) if run_spec.crash => {
                "the killed run held no lock: the clean deleted at once".to_string()
            }
            (false, false, true) => {
                "the run held no lock while its child ran: the clean deleted at once".to_string()
            }
            (false, false, false) => "the clean did not delete while the child ran".to_string(),
        },
    );
    cx.see(
        "clean-overlaps-child",
        Seen::holds_if(deleted_during),
        true,
        if deleted_during {
            "the clean got the cache while the child ran"
        } else {
            "the clean started while the child ran and did not get the cache"
        },
    );
    let timed_out = clean_code == Some(2) && sys::says_timeout(&clean.stderr());
    let completes = clean_code == Some(0) || (clean_spec.timeout && timed_out);
    // What can stop a clean here is a holder that never lets go; a clean that never
    // waited exercised nothing of that. (Nor did it meet a run filling the root between
    // its delete and its remove-root: the run had set up before the clean started.)
    let waited = !deleted_during;
    cx.see_clean_end(
        !clean_stuck && clean_code.is_some(),
        clean_code == Some(0),
        waited,
        if clean_stuck {
            "the clean was blocked in its lock wait while the server ran (no lock timeout)"
                .to_string()
        } else if timed_out {
            format!("the clean timed out after {LOCK_TIMEOUT_S}s (exit 2) while the server ran")
        } else if completes && waited {
            "the clean finished (exit 0) once the child had exited".to_string()
        } else if completes {
            "the clean finished (exit 0) without waiting; no run set up while it deleted"
                .to_string()
        } else {
            format!("the clean failed (exit {clean_code:?})")
        },
    );
    cx.see("no-deadlock", deadlock.0, true, deadlock.1);
    overtake(cx, run_spec, clean_spec, &[])?;
    // A prune deletes only what no run uses: a run setting up meanwhile cannot stop it.
    if clean_spec.kind != Kind::Prune {
        setup_while_deleting(cx, run_spec, clean_spec, &[])?;
    }
    if force {
        force_while_held(cx, run_spec, clean_spec)?;
    } else if clean_spec.kind == Kind::CleanForce {
        // The model's forced clean deletes without the lock when a run holds it; the
        // stand-in waits for the lock instead, so no play of this binary can show it.
        cx.unplayable(
            "mutual-exclusion",
            "this binary has no `clean --force`; its stand-in, plain `clean`, waits for the lock",
        );
    }
    if force {
        cx.log("clean --force ran");
    }
    Ok(())
}

/// `run-daemon,clean`: the run's child starts a daemon and exits; the clean starts once
/// the run has exited (the daemon still runs); the daemon checks its environment once
/// the clean has finished, or has shown that it waits.
///
/// The daemon's environment is the model's: the cached one holding the probe's files
/// (uv) or the marker (cachelock). uv's `run --with` also makes an ephemeral overlay
/// venv (`sys.prefix`) that uv itself removes when it exits, clean or not; the model
/// has it too (`Design::run_overlay`); its loss is recorded as a remark.
fn daemon_then_clean(cx: &mut Cx, run_spec: ProcSpec, clean_spec: ProcSpec) -> Result<(), String> {
    let mut run = cx.start_with(run_spec, &[("CLPROBE_DAEMON".into(), "1".into())])?;
    cx.ready(&mut run)?;
    let daemon = run.child_pid().unwrap_or_default();
    let env = run.child_env();
    let code = cx.finish(&mut run, FINISH)?;
    let daemon_locks = locks::held_by(daemon);
    let prefix_before = env.as_ref().is_some_and(|e| e.exists());
    cx.log(format!(
        "daemon (pid {daemon}) outlives {}; it holds {daemon_locks:?}; its sys.prefix exists: {prefix_before}",
        run.name
    ));
    if !prefix_before && env.is_some() {
        let s = "uv removed the run's own overlay venv (the daemon's sys.prefix) when it exited, before any clean (the model's run overlay, `Design::run_overlay`)".to_string();
        cx.obs.remarks.push(s);
    }
    let live: Vec<_> = env.iter().cloned().collect();
    let (mut clean, during, clean_code) = cx.clean_while(clean_spec, "the daemon", &live)?;
    let deleted_during = during && clean_code == Some(0);
    let deadlock = cx.deadlock_seen(&mut [&mut run, &mut clean]);
    run.go();
    let report = run.wait_report(FINISH)?;
    let clean_code = if during {
        clean_code
    } else {
        cx.finish(&mut clean, FINISH)?
    };
    if let Some(r) = &report {
        cx.log(format!(
            "daemon report: files ok {}, sys.prefix there {}",
            r.files_ok, r.prefix_ok
        ));
    }
    // Judged on the cached environment (see above).
    let report = report.map(|mut r| {
        r.ok = r.files_ok;
        r
    });
    cx.live_env(&run, code, report, false);
    // The run had exited (its exit code was read) before the clean started; what the
    // daemon inherited is in `/proc/locks`.
    let lock_ino = sys::inode(&cx.sb.lock_file());
    let daemon_holds = daemon_locks.iter().any(|l| Some(l.inode) == lock_ino);
    let me_fails = deleted_during && daemon_holds;
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!me_fails),
        daemon_holds,
        match (code, daemon_holds, deleted_during) {
            (_, true, true) => "the clean deleted while the daemon held the cache lock".to_string(),
            (_, true, false) => "the clean did not delete while the daemon held the cache lock".to_string(),
            (Some(c), false, _) => format!(
                "the run had exited ({c}) and its daemon held no cache lock: nobody held it while the clean deleted"
            ),
            (None, false, _) => "the run had not exited; its daemon held no cache lock".to_string(),
        },
    );
    cx.see(
        "clean-overlaps-child",
        Seen::holds_if(deleted_during),
        true,
        if deleted_during {
            "the clean got the cache while the daemon ran"
        } else {
            "the clean did not get the cache while the daemon ran"
        },
    );
    cx.see_clean_end(
        clean_code.is_some(),
        clean_code == Some(0),
        !deleted_during,
        if clean_code == Some(0) {
            "the clean finished (exit 0); no run set up while it deleted".to_string()
        } else {
            format!("the clean failed (exit {clean_code:?})")
        },
    );
    cx.see("no-deadlock", deadlock.0, true, deadlock.1);
    let daemon = [("CLPROBE_DAEMON".into(), "1".into())];
    overtake(cx, run_spec, clean_spec, &daemon)?;
    setup_while_deleting(cx, run_spec, clean_spec, &daemon)?;
    Ok(())
}

/// `run-no-cache[+crash]`: the run's child checks its environment; with `+crash` the run
/// is killed once its child runs.
fn no_cache(cx: &mut Cx, spec: ProcSpec) -> Result<(), String> {
    let mut run = cx.start(spec)?;
    let started = run.wait_ready(READY);
    let mut code = None;
    let deadlock = cx.deadlock_seen(&mut [&mut run]);
    if started {
        cx.log(format!(
            "{} child runs; TMPDIR holds {:?}",
            run.name,
            sys::entries(&cx.sb.tmp)
        ));
        if spec.crash {
            run.kill_self();
            cx.log(format!("SIGKILL {}", run.name));
        }
        run.go();
        if !spec.crash {
            code = cx.finish(&mut run, FINISH)?;
        }
    } else {
        code = cx.finish(&mut run, FINISH)?;
    }
    let report = if started {
        run.wait_report(FINISH)?
    } else {
        None
    };
    cx.live_env(&run, code, report, spec.crash);
    let left = sys::entries(&cx.sb.tmp).unwrap_or_default();
    cx.log(format!("TMPDIR after: {left:?}"));
    let leaked = format!(
        "{} temporary director{} remained in TMPDIR",
        left.len(),
        if left.len() == 1 { "y" } else { "ies" }
    );
    if spec.crash {
        // The property speaks only of runs where nothing was killed.
        cx.see(
            "no-leaked-temp",
            Seen::Holds,
            false,
            format!("vacuous (the run was killed); {leaked}"),
        );
    } else {
        let seen = Seen::holds_if(left.is_empty());
        let note = if left.is_empty() {
            "no temporary cache remained".to_string()
        } else {
            leaked
        };
        cx.see("no-leaked-temp", seen, true, note);
    }
    cx.see("no-deadlock", deadlock.0, true, deadlock.1);
    Ok(())
}

/// `run-nested-clean[+timeout]`: the child runs `clean` on its own cache and checks its
/// environment afterwards.
fn nested_clean(cx: &mut Cx, spec: ProcSpec) -> Result<(), String> {
    let clean = cx.runner.argv(Kind::Clean, &cx.sb);
    let json = serde_json::to_string(
        &clean
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| e.to_string())?;
    let mut run = cx.start_with(spec, &[("CLPROBE_EXEC".into(), json.into())])?;
    // The child signals before it runs the nested clean: what the run holds then, it
    // holds while the nested clean runs (the child holds it up until `go`).
    cx.ready(&mut run)?;
    let run_locks = cx.lock_held_by(&run);
    run.go();
    // The run exits once the nested clean has ended, or the nested clean is seen blocked
    // in a lock wait; one of them must happen. A nested clean whose wait times out by
    // itself is waited for.
    let outcome = if spec.timeout && cx.runner.has_lock_timeout() {
        Outcome::Exited(run.wait_exit(FINISH)?)
    } else {
        run.exit_or_block(FINISH, false)?
    };
    let stuck = matches!(outcome, Outcome::Blocked(..));
    let deadlock = cx.deadlock_seen(&mut [&mut run]);
    let mut report = None;
    let mut code = None;
    if let Outcome::Blocked(_, details) = &outcome {
        cx.log(format!(
            "{} blocked with its nested clean: {details}; locks: {:?}",
            run.name,
            locks::held_by(run.pid())
        ));
        run.kill_group();
    } else {
        code = cx.finish(&mut run, FINISH)?;
        report = run.wait_report(FINISH)?;
    }
    let exec = report.as_ref().and_then(|r| r.exec_code);
    if let Some(r) = &report {
        cx.log(format!(
            "nested clean exit {:?}: {:?}",
            r.exec_code,
            r.exec_stderr.lines().last()
        ));
    }
    let timed_out = exec == Some(2)
        && report
            .as_ref()
            .is_some_and(|r| sys::says_timeout(&r.exec_stderr));
    cx.see(
        "no-deadlock",
        deadlock.0,
        true,
        if deadlock.0 == Seen::Fails {
            format!(
                "{} (the nested clean waits for its own parent's shared lock)",
                deadlock.1
            )
        } else if timed_out {
            format!(
                "{}: the nested clean timed out (exit 2), so the run finished",
                deadlock.1
            )
        } else {
            format!("{}: the nested clean did not wait", deadlock.1)
        },
    );
    let completes = exec == Some(0) || (spec.timeout && timed_out);
    cx.see_clean_end(
        !stuck && exec.is_some(),
        exec == Some(0),
        true,
        if stuck {
            "the nested clean never finished".to_string()
        } else if timed_out {
            "the nested clean ended with its timeout".to_string()
        } else if completes {
            "the nested clean finished (exit 0) while its parent ran".to_string()
        } else {
            format!("the nested clean failed (exit {exec:?})")
        },
    );
    if !stuck {
        cx.live_env(&run, code, report, false);
    }
    cx.see(
        "clean-overlaps-child",
        Seen::holds_if(exec == Some(0)),
        true,
        if exec == Some(0) {
            "the nested clean got the cache while its parent's child ran"
        } else {
            "the nested clean never got the cache"
        },
    );
    let me_fails = exec == Some(0) && !run_locks.is_empty();
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!me_fails),
        exec == Some(0),
        match (exec == Some(0), run_locks.is_empty()) {
            (true, false) => "the nested clean deleted while its parent held the cache lock",
            (true, true) => "the parent held no cache lock while the nested clean deleted",
            (false, _) => "the nested clean did not delete (it did not exit 0)",
        },
    );
    Ok(())
}

/// `run,run`: both children must run at the same time.
fn two_runs(cx: &mut Cx) -> Result<(), String> {
    let spec = ProcSpec {
        kind: Kind::Run,
        crash: false,
        timeout: false,
        policy: None,
    };
    let mut a = cx.start(spec)?;
    cx.ready(&mut a)?;
    let la = cx.lock_held_by(&a);
    let mut b = cx.start(spec)?;
    // The second child starts, or the second run is seen waiting for a lock (or exits).
    let second = b.exit_or_block(READY, true)?;
    cx.log(format!("{} while run#1's child runs: {second:?}", b.name));
    let both = second == Outcome::Ready;
    let lb = cx.lock_held_by(&b);
    let deadlock = cx.deadlock_seen(&mut [&mut a, &mut b]);
    let shared = both && !la.is_empty() && !lb.is_empty();
    cx.see(
        "runs-share-lock",
        Seen::holds_if(shared),
        // Only a runner that holds the lock while its child runs can show the witness
        // here; one that holds it only while it builds needs two builds to overlap.
        !la.is_empty(),
        if shared {
            "both runs held the shared lock while their children ran"
        } else if both {
            "both children ran, but the runs held no lock while they did"
        } else {
            "the second run's child did not start while the first ran"
        },
    );
    a.go();
    b.go();
    let ca = cx.finish(&mut a, FINISH)?;
    let cb = cx.finish(&mut b, FINISH)?;
    let (ra, rb) = (a.wait_report(FINISH)?, b.wait_report(FINISH)?);
    cx.live_env(&a, ca, ra, false);
    let first = cx.obs.props.pop();
    cx.live_env(&b, cb, rb, false);
    let second = cx.obs.props.pop();
    for p in [first, second].into_iter().flatten() {
        if p.seen == Seen::Fails || cx.obs.get("live-env-intact").is_none() {
            cx.obs.props.retain(|q| q.property != "live-env-intact");
            cx.obs.props.push(p);
        }
    }
    cx.see("no-deadlock", deadlock.0, true, deadlock.1);
    share(cx, spec)?;
    Ok(())
}

/// `runs-share-lock`, forced where runs hold the cache lock only while they set up: the
/// first run is held by the gate at its first step after its shared lock on `.lock` was
/// granted; the second runs until it holds the lock too (held likewise) or is seen
/// blocked in a lock wait.
fn share(cx: &mut Cx, spec: ProcSpec) -> Result<(), String> {
    let sb = Sandbox::new(&cx.sb.wheels, &cx.sb.python).map_err(|e| e.to_string())?;
    cx.log("another play: both runs held while they hold the shared lock");
    let mut a = cx.start_gated(Some(&sb), spec, &[])?;
    let first = a.until(gated::after_shared_lock(&sb.cache))?;
    cx.log(format!("{}: {first:?}", a.name));
    if !matches!(first, Reached::Held(_)) {
        return Err(format!(
            "{} never held the cache lock: {first:?}; stderr:\n{}",
            a.name,
            a.stderr()
        ));
    }
    let mut b = cx.start_gated(Some(&sb), spec, &[])?;
    let second = b.until(gated::after_shared_lock(&sb.cache))?;
    cx.log(format!(
        "{} while {} holds the lock: {second:?}",
        b.name, a.name
    ));
    let shared = matches!(second, Reached::Held(_));
    let (ca, cb) = (run_go(&mut a)?, run_go(&mut b)?);
    cx.log(format!("the other play ended: exits {ca} and {cb}"));
    cx.see(
        "runs-share-lock",
        Seen::holds_if(shared),
        true,
        if shared {
            "both runs held the shared lock at once (each held by the gate just after its grant)"
        } else {
            "the second run waited while the first held the shared lock"
        },
    );
    Ok(())
}

/// `run,clean,run`: the second run starts while the clean waits for the first.
fn overtaking(cx: &mut Cx) -> Result<(), String> {
    let run = ProcSpec {
        kind: Kind::Run,
        crash: false,
        timeout: false,
        policy: None,
    };
    let mut a = cx.start(run)?;
    cx.ready(&mut a)?;
    cx.lock_held_by(&a);
    let mut clean = cx.start(ProcSpec {
        kind: Kind::Clean,
        ..run
    })?;
    // The clean exits (the first run held nothing it waits for) or is seen blocked.
    let first = clean.exit_or_block(FINISH, false)?;
    cx.log(format!(
        "{} while run#1's child runs: {first:?}",
        clean.name
    ));
    let early = matches!(first, Outcome::Exited(_));
    // Looked at before the later run starts: that run may rebuild the environment at
    // the same path (cachelock names environments, uv does not), hiding the loss.
    let a_env = a.child_env();
    let a_env_gone = early && a_env.as_ref().is_some_and(|e| !e.exists());
    if early {
        cx.log(format!(
            "after the clean, run#1's environment {a_env:?} exists: {}",
            !a_env_gone
        ));
    }
    let mut b = cx.start(run)?;
    // The later run's child starts (it overtook the waiting clean), or the later run is
    // seen blocked in a lock wait (or exits).
    let later = b.exit_or_block(READY, true)?;
    cx.log(format!("{} while the clean waits: {later:?}", b.name));
    let b_ready = later == Outcome::Ready;
    let clean_done_before_b = early || clean.code().is_some();
    cx.log(format!(
        "clean {} when run#3 started; run#3 child {}",
        if early { "had finished" } else { "was waiting" },
        if b_ready { "runs" } else { "did not run" }
    ));
    if early {
        // The clean got the cache at once (the first run held no lock while its child
        // ran): the window is forced in a play of its own.
        cx.log("the clean got the cache at once");
    } else {
        let overtook = b_ready && !clean_done_before_b;
        cx.see(
            "no-overtaking",
            Seen::holds_if(!overtook),
            true,
            if overtook {
                "a run started after the waiting clean got the shared lock first"
            } else {
                "the later run waited for the clean"
            },
        );
    }
    a.go();
    b.go();
    let ca = cx.finish(&mut a, FINISH)?;
    let cb = cx.finish(&mut b, FINISH)?;
    let cc = cx.finish(&mut clean, FINISH)?;
    let ra = a.wait_report(FINISH)?;
    let rb = b.wait_report(FINISH)?;
    cx.live_env(&a, ca, ra, false);
    if cx
        .obs
        .get("live-env-intact")
        .is_some_and(|p| p.seen == Seen::Holds)
    {
        cx.obs.props.retain(|q| q.property != "live-env-intact");
        if a_env_gone {
            cx.see(
                "live-env-intact",
                Seen::Fails,
                true,
                "the clean deleted the running child's environment (the later run rebuilt it in place before the child looked)",
            );
        } else {
            cx.live_env(&b, cb, rb, false);
        }
    }
    if cc == Some(0) && !early {
        cx.remark_cache_after_clean();
        cx.removes_unused(&[], "once both children had exited");
    }
    cx.see_clean_end(
        cc.is_some(),
        cc == Some(0),
        // A clean that got the cache at once did not meet the later run setting up
        // between its delete and its remove-root.
        !early,
        if cc == Some(0) {
            "the clean finished (exit 0)"
        } else {
            "the clean did not finish"
        },
    );
    if early {
        let clean = ProcSpec {
            kind: Kind::Clean,
            ..run
        };
        overtake(cx, run, clean, &[])?;
        setup_while_deleting(cx, run, clean, &[])?;
    }
    Ok(())
}

/// `clean,run,clean`: the first clean is held by the gate at its first deletion, after
/// its exclusive lock on `.lock` was granted; the run starts and is seen blocked on that
/// lock (the run has opened `.lock`, and under the uv-0.8 policies made its scaffold,
/// while the clean deletes); the clean is let go, and the second clean starts once the
/// run's child runs. The gate holds the clean at the step itself: the interleaving is
/// forced every time, whatever the speed of the machine.
fn orphaned_lock(cx: &mut Cx) -> Result<(), String> {
    fill(&cx.sb.cache).map_err(|e| e.to_string())?;
    let clean_spec = ProcSpec {
        kind: Kind::Clean,
        crash: false,
        timeout: false,
        policy: None,
    };
    let run_spec = ProcSpec {
        kind: Kind::Run,
        ..clean_spec
    };
    let lock = cx.sb.lock_file();
    let ino = sys::inode(&lock);
    // The point: clean#1's exclusive lock on `.lock` was granted and it is about to
    // delete its first entry.
    let mut c1 = cx.start_gated(None, clean_spec, &[])?;
    let at = match c1.until(gated::at_delete_under_lock())? {
        Reached::Held(at) => at,
        other => {
            return Err(format!(
                "{} did not reach its first deletion under the lock: {other:?}",
                c1.name
            ));
        }
    };
    let pid = c1.pid;
    let locked = sys::inode(&lock);
    cx.log(format!(
        "clean#1 held by the gate at `{at}`, holding the exclusive lock on .lock (inode {locked:?}; before it ran: {ino:?})"
    ));
    let mut run = cx.start(run_spec)?;
    let first = run.exit_or_block(READY, true);
    // What the run waits for must be a lock clean#1 holds (`.lock`, or under cachelock
    // an announcement of the clean).
    let waited = wait::waited_inodes(&process::group_members(run.pid()));
    let c1_holds: Vec<u64> = locks::held_by(pid).iter().map(|l| l.inode).collect();
    let on_old = waited.iter().any(|i| c1_holds.contains(i));
    cx.log(format!(
        "{} while clean#1 is held: {first:?}; waits on {waited:?}, clean#1 holds {c1_holds:?}",
        run.name
    ));
    let first = first?;
    let c1_code = Some(c1.go()?);
    let c1_err = c1.stderr();
    cx.log(format!("{} exit {c1_code:?}", c1.name));
    let blocked_on_c1 = matches!(first, Outcome::Blocked(..)) && on_old;
    let ready = run.wait_ready(READY) && run.ready.exists();
    if !ready {
        let code = cx.finish(&mut run, FINISH)?;
        cx.log(format!(
            "{} never started its child (exit {code:?}); stderr:\n{}",
            run.name,
            run.stderr()
        ));
        // Judged as it is: a run that lost its files is a real failure of the
        // environment it was setting up.
        cx.live_env(&run, code, None, false);
        cx.see_clean_end(
            c1_code.is_some(),
            c1_code == Some(0),
            blocked_on_c1,
            "first clean",
        );
        return Ok(());
    }
    let now = sys::inode(&lock);
    // Locks on `.lock`, the inode clean#1 locked or the one there now; not cachelock's
    // environment locks.
    let run_locks: Vec<_> = locks::held_by(run.pid())
        .into_iter()
        .filter(|l| Some(l.inode) == locked || Some(l.inode) == now)
        .collect();
    let orphan = run_locks.iter().any(|l| Some(l.inode) != now);
    cx.log(format!(
        "run child runs; run holds {run_locks:?}; .lock now inode {now:?} (orphaned: {orphan})"
    ));
    let mut c2 = cx.start(clean_spec)?;
    // The second clean exits (nothing it waits for is held) or is seen blocked.
    let second = c2.exit_or_block(FINISH, false)?;
    cx.log(format!(
        "{} while the run's child runs: {second:?}",
        c2.name
    ));
    let c2_during = second == Outcome::Exited(0);
    run.go();
    let code = cx.finish(&mut run, FINISH)?;
    let report = run.wait_report(FINISH)?;
    let c2_code = cx.finish(&mut c2, FINISH)?;
    cx.live_env(&run, code, report, false);
    let holder = !run_locks.is_empty();
    let me_fails = c2_during && holder;
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!me_fails),
        holder,
        if me_fails {
            "the second clean deleted while the run held a shared lock on the orphaned `.lock` inode"
        } else if c2_during {
            "the run held no lock while its child ran"
        } else {
            "the second clean waited for the run"
        },
    );
    let c1_ok = c1_code == Some(0);
    cx.see_clean_end(
        c1_code.is_some() && c2_code.is_some(),
        c1_ok && c2_code == Some(0),
        // The window that stops a clean is a run setting up while it deletes.
        blocked_on_c1,
        if !c1_ok {
            let why = if c1_err.contains("not empty") {
                "Directory not empty"
            } else {
                "error"
            };
            format!("the first clean failed ({why})")
        } else if c2_code == Some(0) {
            "both cleans finished (exit 0)".to_string()
        } else {
            "the second clean failed".to_string()
        },
    );
    orphan_holder(cx, run_spec, clean_spec)?;
    overtake(cx, run_spec, clean_spec, &[])
}

/// `mutual-exclusion` in `clean,run,clean`, forced as the model's counterexample has it:
/// the first clean is held at its first deletion under its exclusive lock; the run starts
/// and is seen blocked; the first clean goes on to its end; the run, granted its shared
/// lock (on the `.lock` inode the first clean had, which it may have unlinked), is held
/// just after the grant; the second clean runs until it reaches a deletion under its own
/// exclusive lock (it deletes while the run holds a lock), is seen blocked, or ends.
fn orphan_holder(cx: &mut Cx, run_spec: ProcSpec, clean_spec: ProcSpec) -> Result<(), String> {
    let sb = another_sandbox(cx)?;
    cx.log("another play: the run held while it holds its shared lock, the second clean beside it");
    let mut c1 = cx.start_gated(Some(&sb), clean_spec, &[])?;
    let at = c1.until(gated::at_delete_under_lock())?;
    if !matches!(at, Reached::Held(_)) {
        return Err(format!(
            "{} did not reach its deletion under the lock: {at:?}",
            c1.name
        ));
    }
    let mut run = cx.start_gated(Some(&sb), run_spec, &[])?;
    let first = run.until(gated::after_shared_lock(&sb.cache))?;
    cx.log(format!("{} while {} deletes: {first:?}", run.name, c1.name));
    let c1_code = c1.go()?;
    let held = if matches!(first, Reached::Held(_)) {
        first
    } else {
        run.until(gated::after_shared_lock(&sb.cache))?
    };
    cx.log(format!(
        "{} exit {c1_code}; then {}: {held:?}",
        c1.name, run.name
    ));
    if !matches!(held, Reached::Held(_)) {
        // The run ended without holding the cache: nothing to delete under.
        cx.log(format!("{} never held the cache lock", run.name));
        return Ok(());
    }
    let mut c2 = cx.start_gated(Some(&sb), clean_spec, &[])?;
    let second = c2.until(gated::at_delete_under_lock())?;
    cx.log(format!(
        "{} while {} holds its lock: {second:?}",
        c2.name, run.name
    ));
    let deletes = matches!(second, Reached::Held(_));
    let (a, b) = (run_go(&mut run)?, c2.go()?);
    cx.log(format!("the other play ended: exits {a} then {b}"));
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!deletes),
        true,
        if deletes {
            "the second clean deleted under its lock while the run held a shared lock on the orphaned `.lock` inode"
        } else {
            "the second clean did not delete while the run held its shared lock"
        },
    );
    Ok(())
}

/// A further play of a scenario, in a sandbox of its own whose cache has entries for a
/// clean to delete (the model's cleans find a cache there).
fn another_sandbox(cx: &Cx) -> Result<Sandbox, String> {
    let sb = Sandbox::new(&cx.sb.wheels, &cx.sb.python).map_err(|e| e.to_string())?;
    fill(&sb.cache).map_err(|e| e.to_string())?;
    Ok(sb)
}

/// `no-overtaking`, forced as the model's shortest counterexample has it: the clean
/// starts (it opens `.lock`, and announces itself where the policy does) and is held by
/// the gate at its exclusive lock call; a run starts after it and runs until it holds
/// the cache's shared lock (held at its next step) or is seen blocked in a lock wait.
/// A run holding the lock got the cache before the clean: the clean's lock call is then
/// released and seen blocked, or, for a `clean --force` that does not wait, seen to
/// reach its deletion while the run holds the lock (`mutual-exclusion`).
fn overtake(
    cx: &mut Cx,
    run_spec: ProcSpec,
    clean_spec: ProcSpec,
    extra: &[(OsString, OsString)],
) -> Result<(), String> {
    let sb = another_sandbox(cx)?;
    // The counterexample needs no crash and no timeout.
    let run_spec = ProcSpec {
        crash: false,
        ..run_spec
    };
    cx.log("another play: the clean held at its lock call, a run started after it");
    let mut clean = cx.start_gated(Some(&sb), clean_spec, &[])?;
    match clean.until(gated::at_exclusive_lock(&sb.cache))? {
        Reached::Held(at) => cx.log(format!("{} held at `{at}`", clean.name)),
        other => {
            return Err(format!(
                "{} did not reach its exclusive lock call: {other:?}; stderr:\n{}",
                clean.name,
                clean.stderr()
            ));
        }
    }
    let mut run = cx.start_gated(Some(&sb), run_spec, extra)?;
    let reached = run.until(gated::after_shared_lock(&sb.cache))?;
    cx.log(format!("{} started after the clean: {reached:?}", run.name));
    let overtook = match &reached {
        Reached::Held(_) => true,
        Reached::Blocked(_) => false,
        Reached::Ended(code) => {
            return Err(format!(
                "{} ended ({code:?}) without holding the cache lock or waiting; stderr:\n{}",
                run.name,
                run.stderr()
            ));
        }
    };
    let settled = clean.release()?;
    cx.log(format!("{}'s exclusive lock call: {settled:?}", clean.name));
    let real_force =
        clean_spec.kind == Kind::CleanForce && cx.runner.stand_in(Kind::CleanForce).is_none();
    if overtook {
        // The clean waits (blocked), or its try was refused (`LOCK_NB`): then it either
        // waits in a blocking retry or, forced, deletes without the lock.
        let (waits, how) = match settled {
            Settled::Blocked => (true, "waited"),
            Settled::Returned(0) => {
                return Err(format!(
                    "{} got the exclusive lock while {} held the shared lock",
                    clean.name, run.name
                ));
            }
            Settled::Returned(_) | Settled::Gone => {
                let next = clean.until(gated::at_delete())?;
                cx.log(format!(
                    "{} after its try was refused: {next:?}",
                    clean.name
                ));
                match next {
                    Reached::Held(_) => (false, "deleted"),
                    Reached::Blocked(_) => (true, "waited"),
                    Reached::Ended(_) => (true, "gave up"),
                }
            }
        };
        if real_force {
            cx.see(
                "mutual-exclusion",
                Seen::holds_if(waits),
                true,
                format!("the forced clean {how} while a run held the shared lock"),
            );
        }
    }
    // Whoever holds the cache goes first; the other follows.
    let (first, second) = if overtook {
        (&mut run, &mut clean)
    } else {
        (&mut clean, &mut run)
    };
    let (a, b) = (run_go(first)?, run_go(second)?);
    cx.log(format!("the other play ended: exits {a} then {b}"));
    cx.see(
        "no-overtaking",
        Seen::holds_if(!overtook),
        true,
        if overtook {
            "a run started after the clean (held at its lock call) got the shared lock first"
        } else {
            "a run started after the clean (held at its lock call) waited for it"
        },
    );
    Ok(())
}

/// `mutual-exclusion` for a `clean --force`: a run is held by the gate just after its
/// shared lock on `.lock` was granted; the forced clean then runs until it reaches a
/// deletion (it deletes while the run holds the lock), is seen blocked, or ends.
fn force_while_held(cx: &mut Cx, run_spec: ProcSpec, clean_spec: ProcSpec) -> Result<(), String> {
    let sb = another_sandbox(cx)?;
    let run_spec = ProcSpec {
        crash: false,
        ..run_spec
    };
    cx.log("another play: a forced clean while a run holds the shared lock");
    let mut run = cx.start_gated(Some(&sb), run_spec, &[])?;
    let first = run.until(gated::after_shared_lock(&sb.cache))?;
    if !matches!(first, Reached::Held(_)) {
        return Err(format!("{} never held the cache lock: {first:?}", run.name));
    }
    let mut clean = cx.start_gated(Some(&sb), clean_spec, &[])?;
    let next = clean.until(gated::at_delete())?;
    cx.log(format!(
        "{} while {} holds the lock: {next:?}",
        clean.name, run.name
    ));
    let deletes = matches!(next, Reached::Held(_));
    let (a, b) = (run_go(&mut run)?, run_go(&mut clean)?);
    cx.log(format!("the other play ended: exits {a} then {b}"));
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!deletes),
        true,
        if deletes {
            "the forced clean deleted while a run held the shared lock"
        } else {
            "the forced clean did not delete while a run held the shared lock"
        },
    );
    Ok(())
}

/// Lets a gated process and its probe child go, and waits until they have exited.
fn run_go(p: &mut Gated) -> Result<i32, String> {
    p.let_child_go();
    p.go()
}

/// `clean-succeeds` (and `clean-terminates`), forced where the model breaks it: a run
/// sets up (its scaffold, `.lock`) while the clean deletes. The clean is held by the gate
/// at its first deletion under its exclusive lock; a run starts and runs until it is
/// seen blocked in a lock wait; then the clean goes on and its exit is seen.
fn setup_while_deleting(
    cx: &mut Cx,
    run_spec: ProcSpec,
    clean_spec: ProcSpec,
    extra: &[(OsString, OsString)],
) -> Result<(), String> {
    let sb = another_sandbox(cx)?;
    let run_spec = ProcSpec {
        crash: false,
        ..run_spec
    };
    cx.log("another play: a run sets up while the clean deletes");
    let mut clean = cx.start_gated(Some(&sb), clean_spec, &[])?;
    match clean.until(gated::at_delete_under_lock())? {
        Reached::Held(at) => cx.log(format!("{} held at `{at}`", clean.name)),
        other => {
            return Err(format!(
                "{} did not reach its deletion under the lock: {other:?}; stderr:\n{}",
                clean.name,
                clean.stderr()
            ));
        }
    }
    let mut run = cx.start_gated(Some(&sb), run_spec, extra)?;
    let reached = run.until(gated::after_shared_lock(&sb.cache))?;
    cx.log(format!("{} while the clean deletes: {reached:?}", run.name));
    let waited = matches!(reached, Reached::Blocked(_));
    let code = clean.go()?;
    let err = clean.stderr();
    let run_code = run_go(&mut run)?;
    cx.log(format!(
        "{} exit {code}, {} exit {run_code}",
        clean.name, run.name
    ));
    cx.see_clean_end(
        true,
        code == 0,
        waited,
        if code == 0 {
            "the clean finished (exit 0) though a run set up while it deleted".to_string()
        } else if err.contains("not empty") {
            "a run set up while the clean deleted: the clean failed (Directory not empty)"
                .to_string()
        } else {
            format!("a run set up while the clean deleted: the clean failed (exit {code})")
        },
    );
    Ok(())
}

/// Gives the cache entries for a clean to delete.
pub(super) fn fill(cache: &std::path::Path) -> std::io::Result<()> {
    let base = cache.join("wheels-v5").join("filler");
    for d in 0..FILL_DIRS {
        let dir = base.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..FILL_FILES {
            std::fs::write(dir.join(format!("f{f:03}")), b"x")?;
        }
    }
    std::fs::write(
        cache.join("CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
}

// Entries for the clean to delete (the gate holds it at the first); the size decides
// nothing.
const FILL_DIRS: usize = 2;
const FILL_FILES: usize = 2;
