//! The mixed scenarios (`run,clean@uv-0.13`): processes of the `cachelock` command under
//! the default policy (`cachelock-fenced`) beside processes of a real uv release, on one
//! cache, each scenario played with the interleaving that decides it forced by the gate.
//!
//! A [`Mixed`] runner starts each process with the binary its scenario token names: a
//! token with `@uv-0.13` or `@uv-0.8.20` is the uv 0.13.9 or 0.8.20 binary, a token
//! without `@` the `cachelock` binary under the checked policy. Both see the same cache
//! (`UV_CACHE_DIR` for uv, `--cache-dir` for cachelock) and the same `TMPDIR`.
//!
//! The scenario's own play and its further plays are those of the uniform suite
//! ([`super::scenarios::play`]: the clean started while the run's child runs, the clean
//! held at its exclusive lock call while a run starts after it, the clean held at its
//! first deletion under the lock while a run sets up, a forced clean while a run holds
//! the lock). Where the checked policy's clean meets an old run, three observations are
//! made here instead, because the uniform suite reads `mutual-exclusion` off "a clean
//! deleted while another held `.lock`", which is `root-lock-exclusion`: the default's
//! clean that finds `.lock` busy goes on beside its holder and deletes only its own
//! layout's unlocked environments, which `.lock` does not protect. So a play of its own
//! ([`own_layout_beside_old_run`]) leaves an unlocked environment of cachelock's layout
//! in the cache, holds an old run's child running (the old run holds `.lock` shared),
//! runs the clean to its end, and compares the cache's entries before and after:
//! anything of uv's layout gone breaks `mutual-exclusion`, anything at all gone breaks
//! `root-lock-exclusion`. Another ([`old_run_ends_beside_clean`]) forces the model's
//! `clean-removes-unused` counterexample: the old run's child has exited and the run is
//! held by the gate at its release of `.lock` while the clean runs.
//!
//! `run,clean@uv-0.8.20,clean@uv-0.8.20`, uv 0.8.19-0.12's orphaned-`.lock` race with a
//! new run as its victim, has its own driver ([`orphaned_race`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cachelock_inspect::locks;
use cachelock_model::protocol::Step;
use cachelock_model::{Kind, Policy, ProcSpec, Scenario};

use super::cachelock::Cachelock;
use super::gated::{self, Gated, HoldAt, Reached};
use super::scenarios::{fill, overtaking_alone, play};
use super::sys::{self, Outcome, Proc};
use super::{Observation, Runner, Sandbox, Seen, Setup, UvBinary};

/// The mixed scenarios the suite plays (model syntax; a subset of the model's
/// `MIXED_SCENARIOS`), in table order.
pub const MIXED: [&str; 8] = [
    "run,clean@uv-0.13",
    "run,clean@uv-0.8.20",
    "run-script,prune@uv-0.13",
    "tool-run,clean-force@uv-0.13",
    "run@uv-0.13,clean",
    "run@uv-0.8.20,clean",
    "tool-run@uv-0.13,clean-force",
    "run,clean@uv-0.8.20,clean@uv-0.8.20",
];

/// The policy every process without `@` runs: the command's default.
pub const CHECKED: Policy = Policy::CachelockFenced;

/// Bounds a process that neither exits nor blocks (a failure, not a verdict).
const FINISH: Duration = Duration::from_secs(180);

/// The processes of one mixed scenario: each kind is started by the binary of the
/// policy its token names. The suite's mixed scenarios name each kind once (or, for two
/// processes of one kind, the same policy twice), so a kind decides the binary.
pub struct Mixed {
    /// `cachelock` under [`CHECKED`].
    pub cachelock: Cachelock,
    /// The uv releases, by policy.
    pub uvs: Vec<UvBinary>,
    /// Each process's kind and the policy it runs (`None`: the checked one).
    pub procs: Vec<(Kind, Option<Policy>)>,
}

