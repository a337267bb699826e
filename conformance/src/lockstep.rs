//! Lockstep: real processes and the model, one step at a time.
//!
//! Every process of a scenario is a real `cl-driver` process running a real
//! `cachelock::session::Session` on a real cache in a temporary directory; every run's
//! child is a real `cl-child` that checks its environment while it runs. The harness
//! applies a sequence of [`Op`]s (advance a process by one step, let a child exit, kill
//! a process with SIGKILL, time a lock wait out) to both sides and, after each one,
//! requires:
//! - that the real outcome is a transition the model allows from its current state: a
//!   real step that would block is a step the model says cannot proceed, and the other
//!   way round;
//! - that the real state, read off the disk, `/proc` and the drivers, maps to the
//!   model's new state ([`Abstract`]).
//!
//! A disagreement is reported as the numbered story of the steps so far (the same lines
//! `cachelock check` prints) followed by the two abstract states.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child as OsChild, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cachelock::cache::{ENV_MARKER, ENVIRONMENTS_DIR, LOCK_FILE, TAG_FILE};
use cachelock::lockfile::{LockFile, TryLock};
use cachelock_model::machine::{Action, CacheModel, Child, Daemon, Life, ProcId, State, Temp};
use cachelock_model::protocol::{ChildKind, EnvName, Event, Mode, Policy, Scenario, Step};
use cachelock_model::story;
use serde_json::Value;

/// One thing the harness does to both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The process takes its next step (or tries to, if it waits).
    Advance(usize),
    /// The process's child exits.
    ChildExit(usize),
    /// The process is killed with SIGKILL.
    Kill(usize),
    /// The process's child starts a daemon.
    StartDaemon(usize),
    /// The process's daemon exits.
    DaemonExit(usize),
    /// The process's lock wait times out: played only while the model says it waits and
    /// the lock is busy, as a real blocking wait bounded by a short real timeout.
    Timeout(usize),
}

impl Op {
    /// The process the op is about.
    pub fn proc(self) -> usize {
        match self {
            Op::Advance(p)
            | Op::ChildExit(p)
            | Op::Kill(p)
            | Op::Timeout(p)
            | Op::StartDaemon(p)
            | Op::DaemonExit(p) => p,
        }
    }

    /// The op that replays a model action.
    pub fn from_action(a: Action) -> Op {
        match a {
            Action::Step(p, _) => Op::Advance(p),
            Action::Event(p, Event::ChildExits) => Op::ChildExit(p),
            Action::Event(p, Event::Killed) => Op::Kill(p),
            Action::Event(p, Event::LockTimeout) => Op::Timeout(p),
            Action::Event(p, Event::ChildStartsDaemon) => Op::StartDaemon(p),
            Action::Event(p, Event::DaemonExits) => Op::DaemonExit(p),
        }
    }
}

/// The kinds of process the lockstep harness can play for real (a nested clean would
/// need a child that runs the protocol itself).
pub fn playable(sc: &Scenario) -> bool {
    sc.procs
        .iter()
        .all(|p| p.kind.child() != Some(ChildKind::NestedClean))
}

/// A `cl-driver` process.
struct Driver {
    os: OsChild,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn ask(&mut self, command: &str) -> Result<Value, String> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("driver stdin: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("driver stdout: {e}"))?;
        if line.is_empty() {
            return Err(format!("driver exited while answering `{command}`"));
        }
        serde_json::from_str(&line).map_err(|e| format!("driver said `{line}`: {e}"))
    }

    fn pid(&self) -> u32 {
        self.os.id()
    }
}

/// The real side of one process.
struct Real {
    driver: Option<Driver>,
    exit_file: PathBuf,
    report_file: PathBuf,
    /// Learnt from `observe`.
    child_pid: Option<u32>,
    /// The daemon the child started, if any.
    daemon_pid: Option<u32>,
    temp_cache: Option<PathBuf>,
    /// How the driver ended, as a shell shows it (the exit code, or 128 + the signal).
    exit: Option<i32>,
}