impl Mixed {
    /// The runner for `scenario`; an error if a kind is named with two policies, or a
    /// policy has no binary here.
    pub fn new(cachelock: &Path, uvs: &[UvBinary], scenario: &Scenario) -> Result<Mixed, String> {
        let mut procs: Vec<(Kind, Option<Policy>)> = Vec::new();
        for p in &scenario.procs {
            match procs.iter().find(|(k, _)| *k == p.kind) {
                Some((_, q)) if *q != p.policy => {
                    return Err(format!(
                        "`{}` is named with two policies: no driver tells them apart",
                        p.kind.token()
                    ));
                }
                Some(_) => {}
                None => procs.push((p.kind, p.policy)),
            }
            if let Some(pol) = p.policy
                && !uvs.iter().any(|u| u.policy == pol)
            {
                return Err(format!("no uv binary plays policy {pol}"));
            }
        }
        Ok(Mixed {
            cachelock: Cachelock {
                path: cachelock.to_path_buf(),
                policy: CHECKED,
            },
            uvs: uvs
                .iter()
                .map(|u| UvBinary {
                    version: u.version.clone(),
                    path: u.path.clone(),
                    policy: u.policy,
                })
                .collect(),
            procs,
        })
    }

    /// The runner that starts processes of `kind`.
    fn runner(&self, kind: Kind) -> &dyn Runner {
        let policy = self
            .procs
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|p| p.1);
        match policy.and_then(|pol| self.uvs.iter().find(|u| u.policy == pol)) {
            Some(u) => u,
            None => &self.cachelock,
        }
    }

    /// The uv releases the scenario names, as `uv 0.13.9`.
    fn uv_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for (_, pol) in &self.procs {
            if let Some(u) = pol.and_then(|pol| self.uvs.iter().find(|u| u.policy == pol)) {
                let l = u.label();
                if !v.contains(&l) {
                    v.push(l);
                }
            }
        }
        v
    }
}

impl Runner for Mixed {
    fn label(&self) -> String {
        format!(
            "cachelock {} beside {}",
            self.cachelock.policy.name(),
            self.uv_labels().join(", ")
        )
    }

    fn policy(&self) -> Policy {
        CHECKED
    }

    fn argv(&self, kind: Kind, sb: &Sandbox) -> Vec<OsString> {
        self.runner(kind).argv(kind, sb)
    }

    fn env(&self, sb: &Sandbox, timeout: bool) -> Vec<(OsString, OsString)> {
        // Each binary reads only its own variables: the union serves both.
        let mut e = self.cachelock.env(sb, timeout);
        for u in &self.uvs {
            for kv in u.env(sb, timeout) {
                if !e.iter().any(|(k, _)| *k == kv.0) {
                    e.push(kv);
                }
            }
        }
        e
    }

    fn has_lock_timeout(&self) -> bool {
        // No scenario of the mixed suite has `+timeout`.
        false
    }

    fn stand_in(&self, kind: Kind) -> Option<&'static str> {
        self.runner(kind).stand_in(kind)
    }
}

/// Plays the mixed `scenario` with the `cachelock` binary at `cachelock` and the uv
/// releases `uvs`; the observation is judged against the model under [`CHECKED`].
pub fn play_mixed(
    setup: &Setup,
    cachelock: &Path,
    uvs: &[UvBinary],
    scenario: &str,
) -> Result<Observation, String> {
    let sc = Scenario::parse(scenario).map_err(|e| e.to_string())?;
    let mixed = Mixed::new(cachelock, uvs, &sc)?;
    let kinds: Vec<(Kind, Option<Policy>)> = sc.procs.iter().map(|p| (p.kind, p.policy)).collect();
    match kinds.as_slice() {
        [(r, None), (Kind::Clean, Some(a)), (Kind::Clean, Some(b))] if r.is_run() && a == b => {
            let mut cx = Cx::new(&mixed, setup, scenario);
            orphaned_race(&mut cx, sc.procs[0], sc.procs[1])?;
            Ok(cx.obs)
        }
        [(r, Some(_)), (c, None)] if r.is_run() && c.is_clean() => {
            let mut obs = play(&mixed, setup, scenario)?;
            let mut cx = Cx::new(&mixed, setup, scenario);
            cx.obs.log = std::mem::take(&mut obs.log);
            own_layout_beside_old_run(&mut cx, sc.procs[0], sc.procs[1])?;
            old_run_ends_beside_clean(&mut cx, sc.procs[0], sc.procs[1])?;
            // These observations replace the uniform plays' (see the module doc).
            for p in std::mem::take(&mut cx.obs.props) {
                obs.props.retain(|q| q.property != p.property);
                obs.props.push(p);
            }
            obs.log = cx.obs.log;
            Ok(obs)
        }
        [(r, None), (c, Some(_))] if r.is_run() && c.is_clean() => play(&mixed, setup, scenario),
        _ => Err(format!("no mixed driver for `{scenario}`")),
    }
}

/// The state of the plays made here.
struct Cx<'a> {
    mixed: &'a Mixed,
    setup: &'a Setup,
    obs: Observation,
    count: usize,
}

impl<'a> Cx<'a> {
    fn new(mixed: &'a Mixed, setup: &'a Setup, scenario: &str) -> Cx<'a> {
        Cx {
            mixed,
            setup,
            obs: Observation {
                scenario: scenario.to_string(),
                runner: mixed.label(),
                policy: CHECKED,
                props: Vec::new(),
                remarks: Vec::new(),
                log: Vec::new(),
            },
            count: 0,
        }
    }

    fn log(&mut self, line: impl Into<String>) {
        self.obs.log.push(line.into());
    }

    fn sandbox(&self) -> Result<Sandbox, String> {
        Sandbox::new(&self.setup.wheels(), &self.setup.python).map_err(|e| e.to_string())
    }

    fn name(&mut self, spec: ProcSpec) -> String {
        self.count += 1;
        let who = spec.policy.map_or(String::new(), |p| format!("@{p}"));
        format!("{}{who}#m{}", spec.kind.token(), self.count)
    }

    /// Starts `spec` in `sb` under the gate, driven step by step.
    fn gated(&mut self, sb: &Sandbox, spec: ProcSpec) -> Result<Gated, String> {
        let argv = self.mixed.argv(spec.kind, sb);
        self.gated_argv(sb, spec, argv)
    }

    /// As [`Cx::gated`], with the command line `argv`.
    fn gated_argv(
        &mut self,
        sb: &Sandbox,
        spec: ProcSpec,
        argv: Vec<OsString>,
    ) -> Result<Gated, String> {
        let name = self.name(spec);
        let env = self.mixed.env(sb, false);
        let g = Gated::spawn(&name, &sb.root, &argv, &env, &sb.cache, FINISH)?;
        self.log(format!("start {name} (pid {}) under the gate", g.pid));
        Ok(g)
    }

    /// Starts `spec` in `sb` under the gate, run until it exits, blocks or signals.
    fn proc(&mut self, sb: &Sandbox, spec: ProcSpec) -> Result<Proc, String> {
        let name = self.name(spec);
        let argv = self.mixed.argv(spec.kind, sb);
        let env = self.mixed.env(sb, false);
        let p = Proc::spawn(&name, &sb.root, &argv, &env, &sb.cache, FINISH)?;
        self.log(format!("start {name} (pid {}) under the gate", p.pid()));
        Ok(p)
    }

    /// Records an observation (see [`Observation::record`]).
    fn see(&mut self, property: &'static str, seen: Seen, forced: bool, note: impl Into<String>) {
        self.obs.record(property, seen, forced, note.into());
    }
}

/// The entries below `cache`, as paths relative to it, sorted; `own` selects those of
/// cachelock's own layout (`environments/`, `builds/`, `.cleans/`), else those of uv's
/// (everything else but `.lock`, which no clean of either deletes under a lock).
fn entries(cache: &Path, own: bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let r = rel.join(e.file_name());
            out.push(r.clone());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), &r, out);
            }
        }
    }
    let mut all = Vec::new();
    walk(cache, Path::new(""), &mut all);
    let own_layout = |p: &PathBuf| {
        p.components().next().is_some_and(|c| {
            ["environments", "builds", ".cleans"].contains(&c.as_os_str().to_str().unwrap_or(""))
        })
    };
    let mut v: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| own_layout(p) == own && p != Path::new(".lock"))
        .collect();
    v.sort();
    v
}

/// True if `pid` holds a lock on the file now at `<cache>/.lock`.
fn holds_cache_lock(pid: u32, cache: &Path) -> bool {
    let ino = sys::inode(&cache.join(".lock"));
    locks::held_by(pid).iter().any(|l| Some(l.inode) == ino)
}