/// What the harness saw for real around one op: read off `/proc/locks`, the cache
/// directory and the drivers, independently of the model. The replay test finds each
/// counterexample's violation in these.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The process the op was about.
    pub proc: usize,
    /// The step it took (or tried), for a step.
    pub step: Option<Step>,
    /// The event, for an event.
    pub event: Option<Event>,
    /// The real outcome of a step, as the driver reported it (`done`, `would-block`, …).
    pub outcome: String,
    /// The processes whose driver held a flock on a `.lock` file of the cache (the path's
    /// inode or one unlinked since), with its mode, per `/proc/locks`, just before the op.
    pub holders_before: Vec<(usize, Mode)>,
    /// The same, just after.
    pub holders_after: Vec<(usize, Mode)>,
    /// Every path under the cache root, just before the op.
    pub entries_before: BTreeSet<PathBuf>,
    /// The same, just after.
    pub entries_after: BTreeSet<PathBuf>,
    /// The processes whose driver was alive just after the op.
    pub alive_after: Vec<bool>,
    /// The real abstract state just after the op.
    pub real_after: Abstract,
}

/// The part of the state both sides can show, compared after every op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abstract {
    pub root: bool,
    pub scaffold: bool,
    /// Which inode (model numbering) `.lock` names.
    pub lock_path: Option<u8>,
    /// Someone holds a lock on the inode `.lock` names (a probe's try-lock fails).
    pub lock_path_busy: bool,
    /// Per cached environment: present (marker file in place).
    pub envs: Vec<bool>,
    /// Per cached environment: its lock file is locked by someone.
    pub env_locked: Vec<bool>,
    pub procs: Vec<ProcAbstract>,
}

/// One process, abstractly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcAbstract {
    /// The next step, or `None` once finished (done, failed or killed).
    pub next: Option<&'static str>,
    /// The root lock this process holds (live processes only).
    pub root_lock: Option<Mode>,
    /// The inode (model numbering) of its descriptor on `.lock` (live processes only).
    pub root_fd: Option<u8>,
    pub child_running: bool,
    pub daemon_running: bool,
    pub temp_cache: bool,
}

/// The harness. See the module documentation.
pub struct Lockstep {
    pub model: CacheModel,
    pub state: State,
    dir: tempfile::TempDir,
    cache: PathBuf,
    reals: Vec<Real>,
    /// real inode -> model inode
    inodes: BTreeMap<u64, u8>,
    /// The story so far.
    pub story: Vec<String>,
    driver_exe: PathBuf,
    /// What was seen for real around each op that meant something.
    seen: Vec<Seen>,
}

/// What a case produced.
#[derive(Debug)]
pub struct Outcome {
    /// The numbered story of the ops applied.
    pub story: Vec<String>,
    /// The model's final state.
    pub state: State,
    /// What each child reported (`ok`, `missing while running`, …), by process.
    pub child_reports: Vec<(usize, String)>,
    /// The real outcome of each step, by (process, step).
    pub outcomes: Vec<(usize, Step, String)>,
    /// What was seen for real around each op, in order.
    pub seen: Vec<Seen>,
    /// How each driver had ended when the ops were done (`None`: still running then).
    pub exits: Vec<Option<i32>>,
    /// Whether each process's child or daemon still ran when the ops were done.
    pub children_running: Vec<bool>,
    /// The temporary caches (`$TMPDIR/.tmp*` directories) on disk once every driver,
    /// child and daemon had gone.
    pub leftover_temp: Vec<PathBuf>,
}

impl Lockstep {
    /// Sets up a cache like the model's initial state (root, scaffold, `.lock`) and one
    /// driver per process. `driver_exe` is the `cl-driver` binary.
    pub fn new(policy: Policy, sc: &Scenario, driver_exe: &Path) -> Result<Lockstep, String> {
        Lockstep::with_env(policy, sc, driver_exe, &[])
    }

    /// As [`Lockstep::new`], with extra environment variables for every driver (an
    /// injected fault: `CACHELOCK_FAULT=…`).
    pub fn with_env(
        policy: Policy,
        sc: &Scenario,
        driver_exe: &Path,
        env: &[(&str, &str)],
    ) -> Result<Lockstep, String> {
        if !playable(sc) {
            return Err(format!("scenario {sc} is not playable for real"));
        }
        let model = CacheModel::new(policy, sc);
        let state = model.initial_state();
        let dir = tempfile::Builder::new()
            .prefix("cl-lockstep")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let cache = dir.path().join("cache");
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        cachelock::cache::create_scaffold(&cache).map_err(|e| e.to_string())?;
        LockFile::open_or_create(&cache.join(LOCK_FILE)).map_err(|e| e.to_string())?;
        let mut reals = Vec::new();
        for (p, info) in model.procs.iter().enumerate() {
            let exit_file = dir.path().join(format!("child-{p}.exit"));
            let report_file = dir.path().join(format!("child-{p}.report"));
            let env_name = info.kind.env().map_or("none", EnvName::dir_name);
            let guard = fork_guard();
            let mut os = Command::new(driver_exe)
                .args([policy.name(), info.kind.token()])
                .arg(&cache)
                .arg(env_name)
                .arg(&exit_file)
                .arg(&report_file)
                .env("TMPDIR", &tmp)
                // A timed-out wait (`Op::Timeout`) lasts this long, for real.
                .env("CACHELOCK_LOCK_TIMEOUT", "0.1")
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", driver_exe.display()))?;
            drop(guard);
            let (Some(stdin), Some(stdout)) = (os.stdin.take(), os.stdout.take()) else {
                return Err("driver pipes missing".into());
            };
            reals.push(Real {
                driver: Some(Driver {
                    os,
                    stdin,
                    stdout: BufReader::new(stdout),
                }),
                exit_file,
                report_file,
                child_pid: None,
                daemon_pid: None,
                temp_cache: None,
                exit: None,
            });
        }
        let mut inodes = BTreeMap::new();
        let ino = fs::metadata(cache.join(LOCK_FILE))
            .map_err(|e| e.to_string())?
            .ino();
        inodes.insert(ino, 0);
        Ok(Lockstep {
            model,
            state,
            dir,
            cache,
            reals,
            inodes,
            story: Vec::new(),
            driver_exe: driver_exe.to_path_buf(),
            seen: Vec::new(),
        })
    }

    /// The model action an op stands for now, if the op means anything in this state
    /// (`None`: skip it, e.g. advancing a finished process).
    pub fn action_for(&self, op: Op) -> Option<Action> {
        let m = &self.model;
        let s = &self.state;
        let p = op.proc();
        if p >= m.procs.len() {
            return None;
        }
        let event = match op {
            Op::Advance(p) => {
                if m.finished(s, p) {
                    return None;
                }
                return m.next_step(s, p).map(|step| Action::Step(p, step));
            }
            Op::ChildExit(_) => Event::ChildExits,
            Op::Kill(_) => Event::Killed,
            // Played for real only while the lock is really busy: a real wait on a free
            // lock does not time out, it takes the lock (the model's timeout racing a
            // release is left to the model checker).
            Op::Timeout(_) if m.step_enabled(s, p) => return None,
            Op::Timeout(_) => Event::LockTimeout,
            Op::StartDaemon(_) => Event::ChildStartsDaemon,
            Op::DaemonExit(_) => Event::DaemonExits,
        };
        m.event_enabled(s, p, event)
            .then_some(Action::Event(p, event))
    }