/// The checked policy's clean beside an old run whose child runs (`mutual-exclusion`,
/// `root-lock-exclusion`, and the child's environment): a finished `cachelock run`
/// leaves an unlocked environment of cachelock's layout; the old run's child is started
/// and runs (the old run holds `.lock` shared); the clean runs until it exits or blocks;
/// the cache's entries before and after say what it deleted beside the holder.
fn own_layout_beside_old_run(
    cx: &mut Cx,
    run_spec: ProcSpec,
    clean_spec: ProcSpec,
) -> Result<(), String> {
    let sb = cx.sandbox()?;
    cx.log(
        "another play: an unlocked cachelock environment, an old run's child running, the clean",
    );
    let earlier = ProcSpec {
        kind: Kind::Run,
        crash: false,
        timeout: false,
        policy: None,
    };
    // The scenario's run is the old release's: this one is the `cachelock` binary's.
    let argv = cx.mixed.cachelock.argv(Kind::Run, &sb);
    let mut pre = cx.gated_argv(&sb, earlier, argv)?;
    pre.let_child_go();
    let code = pre.go()?;
    let own_before: Vec<PathBuf> = sys::envs_below(&sb.cache.join("environments"));
    cx.log(format!(
        "{} exit {code}; cachelock environments: {own_before:?}",
        pre.name
    ));
    if own_before.is_empty() {
        return Err(format!(
            "{} left no environment of cachelock's layout; stderr:\n{}",
            pre.name,
            pre.stderr()
        ));
    }
    let mut run = cx.proc(&sb, run_spec)?;
    if !run.wait_ready(FINISH) {
        return Err(format!(
            "{} never started its child; stderr:\n{}",
            run.name,
            run.stderr()
        ));
    }
    let holder = holds_cache_lock(run.pid(), &sb.cache);
    let uv_before = entries(&sb.cache, false);
    cx.log(format!(
        "{} child runs; holds .lock: {holder}; {} entries of uv's layout",
        run.name,
        uv_before.len()
    ));
    let mut clean = cx.proc(&sb, clean_spec)?;
    let outcome = clean.exit_or_block(FINISH, false)?;
    let uv_after = entries(&sb.cache, false);
    let own_gone: Vec<&PathBuf> = own_before.iter().filter(|e| !e.exists()).collect();
    let uv_gone: Vec<&PathBuf> = uv_before.iter().filter(|e| !uv_after.contains(e)).collect();
    cx.log(format!(
        "{} while {}'s child runs: {outcome:?}; gone: uv's {uv_gone:?}, cachelock's {own_gone:?}",
        clean.name, run.name
    ));
    run.go();
    let code = run.wait_exit(FINISH)?;
    let report = run.wait_report(FINISH)?;
    if matches!(outcome, Outcome::Blocked(..)) {
        clean.wait_exit(FINISH)?;
    }
    let ran = outcome == Outcome::Exited(0);
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!holder || uv_gone.is_empty()),
        holder && ran,
        if !uv_gone.is_empty() {
            format!(
                "the clean deleted {} entries of uv's layout while the old run held `.lock`",
                uv_gone.len()
            )
        } else if ran {
            "the clean ran to its end beside the old run holding `.lock` and deleted nothing of uv's layout".to_string()
        } else {
            "the clean did not run beside the old run".to_string()
        },
    );
    let deleted = !own_gone.is_empty() || !uv_gone.is_empty();
    cx.see(
        "root-lock-exclusion",
        Seen::holds_if(!(holder && deleted)),
        holder && ran,
        if holder && deleted {
            "the clean deleted cachelock's unlocked environment while the old run held `.lock`"
        } else {
            "the clean deleted nothing while the old run held `.lock`"
        },
    );
    let intact = report.as_ref().is_some_and(|r| r.ok) && code == 0;
    cx.see(
        "live-env-intact",
        Seen::holds_if(intact),
        holder && ran,
        if intact {
            "the old run's child found its environment intact after the clean"
        } else {
            "the old run's child lost its environment"
        },
    );
    Ok(())
}

/// `clean-removes-unused`, forced as the model's counterexample has it: the old run's
/// child has exited and the run is held by the gate at its release of `.lock`; the clean
/// runs to its end (it finds `.lock` busy); the environments left are counted.
fn old_run_ends_beside_clean(
    cx: &mut Cx,
    run_spec: ProcSpec,
    clean_spec: ProcSpec,
) -> Result<(), String> {
    let sb = cx.sandbox()?;
    cx.log("another play: the old run held at its release of `.lock` after its child exited, the clean");
    let mut run = cx.gated(&sb, run_spec)?;
    run.let_child_go();
    let cache = sb.cache.clone();
    let at_release: HoldAt = Box::new(move |e, _| {
        e.step == Some(Step::ReleaseRootLock)
            && e.path.as_deref() == Some(cache.join(".lock").as_path())
    });
    let reached = run.until(at_release)?;
    cx.log(format!("{}: {reached:?}", run.name));
    if !matches!(reached, Reached::Held(_)) {
        return Err(format!(
            "{} did not reach its release of `.lock`: {reached:?}; stderr:\n{}",
            run.name,
            run.stderr()
        ));
    }
    let holder = holds_cache_lock(run.pid, &sb.cache);
    let mut clean = cx.proc(&sb, clean_spec)?;
    let outcome = clean.exit_or_block(FINISH, false)?;
    let left: Vec<PathBuf> = sys::envs_below(&sb.cache)
        .into_iter()
        .map(|e| e.strip_prefix(&sb.cache).unwrap_or(&e).to_path_buf())
        .collect();
    cx.log(format!(
        "{} beside {} (holds .lock: {holder}): {outcome:?}; environments left: {left:?}",
        clean.name, run.name
    ));
    let code = run.go()?;
    if matches!(outcome, Outcome::Blocked(..)) {
        clean.wait_exit(FINISH)?;
    }
    cx.log(format!("{} exit {code}", run.name));
    if outcome == Outcome::Exited(0) {
        cx.see(
            "clean-removes-unused",
            Seen::holds_if(left.is_empty()),
            true,
            if left.is_empty() {
                "the clean removed the old run's finished environment".to_string()
            } else {
                format!(
                    "the old run's child had exited, the run still held `.lock`: the clean left {} unused environment(s)",
                    left.len()
                )
            },
        );
    }
    Ok(())
}