    fn fail(&self, what: String) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "the implementation left the model ({} on {}):",
            self.model.policy, self.model.scenario
        );
        for line in &self.story {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(out, "  !! {what}");
        out
    }

    /// Applies one op to both sides and compares them, recording what was seen for real
    /// around it.
    pub fn apply(
        &mut self,
        op: Op,
        outcomes: &mut Vec<(usize, Step, String)>,
    ) -> Result<(), String> {
        let Some(action) = self.action_for(op) else {
            return Ok(());
        };
        let holders_before = self.root_holders();
        let entries_before = entries(&self.cache);
        let known = outcomes.len();
        self.apply_action(action, outcomes)?;
        let (step, event) = match action {
            Action::Step(_, step) => (Some(step), None),
            Action::Event(_, event) => (None, Some(event)),
        };
        let outcome = outcomes
            .get(known..)
            .and_then(|o| o.last())
            .map(|(_, _, o)| o.clone())
            .unwrap_or_default();
        let real_after = self.real_abstract()?;
        self.seen.push(Seen {
            proc: op.proc(),
            step,
            event,
            outcome,
            holders_before,
            holders_after: self.root_holders(),
            entries_before,
            entries_after: entries(&self.cache),
            alive_after: self.reals.iter().map(|r| r.driver.is_some()).collect(),
            real_after,
        });
        Ok(())
    }

    fn apply_action(
        &mut self,
        action: Action,
        outcomes: &mut Vec<(usize, Step, String)>,
    ) -> Result<(), String> {
        let before = self.state.clone();
        let p = match action {
            Action::Step(p, _) | Action::Event(p, _) => p,
        };
        match action {
            Action::Step(_, step) => {
                let enabled = self.model.step_enabled(&self.state, p);
                let waiting = self.state.procs[p].life == Life::Waiting;
                let answer = self.ask(p, "step")?;
                let mut outcome = answer["outcome"].as_str().unwrap_or("?").to_string();
                if let Some(detail) = answer["detail"].as_str() {
                    outcome = format!("{outcome}: {detail}");
                }
                outcomes.push((p, step, outcome.clone()));
                if outcome.starts_with("error") {
                    return Err(self.fail(format!(
                        "{}: {} failed with an error: {}",
                        self.model.procs[p].label, step, answer["detail"]
                    )));
                }
                if answer["exited"].as_bool() == Some(true)
                    && let Some(mut d) = self.reals[p].driver.take()
                {
                    self.reals[p].exit = d.os.wait().ok().map(shell_code);
                }
                let blocked = outcome == "would-block";
                if waiting || (!enabled && step == Step::WaitForChild) {
                    // The model says whether the blocking call can return now.
                    if blocked == enabled {
                        return Err(self.fail(format!(
                            "{}: {step}: the model says it {} proceed, the implementation {}",
                            self.model.procs[p].label,
                            if enabled { "can" } else { "cannot" },
                            if blocked { "would block" } else { "went on" }
                        )));
                    }
                    if blocked {
                        self.story.push(format!(
                            "   ({}: {step} -> still blocked, as the model says)",
                            self.model.procs[p].label
                        ));
                        return self.compare();
                    }
                }
                let next = self.model.after(&self.state, action);
                let model_blocks = next.procs[p].life == Life::Waiting;
                if model_blocks != blocked {
                    return Err(self.fail(format!(
                        "{}: {step}: the model {} but the implementation {} ({outcome})",
                        self.model.procs[p].label,
                        if model_blocks { "waits" } else { "goes on" },
                        if blocked { "would block" } else { "went on" }
                    )));
                }
                self.state = next;
            }
            Action::Event(_, Event::ChildExits) => {
                self.let_child_exit(p)?;
                self.state = self.model.after(&self.state, action);
            }
            Action::Event(_, Event::Killed) => {
                if let Some(mut d) = self.reals[p].driver.take() {
                    let _ = d.os.kill();
                    self.reals[p].exit = d.os.wait().ok().map(shell_code);
                }
                self.state = self.model.after(&self.state, action);
            }
            Action::Event(_, Event::LockTimeout) => {
                // The model says the process waits: its real step is tried with a real
                // blocking wait, which only the real timeout can end (the holder does
                // not move meanwhile).
                let step = self.model.next_step(&self.state, p);
                let answer = self.ask(p, "timeout")?;
                let detail = answer["detail"].as_str().unwrap_or("").to_string();
                if let Some(step) = step {
                    outcomes.push((p, step, format!("timed out: {detail}")));
                }
                let exited = answer["exited"].as_bool() == Some(true);
                if exited && let Some(mut d) = self.reals[p].driver.take() {
                    self.reals[p].exit = d.os.wait().ok().map(shell_code);
                }
                if answer["timed_out"].as_bool() != Some(true)
                    || !detail.starts_with("timed out after")
                    || self.reals[p].exit != Some(2)
                {
                    return Err(self.fail(format!(
                        "{}: the model's lock wait times out, but the real wait ended with {answer} \
                         (exit {:?})",
                        self.model.procs[p].label, self.reals[p].exit
                    )));
                }
                self.state = self.model.after(&self.state, action);
            }
            Action::Event(_, Event::ChildStartsDaemon) => {
                self.start_daemon(p)?;
                self.state = self.model.after(&self.state, action);
            }
            Action::Event(_, Event::DaemonExits) => {
                self.let_daemon_exit(p)?;
                self.state = self.model.after(&self.state, action);
            }
        }
        let mut line = story::line(&self.model, &before, action, &self.state);
        if let Some((_, _, real)) = outcomes.last().filter(|(q, _, _)| *q == p)
            && matches!(action, Action::Step(..))
            && !matches!(real.as_str(), "done" | "reused" | "would-block")
        {
            line.push_str(&format!("   [real: {real}]"));
        }
        self.story.push(format!("{}. {line}", self.story.len() + 1));
        self.compare()
    }

    /// The processes whose driver holds a flock on its descriptor on `<cache>/.lock`
    /// (whichever inode that is), with the mode, per `/proc/locks`.
    fn root_holders(&self) -> Vec<(usize, Mode)> {
        let mut out = Vec::new();
        for (p, r) in self.reals.iter().enumerate() {
            let Some(d) = r.driver.as_ref() else { continue };
            if let Some((dev, ino)) = lock_fd_id(d.pid(), &self.cache) {
                out.extend(flocks_held(d.pid(), dev, ino).into_iter().map(|m| (p, m)));
            }
        }
        out
    }

    fn ask(&mut self, p: ProcId, command: &str) -> Result<Value, String> {
        let label = self.model.procs[p].label.clone();
        match self.reals[p].driver.as_mut() {
            Some(d) => d.ask(command).map_err(|e| format!("{label}: {e}")),
            None => Err(format!("{label}: no driver")),
        }
    }

    fn suffixed(path: &Path, suffix: &str) -> PathBuf {
        let mut s = path.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// Asks the child to start its daemon (see `cl-child`) and waits until it runs.
    fn start_daemon(&mut self, p: ProcId) -> Result<(), String> {
        let request = Self::suffixed(&self.reals[p].exit_file, ".daemon");
        fs::write(&request, b"").map_err(|e| e.to_string())?;
        let pid_file = Self::suffixed(&request, ".pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                self.reals[p].daemon_pid = Some(pid);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(self.fail(format!(
            "{}: the daemon did not start",
            self.model.procs[p].label
        )))
    }

    fn let_daemon_exit(&mut self, p: ProcId) -> Result<(), String> {
        let exit = Self::suffixed(&self.reals[p].exit_file, ".daemon.exit");
        fs::write(&exit, b"").map_err(|e| e.to_string())?;
        let Some(pid) = self.reals[p].daemon_pid else {
            return Err(self.fail(format!("{}: no real daemon", self.model.procs[p].label)));
        };
        if !wait_gone(pid, || {}) {
            return Err(self.fail(format!(
                "{}: the daemon did not exit",
                self.model.procs[p].label
            )));
        }
        Ok(())
    }

    fn let_child_exit(&mut self, p: ProcId) -> Result<(), String> {
        fs::write(&self.reals[p].exit_file, b"").map_err(|e| e.to_string())?;
        let Some(pid) = self.reals[p].child_pid else {
            return Err(self.fail(format!(
                "{}: the model's child runs but no real child was seen",
                self.model.procs[p].label
            )));
        };
        // Lets the driver reap it (observe polls the child) while waiting.
        let gone = wait_gone(pid, || {
            if self.reals[p].driver.is_some() {
                let _ = self.ask(p, "observe");
            }
        });
        if !gone {
            return Err(self.fail(format!(
                "{}: the child did not exit",
                self.model.procs[p].label
            )));
        }
        Ok(())
    }

    /// Reads the real state and compares it with the model's.
    fn compare(&mut self) -> Result<(), String> {
        let real = self.real_abstract()?;
        let model = self.model_abstract();
        if real != model {
            return Err(self.fail(format!(
                "after the last step the states differ:\n     model: {model:?}\n      real: {real:?}"
            )));
        }
        Ok(())
    }

    /// Maps a real inode number to the model's numbering. The file system reuses the
    /// number of an inode nobody holds any more, so a known number whose model inode no
    /// descriptor references is bound afresh to the inode the model expects (`fallback`).
    fn map_inode(&mut self, ino: u64, fallback: Option<u8>) -> Option<u8> {
        if let Some(m) = self.inodes.get(&ino).copied() {
            let dead = !self
                .state
                .procs
                .iter()
                .any(|p| p.root_fd.is_some_and(|f| f.inode == m));
            match fallback {
                Some(f) if f != m && dead && !self.inodes.values().any(|v| *v == f) => {
                    self.inodes.insert(ino, f);
                    return Some(f);
                }
                _ => return Some(m),
            }
        }
        let m = fallback?;
        if self.inodes.values().any(|v| *v == m) {
            return None;
        }
        self.inodes.insert(ino, m);
        Some(m)
    }

    fn real_abstract(&mut self) -> Result<Abstract, String> {
        let lock = self.cache.join(LOCK_FILE);
        let lock_meta = fs::symlink_metadata(&lock).ok();
        let lock_path = match lock_meta {
            Some(ref meta) => self.map_inode(meta.ino(), self.state.fs.lock_path),
            None => None,
        };
        let lock_path_busy = lock_meta.is_some() && busy(&lock);
        let envs_dir = self.cache.join(ENVIRONMENTS_DIR);
        let envs = EnvName::CACHED
            .iter()
            .map(|e| envs_dir.join(e.dir_name()).join(ENV_MARKER).is_file())
            .collect();
        let env_locked = EnvName::CACHED
            .iter()
            .map(|e| busy(&envs_dir.join(format!("{}.lock", e.dir_name()))))
            .collect();
        let mut procs = Vec::new();
        for p in 0..self.reals.len() {
            let alive = self.reals[p].driver.is_some();
            let mut pa = ProcAbstract {
                next: None,
                root_lock: None,
                root_fd: None,
                child_running: false,
                daemon_running: false,
                temp_cache: false,
            };
            if alive {
                let v = self.ask(p, "observe")?;
                let finished = v["finished"].as_bool().unwrap_or(true);
                pa.next = if finished {
                    None
                } else {
                    v["next"].as_str().and_then(Step::from_name).map(Step::name)
                };
                pa.root_lock = v["root_lock"].as_str().and_then(Mode::from_name);
                if let Some(pid) = v["child_pid"].as_u64() {
                    self.reals[p].child_pid = Some(pid as u32);
                }
                self.reals[p].temp_cache = v["temp_cache"]
                    .as_str()
                    .map(PathBuf::from)
                    .or(self.reals[p].temp_cache.take());
                let driver_pid = self.reals[p].driver.as_ref().map(Driver::pid);
                if let Some(pid) = driver_pid {
                    let fallback = self.state.procs[p].root_fd.map(|f| f.inode);
                    pa.root_fd = lock_fd_inode(pid, &self.cache)
                        .and_then(|ino| self.map_inode(ino, fallback));
                }
            }
            pa.child_running = self.reals[p].child_pid.is_some_and(process_alive);
            pa.daemon_running = self.reals[p].daemon_pid.is_some_and(process_alive);
            pa.temp_cache = self.reals[p]
                .temp_cache
                .as_ref()
                .is_some_and(|t| t.exists());
            procs.push(pa);
        }
        Ok(Abstract {
            root: self.cache.is_dir(),
            scaffold: self.cache.join(TAG_FILE).is_file(),
            lock_path,
            lock_path_busy,
            envs,
            env_locked,
            procs,
        })
    }

    fn model_abstract(&self) -> Abstract {
        let m = &self.model;
        let s = &self.state;
        let layout = usize::from(m.policy.design().new_layout);
        let lock_path_busy = s.fs.lock_path.is_some_and(|i| {
            s.procs
                .iter()
                .any(|p| p.root_fd.is_some_and(|f| f.inode == i && f.lock.is_some()))
        });
        let procs = (0..m.procs.len())
            .map(|p| {
                let st = &s.procs[p];
                let live = matches!(st.life, Life::Ready | Life::Waiting);
                ProcAbstract {
                    next: if live {
                        m.next_step(s, p).map(Step::name)
                    } else {
                        None
                    },
                    // The process's own descriptor: a copy its child or daemon inherited
                    // shows in `lock_path_busy`, not here (the real side sees the
                    // driver's descriptors).
                    root_lock: st.root_fd.filter(|f| f.parent).and_then(|f| f.lock),
                    root_fd: st.root_fd.filter(|f| f.parent).map(|f| f.inode),
                    child_running: st.child == Child::Running,
                    daemon_running: st.daemon == Daemon::Running,
                    temp_cache: matches!(st.temp, Temp::Present(_)),
                }
            })
            .collect();
        Abstract {
            root: s.fs.root,
            scaffold: s.fs.scaffold,
            lock_path: s.fs.lock_path,
            lock_path_busy,
            // Every process runs the checked policy here: its environments are in its
            // layout.
            envs: s.fs.envs[layout]
                .iter()
                .map(|e| *e == cachelock_model::machine::EnvState::Present)
                .collect(),
            env_locked: EnvName::CACHED
                .iter()
                .map(|e| m.env_locked(s, layout, *e))
                .collect(),
            procs,
        }
    }

    /// Applies `ops` in order (skipping those that mean nothing at that point), then
    /// lets every child go and ends every process.
    pub fn play(mut self, ops: &[Op]) -> Result<Outcome, String> {
        let mut outcomes = Vec::new();
        let result = ops.iter().try_for_each(|op| self.apply(*op, &mut outcomes));
        let story = self.story.clone();
        let state = self.state.clone();
        let seen = std::mem::take(&mut self.seen);
        let exits = self.reals.iter().map(|r| r.exit).collect();
        let children_running = self
            .reals
            .iter()
            .map(|r| {
                r.child_pid.is_some_and(process_alive) || r.daemon_pid.is_some_and(process_alive)
            })
            .collect();
        let reports = self.teardown();
        let leftover_temp = temp_caches(&self.dir.path().join("tmp"));
        result?;
        Ok(Outcome {
            story,
            state,
            child_reports: reports,
            outcomes,
            seen,
            exits,
            children_running,
            leftover_temp,
        })
    }

    /// Lets every child exit, ends every driver, and collects the children's reports.
    fn teardown(&mut self) -> Vec<(usize, String)> {
        for r in &self.reals {
            let _ = fs::write(&r.exit_file, b"");
            let _ = fs::write(Self::suffixed(&r.exit_file, ".daemon.exit"), b"");
        }
        for r in &mut self.reals {
            if let Some(mut d) = r.driver.take() {
                let _ = writeln!(d.stdin, "quit").and_then(|()| d.stdin.flush());
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = d.os.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = d.os.kill();
                let _ = d.os.wait();
            }
            for pid in r.child_pid.into_iter().chain(r.daemon_pid) {
                wait_gone(pid, || {});
            }
        }
        let _ = &self.driver_exe;
        let _ = self.dir.path();
        self.reals
            .iter()
            .enumerate()
            .flat_map(|(p, r)| {
                [
                    r.report_file.clone(),
                    Self::suffixed(&r.report_file, ".daemon"),
                ]
                .into_iter()
                .filter_map(move |f| fs::read_to_string(f).ok().map(|t| (p, t)))
            })
            .collect()
    }
}