/// `run,clean@REL,clean@REL` for a release that unlinks `.lock` (uv 0.8.19-0.12): the
/// model's counterexample forced step by step. The first clean is held at its first
/// deletion under its exclusive lock; the run starts and is seen blocked on that lock;
/// the first clean deletes, releases `.lock` and is held at its unlink of it; the run,
/// granted its shared lock on that (old) inode, sets up and starts its child (held at
/// the child's signal); the first clean unlinks `.lock` and ends; the second clean
/// creates a new `.lock`, gets it at once and is held at its first deletion: it deletes
/// while the run holds a lock (`mutual-exclusion`); it goes on, and the run's child
/// then checks its environment (`live-env-intact`). A further play holds the first
/// clean at its lock call while the run starts after it (`no-overtaking`).
fn orphaned_race(cx: &mut Cx, run_spec: ProcSpec, clean_spec: ProcSpec) -> Result<(), String> {
    let sb = cx.sandbox()?;
    fill(&sb.cache).map_err(|e| e.to_string())?;
    let lock = sb.lock_file();
    let mut c1 = cx.gated(&sb, clean_spec)?;
    let at = c1.until(gated::at_delete_under_lock())?;
    if !matches!(at, Reached::Held(_)) {
        return Err(format!(
            "{} did not reach its deletion under the lock: {at:?}",
            c1.name
        ));
    }
    let old = sys::inode(&lock);
    let mut run = cx.gated(&sb, run_spec)?;
    let first = run.until(gated::after_shared_lock(&sb.cache))?;
    cx.log(format!(
        "{} holds .lock (inode {old:?}); {} started after it: {first:?}",
        c1.name, run.name
    ));
    let blocked = matches!(first, Reached::Blocked(_));
    let at_unlink: HoldAt = Box::new(|e, _| e.step == Some(Step::UnlinkLockFile));
    let unlink = c1.until(at_unlink)?;
    cx.log(format!("{}: {unlink:?}", c1.name));
    if !matches!(unlink, Reached::Held(_)) {
        return Err(format!(
            "{} did not reach an unlink of `.lock` (a release that keeps it has no such race): {unlink:?}",
            c1.name
        ));
    }
    let ready = run.ready.clone();
    let signal = run.until(gated::at_signal(&ready))?;
    let run_locks: Vec<u64> = locks::held_by(run.pid).iter().map(|l| l.inode).collect();
    cx.log(format!(
        "{}: {signal:?}; it holds locks on inodes {run_locks:?}",
        run.name
    ));
    let child_runs = matches!(signal, Reached::Held(_));
    let c1_code = c1.go()?;
    let now = sys::inode(&lock);
    let orphan = old.is_some_and(|o| run_locks.contains(&o)) && now != old;
    cx.log(format!(
        "{} exit {c1_code}; .lock is now inode {now:?}; the run holds the orphaned inode: {orphan}",
        c1.name
    ));
    let mut c2 = cx.gated(&sb, clean_spec)?;
    let second = c2.until(gated::at_delete_under_lock())?;
    let deletes = matches!(second, Reached::Held(_));
    cx.log(format!(
        "{} while {} holds its lock: {second:?}",
        c2.name, run.name
    ));
    let c2_code = c2.go()?;
    run.let_child_go();
    let code = run.go()?;
    let report = std::fs::read_to_string(&run.report)
        .ok()
        .map(|t| sys::Report::parse(&t));
    cx.log(format!(
        "{} exit {c2_code}; {} exit {code}; report: {report:?}; stderr:\n{}",
        c2.name,
        run.name,
        run.stderr()
    ));
    let holder = orphan && child_runs;
    cx.see(
        "mutual-exclusion",
        Seen::holds_if(!(deletes && holder)),
        holder,
        if deletes && holder {
            "the second clean deleted under its new `.lock` while the run held a shared lock on the orphaned inode"
        } else {
            "the second clean did not delete while the run held its lock"
        },
    );
    cx.see(
        "root-lock-exclusion",
        Seen::holds_if(!(deletes && holder)),
        holder,
        "as mutual-exclusion: the run held `.lock` (its old inode)",
    );
    match (&report, child_runs) {
        (Some(r), true) => cx.see(
            "live-env-intact",
            Seen::holds_if(r.ok),
            holder,
            if r.ok {
                "the run's child found its environment intact".to_string()
            } else {
                format!(
                    "the running child lost its environment ({})",
                    r.problem.split(':').next().unwrap_or("")
                )
            },
        ),
        _ => cx.see(
            "live-env-intact",
            Seen::Fails,
            true,
            "the run's child never ran in its environment",
        ),
    }
    cx.see(
        "clean-overlaps-child",
        Seen::holds_if(deletes && child_runs),
        true,
        if deletes && child_runs {
            "the second clean got the cache while the run's child ran"
        } else {
            "no clean got the cache while the run's child ran"
        },
    );
    let ok = c1_code == 0 && c2_code == 0;
    cx.see(
        "clean-terminates",
        Seen::Holds,
        blocked,
        format!("both cleans ended (exits {c1_code}, {c2_code})"),
    );
    cx.see(
        "clean-succeeds",
        Seen::holds_if(ok),
        blocked,
        if ok {
            "both cleans exited 0, the first though the run set up while it deleted".to_string()
        } else {
            format!("a clean failed (exits {c1_code}, {c2_code})")
        },
    );
    let left = sys::envs_below(&sb.cache);
    cx.see(
        "clean-removes-unused",
        Seen::holds_if(left.is_empty()),
        false,
        if left.is_empty() {
            "no environment was left".to_string()
        } else {
            format!("{} environment(s) were left", left.len())
        },
    );
    cx.see("no-deadlock", Seen::Holds, true, "every process exited");
    overtaken(cx, run_spec, clean_spec)
}

/// `no-overtaking` beside an old clean: the uniform suite's play of it
/// ([`overtaking_alone`]), its observation and log taken over.
fn overtaken(cx: &mut Cx, run_spec: ProcSpec, clean_spec: ProcSpec) -> Result<(), String> {
    let mut obs = overtaking_alone(cx.mixed, cx.setup, &cx.obs.scenario, run_spec, clean_spec)?;
    cx.obs.log.append(&mut obs.log);
    let p = obs
        .get("no-overtaking")
        .ok_or("the overtaking play observed no `no-overtaking`")?;
    cx.see("no-overtaking", p.seen, p.forced, p.note.clone());
    Ok(())
}