/// An exit status as a shell shows it: the code, or 128 + the signal.
fn shell_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Every path under `root`, relative to it (links are not followed).
fn entries(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(list) = fs::read_dir(dir) else {
            return;
        };
        for e in list.flatten() {
            let path = e.path();
            if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.to_path_buf());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The temporary caches (`.tmp*` directories) in `tmp`.
fn temp_caches(tmp: &Path) -> Vec<PathBuf> {
    let Ok(list) = fs::read_dir(tmp) else {
        return Vec::new();
    };
    list.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// The flocks `pid` holds (not waits for) on inode `ino` of device `dev`, per the
/// kernel's lock table.
pub fn flocks_held(pid: u32, dev: u64, ino: u64) -> Vec<Mode> {
    cachelock_inspect::locks::held_by(pid)
        .into_iter()
        .filter(|l| l.is_on(dev, ino))
        .map(|l| l.mode)
        .collect()
}

/// Serialises this process's forks (spawning drivers) with its lock probes. A probe
/// holds a lock for a moment; a process forked by another test thread in that moment
/// would hold a copy of the probe's descriptor, and so the lock, until it execs, and a
/// driver's step would then find the cache busy for no reason the model knows.
static FORK_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fork_guard() -> std::sync::MutexGuard<'static, ()> {
    FORK_GUARD.lock().unwrap_or_else(|e| e.into_inner())
}

/// True if some process holds a lock on `path` (our own try-lock fails).
fn busy(path: &Path) -> bool {
    let _guard = fork_guard();
    match LockFile::open_existing(path) {
        Ok(Some(mut f)) => !matches!(f.try_lock(Mode::Exclusive), Ok(TryLock::Acquired)),
        _ => false,
    }
}

/// The inode of the descriptor process `pid` has open on `<cache>/.lock` (whether or
/// not the path still names it).
fn lock_fd_inode(pid: u32, cache: &Path) -> Option<u64> {
    lock_fd_id(pid, cache).map(|(_, ino)| ino)
}

/// The (device, inode) of the descriptor process `pid` has open on `<cache>/.lock`.
fn lock_fd_id(pid: u32, cache: &Path) -> Option<(u64, u64)> {
    let want = cache.join(LOCK_FILE);
    cachelock_inspect::process::fds(pid)
        .into_iter()
        .find(|fd| fd.target == want)
        .map(|fd| (fd.dev, fd.inode))
}

/// Waits up to 10 s for `pid` to be gone, calling `tick` between looks; false if it
/// still runs.
fn wait_gone(pid: u32, mut tick: impl FnMut()) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        tick();
        std::thread::sleep(Duration::from_millis(1));
    }
    !process_alive(pid)
}