/// Where the section of `docs/fidelity.md` written by the mixed suite begins; the
/// uniform suite writes and checks what comes before it.
pub const SECTION_MARKER: &str = "\n## Beside old uv\n";

/// The section "Beside old uv" of `docs/fidelity.md`, from [`SECTION_MARKER`] on.
pub fn section(all: &[super::compare::Compared]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(SECTION_MARKER);
    s.push_str(
        "\nGenerated by `CACHELOCK_WRITE_DOCS=1 cargo test -p cachelock-conformance --test fidelity_mixed`\n\
         (`conformance/gate/src/realuv/mixed.rs`); the same test fails when this section is\n\
         stale or when a real run disagrees with the model. Each mixed scenario (model syntax:\n\
         a token with `@uv-0.13` or `@uv-0.8.20` is a process of that release, one without `@`\n\
         a process of the checked policy) is played by real processes on one cache: the\n\
         `cachelock` binary under the command's default policy (`cachelock-fenced`) beside the\n\
         uv 0.13.9 or 0.8.20 binary, with the interleaving that decides each property forced\n\
         by the gate, and compared with the model's verdicts under `cachelock-fenced` (a\n\
         violation counts against it only if one of its processes is the victim or the\n\
         culprit, as `cachelock check` attributes it).\n\n\
         | scenario | processes | model fails | real fails | verdict |\n|---|---|---|---|---|\n",
    );
    let (mut agree, mut disagree, mut nf) = (0, 0, 0);
    for c in all {
        let super::compare::RowText {
            model,
            real,
            verdict,
        } = c.row_text();
        if c.disagreements().next().is_some() {
            disagree += 1;
        } else {
            agree += 1;
            nf += usize::from(c.not_forced());
        }
        let _ = writeln!(
            s,
            "| `{}` | {} | {model} | {real} | {verdict} |",
            c.obs.scenario, c.obs.runner
        );
    }
    let _ = writeln!(
        s,
        "\n{} mixed scenarios: {agree} agree, {disagree} disagree; {nf} have a property not forced.\n",
        all.len()
    );
    s.push_str(
        "### Notes\n\n\
         - The uniform suite's plays are reused (the clean started while the run's child\n  \
         runs; the clean held at its exclusive lock call while a run starts after it; the\n  \
         clean held at its first deletion under the lock while a run sets up; a forced clean\n  \
         while a run is held just after its shared lock was granted).\n\
         - Where the default's clean meets an old run, `mutual-exclusion` and\n  \
         `root-lock-exclusion` are read off the cache's entries: a finished `cachelock run`\n  \
         leaves an unlocked environment of cachelock's layout (`environments/`), the old\n  \
         run's child runs (the old run holds `.lock`), the clean runs to its end; it deletes\n  \
         cachelock's environment (`root-lock-exclusion` fails, as the model says) and nothing\n  \
         of uv's layout (`mutual-exclusion` holds). `clean-removes-unused` is forced as the\n  \
         model's counterexample has it: the old run's child has exited and the run is held at\n  \
         its release of `.lock` while the clean runs; the old run's environment stays.\n\
         - `run,clean@uv-0.8.20,clean@uv-0.8.20`: the first old clean is held at its first\n  \
         deletion, the run is seen blocked on its lock, the clean releases `.lock` and is held\n  \
         at its unlink of it; the run, granted the lock on the old inode, starts its child; the\n  \
         clean unlinks `.lock`; the second old clean creates a new `.lock`, gets it at once and\n  \
         deletes the running child's environment. uv 0.13 keeps `.lock`: its cleans have no\n  \
         such step to hold.\n\n\
         ### Per property\n\n| scenario | property | model | real | | note |\n|---|---|---|---|---|---|\n",
    );
    for c in all {
        for r in &c.rows {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} | {} |",
                c.obs.scenario,
                r.property,
                r.predicted.name(),
                r.seen.map_or("–", Seen::name),
                r.agreement.name(),
                r.note
            );
        }
        for remark in &c.obs.remarks {
            let _ = writeln!(s, "| `{}` | (remark) | | | | {remark} |", c.obs.scenario);
        }
    }
    s
}