/// True while `pid` runs (a zombie or a missing process does not).
pub fn process_alive(pid: u32) -> bool {
    cachelock_inspect::process::alive(pid)
}

/// Generators of scenarios and interleavings for property tests, biased towards the
/// interesting cases: every scenario has a run and a clean, and children exit often
/// enough that cleans meet running and finished children alike.
pub mod generate {
    use super::Op;
    use cachelock_model::{Kind, ProcSpec, Scenario};
    use proptest::prelude::*;

    /// The runs the harness plays.
    pub const RUNS: [Kind; 6] = [
        Kind::Run,
        Kind::RunScript,
        Kind::ToolRun,
        Kind::RunNoCache,
        Kind::RunServer,
        Kind::RunDaemon,
    ];
    /// The cleaners.
    pub const CLEANS: [Kind; 3] = [Kind::Clean, Kind::CleanForce, Kind::Prune];
    const ANY: [Kind; 9] = [
        Kind::Run,
        Kind::RunScript,
        Kind::ToolRun,
        Kind::RunNoCache,
        Kind::RunServer,
        Kind::RunDaemon,
        Kind::Clean,
        Kind::CleanForce,
        Kind::Prune,
    ];

    /// A process of one of `kinds`, sometimes `+crash`, sometimes `+timeout`.
    pub fn spec(kinds: &'static [Kind]) -> impl Strategy<Value = ProcSpec> {
        (
            proptest::sample::select(kinds),
            proptest::bool::weighted(0.25),
            proptest::bool::weighted(0.25),
        )
            .prop_map(|(kind, crash, timeout)| ProcSpec {
                kind,
                crash,
                timeout,
                policy: None,
            })
    }

    /// A run of one of `runs`, a clean, and sometimes a third process of any sort.
    pub fn scenario(runs: &'static [Kind]) -> impl Strategy<Value = Scenario> {
        (spec(runs), spec(&CLEANS), proptest::option::of(spec(&ANY))).prop_map(|(r, c, x)| {
            let mut procs = vec![r, c];
            procs.extend(x);
            Scenario { procs }
        })
    }

    /// One op on one of `n` processes: mostly steps, often child exits, sometimes a
    /// kill or a timeout.
    pub fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..n).prop_map(Op::Advance),
            3 => (0..n).prop_map(Op::ChildExit),
            1 => (0..n).prop_map(Op::Kill),
            1 => (0..n).prop_map(Op::Timeout),
            1 => (0..n).prop_map(Op::StartDaemon),
            1 => (0..n).prop_map(Op::DaemonExit),
        ]
    }

    /// A scenario and up to 47 ops on it.
    pub fn case(runs: &'static [Kind]) -> impl Strategy<Value = (Scenario, Vec<Op>)> {
        scenario(runs).prop_flat_map(|sc| {
            let n = sc.procs.len();
            (Just(sc), proptest::collection::vec(op(n), 1..48))
        })
    }
}
