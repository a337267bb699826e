//! The story player: one of the model's counterexamples (its shortest story, the
//! sequence of `(process, step or event)` of `cachelock_model::check::shortest_traces`)
//! played on real processes, step by step, under the gate.
//!
//! Each model process is a real process of the runner (a uv binary, or `cachelock` under
//! a policy), started as the fidelity plays start them ([`Runner::argv`],
//! [`Runner::env`], a [`Sandbox`] whose cache is the model's initial one: root,
//! scaffold, `.lock`, entries to delete), each under a gate of its own
//! ([`super::gated::Gated`]; a nested clean under its run's, see below), at its first
//! action of the story. Then, for each action:
//! - a step: the process runs to its next gated stop that is a step it has not taken
//!   yet (repeats of a step it took, such as a lock retried or the next removal of
//!   `delete-entries`, are the same step and go on); the stop must be that step. A step
//!   the gate cannot see ([`crate::check::unseen`], the same rule as the trace check's
//!   implicit steps) is taken without a call when the process stops elsewhere; so is
//!   `release-root-lock` of a process that released `.lock` by closing its descriptor,
//!   which `/proc/locks` shows. The step is released and what came of its call is put
//!   beside the model's line: a lock the model grants must return 0, a lock the model
//!   makes wait must be seen asleep in the kernel's lock wait (the gate's `settle`), a
//!   grant after a wait must be the blocked call returning 0. `spawn-child` is the
//!   probe child's signal that it runs (the child the model means is the last process
//!   the run started, as in the trace check).
//! - `killed`: SIGKILL to the process alone (its child lives on).
//! - `child-exits`: the probe child is let go: it checks its environment, reports and
//!   exits (its `exit_group`, held at the gate, is released).
//! - `lock-timeout`: the process's own lock timeout ends its wait (runners that have
//!   one).
//!
//! A nested clean (`run-nested-clean`) is an actor of its own that shares its run's gate
//! (the gate traces the whole tree): the run's child, held at its signal since
//! `spawn-child`, is let go at the clean's first step and runs the clean's command line
//! (`CLPROBE_EXEC`). The clean's events are those of the descendant that exec'd that
//! command line (read from the stopped process's arguments) and its threads; the run
//! takes the rest. Whatever one actor pulls for the other goes into the other's held
//! queue, held until its own actor's step. The run's `child-exits` lets the clean go to
//! its end first (the model allows it only once the clean has finished).
//!
//! A daemon (`run-daemon`) is forked by the probe child, and signals in the child's place
//! (`CLPROBE_DAEMON`); the child waits for that signal and then exits. So:
//! `spawn-child` is the daemon's signal, held (the child runs, the daemon is forked and
//! stopped at the gate); `child-starts-daemon` releases it (the signal's pid must not be
//! the child's); `child-exits` releases the child's `exit_group`; `daemon-exits` lets the
//! daemon go (the go file): it checks its environment, reports, and its `exit_group` is
//! held at the gate (the gate reports the exit of a process that signalled). At the end
//! of a story that leaves the daemon running, the run is let run to its exit when the
//! model has it ended, then the daemon reports: that is how `live-env-intact` is seen for
//! a daemon.
//!
//! The first stop that is not the story's step is the divergence:
//! `step K: run#1 lock-shared: model <line>, real <what the gate saw>`. At the end of a
//! story that reproduced, the property is observed on the real side as the fidelity
//! plays observe it: the probe child's report of its environment, who held `.lock` in
//! `/proc/locks` when a deletion was released, the order of lock grants, exit codes,
//! the cache and `TMPDIR` as they are left. Then every process is let go and ends.
//!
//! Not every story can be driven: a `lock-timeout` needs a binary that has one, `clean
//! --force` a binary that has it (a stand-in is not the step), and one runner plays one
//! release. [`undrivable`] says why; the caller says so, it never skips silently.
//!
//! After a divergence nothing is let go: the processes are in a state the story does not
//! know (a nested clean may wait for its own parent's lock for ever), and are killed
//! with their trees.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use cachelock_inspect::{locks, process, wait};
use cachelock_model::check::Trace;
use cachelock_model::machine::{Action, CacheModel, Life, Outcome, State};
use cachelock_model::properties::PropertyName;
use cachelock_model::protocol::{Event as ModelEvent, Kind, Scenario, Step};
use nix::errno::Errno;

use super::gated::Gated;
use super::scenarios::fill;
use super::sys::{self, Report};
use super::{Runner, Sandbox, Seen, Setup};
use crate::check::unseen;
use crate::{Event, Settled, Syscall};

/// Bounds every wait on a process (a failure, never an order).
const LIMIT: Duration = Duration::from_secs(90);
/// Bounds the wait for a blocked lock the model grants to return (a failure: the lock
/// is still held by someone the model says let it go).
const GRANT_WITHIN: Duration = Duration::from_secs(20);

/// One action of the story: the model's line and what really happened.
#[derive(Clone, Debug)]
pub struct StoryLine {
    /// `3. run#1: lock-shared -> acquired shared on .lock inode 0`.
    pub model: String,
    /// `pid 812 flock(LOCK_SH|LOCK_NB) cache/.lock: granted (returned 0)`.
    pub real: String,
}

/// A story played.
#[derive(Clone, Debug)]
pub struct StoryPlay {
    /// The property the story breaks.
    pub property: PropertyName,
    /// One per action, up to the divergence if there was one.
    pub lines: Vec<StoryLine>,
    /// The model's last line (`=> live-env-intact: violated: …`).
    pub conclusion: String,
    /// `step K: run#1 lock-shared: model <…>, real <…>`: the first stop that was not
    /// the story's step.
    pub divergence: Option<String>,
    /// The property as the real side showed it at the end (`None` after a divergence).
    pub seen: Option<Seen>,
    /// What showed it.
    pub evidence: String,
    /// The play, with pids, for a failing test.
    pub log: Vec<String>,
}

impl StoryPlay {
    /// True when every step conformed and the property broke for real.
    pub fn reproduced(&self) -> bool {
        self.divergence.is_none() && self.seen == Some(Seen::Fails)
    }
}

/// Why `trace` cannot be driven on `runner`, if it cannot.
pub fn undrivable(runner: &dyn Runner, scenario: &Scenario, trace: &Trace) -> Option<String> {
    if scenario.procs.iter().any(|p| p.policy.is_some()) {
        return Some("a process of another release (`@policy`): one runner plays them all".into());
    }
    for p in &scenario.procs {
        if let Some(why) = runner.stand_in(p.kind) {
            return Some(format!("{}: {why}", p.kind.token()));
        }
    }
    for (_, action) in &trace.path {
        if let Some(Action::Event(_, ModelEvent::LockTimeout)) = action
            && !runner.has_lock_timeout()
        {
            return Some("a lock wait times out: this binary has no lock timeout".into());
        }
    }
    None
}

/// What a pull from a process's tree gave.
#[derive(Clone, Debug)]
enum Got {
    /// A step the process has not taken yet, held.
    Step(Event),
    /// The probe's signal that the child runs (the rename of its ready file: by the
    /// child, or by the daemon it forked), held.
    Signal(Event),
    /// The process's own `exit_group`, held.
    Exit(Event),
    /// The child's `exit_group`, held.
    ChildExit(Event),
    /// The daemon's `exit_group`, held.
    DaemonExit(Event),
    /// A released `flock` of the process (a step it had taken: a retry) sleeps in the
    /// kernel's lock wait.
    Blocked(Event),
    /// The whole tree ended; the process's exit code.
    Ended(Option<i32>),
    /// A process it started has just exec'd (held before its first instruction): a
    /// helper, or the child. Only [`Player::park`] stops here.
    Spawn(Event),
}

impl Got {
    /// The event it holds at the gate, if one is held (a blocked call was released).
    fn held(&self) -> Option<&Event> {
        match self {
            Got::Step(e)
            | Got::Signal(e)
            | Got::Exit(e)
            | Got::ChildExit(e)
            | Got::DaemonExit(e)
            | Got::Spawn(e) => Some(e),
            Got::Blocked(_) | Got::Ended(_) => None,
        }
    }
}

/// A model process and its real counterpart.
struct Actor {
    label: String,
    kind: Kind,
    /// Its gate: a process the harness starts has its own; a nested clean has none, it
    /// is under its host's (the run whose child started it).
    g: Option<Gated>,
    /// A nested clean: the run whose child starts it (the model's `host`).
    host: Option<usize>,
    /// A run whose child runs a nested clean: that clean.
    nested: Option<usize>,
    /// A nested clean: its pid, once its first stop was seen (the descendant of the host
    /// that exec'd the clean's command line).
    own_pid: Option<i32>,
    /// A nested clean: its host's child was let go to start it.
    began: bool,
    /// A nested clean the story is done with: whatever it does is let go.
    retired: bool,
    /// Held things pulled and not used yet (they stay held).
    back: VecDeque<Got>,
    taken: Vec<Step>,
    /// The `flock` seen asleep in the lock wait.
    blocked: Option<Event>,
    /// The probe's signal, held: the child runs.
    signal: Option<Event>,
    /// The last process the run started (the child, once it signalled).
    child: Option<i32>,
    child_confirmed: bool,
    /// The child's `exit_group` was released.
    child_gone: bool,
    /// The daemon the child forked (it signalled in the child's place), while it runs.
    daemon: Option<i32>,
    /// Inodes of `.lock` it was granted a lock on.
    locked: Vec<u64>,
    /// Its order among the processes started.
    order: usize,
    /// A clean: its exclusive lock was granted, or it went on without it.
    got_cache: bool,
    ended: Option<i32>,
    report: Option<Report>,
    /// The daemon's report of its environment, once it exited.
    daemon_report: Option<Report>,
    /// The environment its child reported (`sys.prefix` or `$CACHELOCK_ENV`).
    child_env: Option<std::path::PathBuf>,
}

impl Actor {
    fn g(&mut self) -> Result<&mut Gated, String> {
        self.g
            .as_mut()
            .ok_or_else(|| format!("{} was not started", self.label))
    }

    fn pid(&self) -> i32 {
        self.g
            .as_ref()
            .map_or(self.own_pid.unwrap_or(0), |g| g.pid as i32)
    }

    /// Started: under a gate of its own, or (a nested clean) let start by its host's
    /// child.
    fn started(&self) -> bool {
        self.g.is_some() || self.began
    }
}

/// The state of one story being played.
struct Player<'a> {
    runner: &'a dyn Runner,
    model: CacheModel,
    sb: Sandbox,
    actors: Vec<Actor>,
    started: usize,
    /// Deletions released while another process held `.lock` (`/proc/locks`).
    deleted_beside: Vec<String>,
    /// Runs granted the cache while a clean that started before them had not got it.
    overtook: Vec<String>,
    /// A clean's `remove-root` that failed, a run that exited before its child ran.
    failures: Vec<String>,
    /// The command line a run's child runs as its nested clean (`CLPROBE_EXEC`).
    nested_argv: Vec<String>,
    /// The model's state at the end of the story.
    end: Option<State>,
    log: Vec<String>,
}

/// Plays `trace` (a counterexample of `trace.property` under the runner's policy on
/// `scenario`) on `runner`. `Err` when it could not be played at all (the gate cannot
/// trace here, a process could not start); a divergence is an `Ok` play that says so.
pub fn play_story(
    runner: &dyn Runner,
    setup: &Setup,
    scenario: &Scenario,
    trace: &Trace,
) -> Result<StoryPlay, String> {
    if let Some(why) = undrivable(runner, scenario, trace) {
        return Err(format!("this story cannot be driven: {why}"));
    }
    let model = CacheModel::new(runner.policy(), scenario);
    let sb = Sandbox::new(&setup.wheels(), &setup.python).map_err(|e| e.to_string())?;
    // The model's initial cache: root, scaffold, `.lock`, entries for a clean.
    fill(&sb.cache).map_err(|e| e.to_string())?;
    fs::write(sb.cache.join(".lock"), b"").map_err(|e| e.to_string())?;
    let actors = model
        .procs
        .iter()
        .map(|info| Actor {
            label: info.label.clone(),
            kind: info.kind,
            g: None,
            host: info.host,
            nested: info.nested,
            own_pid: None,
            began: false,
            retired: false,
            back: VecDeque::new(),
            taken: Vec::new(),
            blocked: None,
            signal: None,
            child: None,
            child_confirmed: false,
            child_gone: false,
            daemon: None,
            locked: Vec::new(),
            order: usize::MAX,
            got_cache: false,
            ended: None,
            report: None,
            daemon_report: None,
            child_env: None,
        })
        .collect();
    let nested_argv = runner
        .argv(Kind::Clean, &sb)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut pl = Player {
        runner,
        model,
        sb,
        actors,
        nested_argv,
        end: None,
        started: 0,
        deleted_beside: Vec::new(),
        overtook: Vec::new(),
        failures: Vec::new(),
        log: Vec::new(),
    };
    let mut lines = Vec::new();
    let mut divergence = None;
    let actions: Vec<(usize, &State, Action, &State)> = trace
        .path
        .windows(2)
        .enumerate()
        .filter_map(|(i, w)| w[0].1.map(|a| (i, &w[0].0, a, &w[1].0)))
        .collect();
    for (i, before, action, after) in actions {
        let model_line = trace.story.get(i).cloned().unwrap_or_default();
        let k = i + 1;
        pl.end = Some(after.clone());
        match pl.act(action, before, after) {
            Ok(real) => lines.push(StoryLine {
                model: model_line,
                real,
            }),
            Err(Diverged(real)) => {
                let (p, what) = match action {
                    Action::Step(p, s) => (p, s.name()),
                    Action::Event(p, e) => (p, e.name()),
                };
                let model_says = model_line
                    .split_once(" -> ")
                    .map_or(model_line.as_str(), |(_, o)| o)
                    .to_string();
                divergence = Some(format!(
                    "step {k}: {} {what}: model {model_says}, real {real}",
                    pl.actors[p].label
                ));
                lines.push(StoryLine {
                    model: model_line,
                    real: format!("DIVERGES: {real}"),
                });
                break;
            }
        }
    }
    let conclusion = trace.story.last().cloned().unwrap_or_default();
    let (seen, evidence) = if divergence.is_none() {
        let (s, e) = pl.observe(trace.property)?;
        (Some(s), e)
    } else {
        (None, String::new())
    };
    pl.finish(divergence.is_none());
    Ok(StoryPlay {
        property: trace.property,
        lines,
        conclusion,
        divergence,
        seen,
        evidence,
        log: pl.log,
    })
}

/// A stop that is not the story's step: what really happened.
struct Diverged(String);

fn errno(r: i64) -> String {
    if r >= 0 {
        format!("returned {r}")
    } else {
        format!("failed {:?}", Errno::from_raw((-r) as i32))
    }
}

impl Player<'_> {
    fn rel(&self, path: Option<&Path>) -> String {
        match path {
            Some(p) => p
                .strip_prefix(&self.sb.root)
                .unwrap_or(p)
                .display()
                .to_string(),
            None => String::new(),
        }
    }

    fn describe(&self, e: &Event) -> String {
        let mut s = format!("pid {} {}", e.pid, e.syscall);
        if let Some(from) = &e.from {
            s.push(' ');
            s.push_str(&self.rel(Some(from)));
            s.push_str(" ->");
        }
        if let Some(p) = &e.path {
            s.push(' ');
            s.push_str(&self.rel(Some(p)));
        }
        s
    }

    fn describe_got(&self, g: &Got) -> String {
        match g {
            Got::Step(e) => format!(
                "{} ({})",
                self.describe(e),
                e.step.map_or("no step", Step::name)
            ),
            Got::Signal(e) => format!("pid {} runs its child (its ready signal)", e.pid),
            Got::Exit(e) | Got::ChildExit(e) | Got::DaemonExit(e) => self.describe(e),
            Got::Blocked(e) => format!("{}: asleep in the lock wait", self.describe(e)),
            Got::Spawn(e) => format!("pid {} execve {}", e.pid, self.rel(e.path.as_deref())),
            Got::Ended(code) => format!("ended (exit {code:?})"),
        }
    }

    /// The actor whose gate `p`'s process is under: its own, or its host's.
    fn host_of(&self, p: usize) -> usize {
        self.actors[p].host.unwrap_or(p)
    }

    /// The gate `p`'s process is under.
    fn gate(&mut self, p: usize) -> Result<&mut Gated, String> {
        let h = self.host_of(p);
        self.actors[h].g()
    }

    /// Which actor of the gate of `h` an event is for: the nested clean for the events
    /// of its process (the descendant that exec'd the clean's command line, and its
    /// threads), the host for the rest.
    fn owner(&mut self, h: usize, e: &Event) -> usize {
        let Some(n) = self.actors[h].nested else {
            return h;
        };
        if !self.actors[n].began {
            return h;
        }
        match self.actors[n].own_pid {
            Some(pid) if pid == e.pid => n,
            Some(_) => h,
            None => {
                let host = &self.actors[h];
                if e.pid == host.pid() || Some(e.pid) == host.child {
                    return h;
                }
                // Stopped at this event: its command line is the one it exec'd.
                if process::argv(e.pid as u32).as_deref() == Some(self.nested_argv.as_slice()) {
                    self.actors[n].own_pid = Some(e.pid);
                    self.log.push(format!(
                        "{}: pid {} runs the nested clean ({})",
                        self.actors[n].label,
                        e.pid,
                        self.nested_argv.join(" ")
                    ));
                    n
                } else {
                    h
                }
            }
        }
    }

    /// What a held event is to actor `o` (its owner): a held thing for it, or nothing
    /// to the story (then it is let go here, and a lock call of it that blocks is a held
    /// thing after all: [`Got::Blocked`]).
    fn sort(&mut self, o: usize, e: Event, stop_at_spawn: bool) -> Result<Option<Got>, String> {
        let h = self.host_of(o);
        let ready = self.actors[h].g()?.ready.clone();
        let a = &mut self.actors[o];
        let pid = a.pid();
        if a.retired {
            self.gate(o)?.let_event(e.id)?;
            return Ok(None);
        }
        if e.step.is_none() && e.syscall == Syscall::Rename && e.path.as_deref() == Some(&ready) {
            a.child_confirmed = true;
            return Ok(Some(Got::Signal(e)));
        }
        if e.pid == pid {
            if matches!(e.syscall, Syscall::ExitGroup { .. }) {
                return Ok(Some(Got::Exit(e)));
            }
            // A nested clean's exec is no step of its own.
            if let Some(s) = e.step
                && !a.taken.contains(&s)
                && !(a.host.is_some() && s == Step::SpawnChild)
            {
                return Ok(Some(Got::Step(e)));
            }
        }
        let exits = matches!(e.syscall, Syscall::ExitGroup { .. });
        if a.child_confirmed && Some(e.pid) == a.child && exits {
            return Ok(Some(Got::ChildExit(e)));
        }
        if a.daemon == Some(e.pid) && exits {
            return Ok(Some(Got::DaemonExit(e)));
        }
        if a.host.is_none()
            && e.step == Some(Step::SpawnChild)
            && e.parent == Some(pid)
            && !a.child_confirmed
        {
            a.child = Some(e.pid);
            if stop_at_spawn {
                return Ok(Some(Got::Spawn(e)));
            }
        }
        let settled = self.gate(o)?.let_event(e.id)?;
        let a = &mut self.actors[o];
        if e.pid == pid
            && let Some(Step::LockShared | Step::LockExclusive) = e.step
        {
            match settled {
                Settled::Blocked => return Ok(Some(Got::Blocked(e))),
                Settled::Returned(0) => a.locked.extend(e.inode),
                _ => {}
            }
        } else if settled == Settled::Blocked {
            return Ok(Some(Got::Blocked(e)));
        }
        Ok(None)
    }

    /// The next held thing of `p` from its gate, letting go whatever is nothing to the
    /// story (helpers, the child's other stops, repeats of steps taken). What is for the
    /// other actor of a shared gate goes into its held queue, held.
    fn pull_fresh(&mut self, p: usize, stop_at_spawn: bool) -> Result<Got, String> {
        let h = self.host_of(p);
        loop {
            let Some(e) = self.actors[h].g()?.next_event()? else {
                let code = self.actors[h].g()?.status();
                self.actors[h].ended = code;
                if let Some(n) = self.actors[h].nested
                    && let Some(pid) = self.actors[n].own_pid
                {
                    let c = self.actors[h].g()?.exit_of(pid);
                    self.actors[n].ended = self.actors[n].ended.or(c);
                }
                return Ok(Got::Ended(self.actors[p].ended));
            };
            let o = self.owner(h, &e);
            match self.sort(o, e, stop_at_spawn && o == p)? {
                Some(got) if o == p => return Ok(got),
                Some(got) => self.actors[o].back.push_back(got),
                None => {}
            }
        }
    }

    /// The next held thing of `p` (what was put back first); a held exec of a process it
    /// started goes on.
    fn pull(&mut self, p: usize) -> Result<Got, String> {
        loop {
            let got = match self.actors[p].back.pop_front() {
                Some(g) => g,
                None => self.pull_fresh(p, false)?,
            };
            match got {
                Got::Spawn(e) => {
                    self.gate(p)?.let_event(e.id)?;
                }
                other => return Ok(other),
            }
        }
    }

    /// The story is done with nested clean `n`: what it holds goes, and so does whatever
    /// it does from now on.
    fn retire(&mut self, n: usize) -> Result<(), String> {
        if self.actors[n].retired || !self.actors[n].began {
            return Ok(());
        }
        self.actors[n].retired = true;
        self.actors[n].blocked = None;
        let held: Vec<Got> = self.actors[n].back.drain(..).collect();
        for got in held {
            if let Some(e) = got.held() {
                if let Syscall::ExitGroup { code } = e.syscall {
                    self.actors[n].ended = Some(code);
                }
                self.gate(n)?.let_event(e.id)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, p: usize) -> Result<(), String> {
        if self.actors[p].started() {
            return Ok(());
        }
        if let Some(h) = self.actors[p].host {
            return self.start_nested(p, h);
        }
        let spec = self.model.procs[p].spec;
        let argv = self.runner.argv(spec.kind, &self.sb);
        let mut env: Vec<(OsString, OsString)> = self.runner.env(&self.sb, spec.timeout);
        match spec.kind {
            // The child runs the nested clean once it is let go (and the clean inherits
            // the run's environment, its lock timeout too).
            Kind::RunNestedClean => {
                let json = serde_json::to_string(&self.nested_argv).map_err(|e| e.to_string())?;
                env.push(("CLPROBE_EXEC".into(), json.into()));
            }
            // The child forks a daemon, which signals in its place; the child exits once
            // the signal is released.
            Kind::RunDaemon => env.push(("CLPROBE_DAEMON".into(), "1".into())),
            _ => {}
        }
        let name = self.actors[p].label.clone();
        let g = Gated::spawn(&name, &self.sb.root, &argv, &env, &self.sb.cache, LIMIT)?;
        self.log
            .push(format!("start {name} (pid {}) under the gate", g.pid));
        self.actors[p].g = Some(g);
        self.actors[p].order = self.started;
        self.started += 1;
        Ok(())
    }

    /// A nested clean starts: its host's child, held at its signal, is let go, and runs
    /// the clean (whose steps its host's gate then holds).
    fn start_nested(&mut self, p: usize, h: usize) -> Result<(), String> {
        let host = &mut self.actors[h];
        let Some(sig) = host.signal.take() else {
            return Err(format!("{}'s child does not run", host.label));
        };
        host.child_env = host
            .g
            .as_ref()
            .and_then(|g| fs::read_to_string(&g.ready).ok())
            .and_then(|t| t.lines().nth(1).map(std::path::PathBuf::from));
        let g = host.g()?;
        g.let_event(sig.id)?;
        g.let_child_go();
        let child = host.child.map_or("?".to_string(), |c| c.to_string());
        self.log.push(format!(
            "start {} (the child pid {child} of {} is let go: it runs the clean)",
            self.actors[p].label, self.actors[h].label
        ));
        let a = &mut self.actors[p];
        a.began = true;
        a.order = self.started;
        self.started += 1;
        Ok(())
    }

    /// `.lock` locks held now by the processes of every actor but `p` (their process
    /// groups: a child that inherited the descriptor too).
    fn root_holders_besides(&self, p: usize) -> Vec<String> {
        let mut inodes: Vec<u64> = self.actors.iter().flat_map(|a| a.locked.clone()).collect();
        inodes.extend(sys::inode(&self.sb.lock_file()));
        let mut out = Vec::new();
        let me = self.actors[p].pid() as u32;
        for (q, a) in self.actors.iter().enumerate() {
            if q == p || a.g.is_none() {
                continue;
            }
            // A nested clean is in its host's group: its own locks are not its host's.
            for m in process::group_members(a.pid() as u32)
                .into_iter()
                .filter(|m| *m != me)
            {
                for l in locks::held_by(m) {
                    if !l.waiting && inodes.contains(&l.inode) {
                        out.push(format!(
                            "{} (pid {m}) holds {} on .lock inode {}",
                            a.label,
                            l.mode.name(),
                            l.inode
                        ));
                    }
                }
            }
        }
        out
    }

    /// Plays one action; the real side's line, or the divergence.
    fn act(&mut self, action: Action, before: &State, after: &State) -> Result<String, Diverged> {
        let p = match action {
            Action::Step(p, _) | Action::Event(p, _) => p,
        };
        self.start(p).map_err(Diverged)?;
        let r = match action {
            Action::Step(_, step) => self.step(p, step, before, after),
            Action::Event(_, e) => self.event(p, e),
        };
        // Parked: the process runs on to its next stop (held there) before anyone
        // else acts, so that what it does between two steps does not race the others.
        let parks = match action {
            Action::Step(_, s) => s != Step::SpawnChild,
            Action::Event(_, e) => e == ModelEvent::ChildExits,
        };
        if r.is_ok() && parks {
            self.park(p).map_err(Diverged)?;
        }
        if let Ok(line) = &r {
            self.log.push(format!("{}: {line}", self.actors[p].label));
        }
        r
    }

    fn event(&mut self, p: usize, e: ModelEvent) -> Result<String, Diverged> {
        let d = |e: String| Diverged(e);
        match e {
            ModelEvent::Killed => {
                let a = &mut self.actors[p];
                let pid = a.pid();
                let code = a.g().map_err(d)?.kill_self().map_err(d)?;
                a.ended = Some(code);
                a.back
                    .retain(|g| !matches!(g, Got::Step(e) | Got::Exit(e) if e.pid == pid));
                let child = match (a.child_confirmed, a.child) {
                    (true, Some(c)) if process::alive(c as u32) => {
                        format!("; its child (pid {c}) lives on")
                    }
                    _ => String::new(),
                };
                Ok(format!("SIGKILL pid {pid}: exit {code}{child}"))
            }
            ModelEvent::ChildExits => self.child_exits(p),
            ModelEvent::LockTimeout => {
                if self.actors[p].blocked.is_none() {
                    return Err(d("it was not seen waiting for a lock".into()));
                }
                loop {
                    match self.pull(p).map_err(d)? {
                        Got::Exit(e) => {
                            let code = match e.syscall {
                                Syscall::ExitGroup { code } => code,
                                _ => -1,
                            };
                            self.gate(p).map_err(d)?.let_event(e.id).map_err(d)?;
                            let a = &mut self.actors[p];
                            a.blocked = None;
                            return if code == 2 {
                                a.ended = Some(code);
                                Ok(format!(
                                    "pid {}: its lock wait timed out: exit_group(2)",
                                    e.pid
                                ))
                            } else {
                                Err(d(format!("pid {} exit_group({code})", e.pid)))
                            };
                        }
                        Got::Ended(code) => {
                            return Err(d(format!("the process ended (exit {code:?})")));
                        }
                        Got::Blocked(_) => {}
                        other => {
                            let what = self.describe_got(&other);
                            return Err(d(format!("{what} before its lock wait timed out")));
                        }
                    }
                }
            }
            ModelEvent::ChildStartsDaemon => self.daemon_starts(p),
            ModelEvent::DaemonExits => self.daemon_exits(p),
        }
    }

    /// `child-starts-daemon`: the child forked its daemon before it signalled, and the
    /// daemon signalled in its place (the ready file names the daemon), held there since
    /// `spawn-child`; the signal is let go now: the daemon runs on its own, and the child,
    /// which waited for that signal, goes on to its exit (held at the gate).
    fn daemon_starts(&mut self, p: usize) -> Result<String, Diverged> {
        let d = |e: String| Diverged(e);
        let a = &mut self.actors[p];
        let Some(sig) = a.signal.take() else {
            return Err(d("no child of it runs".into()));
        };
        let child = a.child.unwrap_or(0);
        if sig.pid == child {
            a.signal = Some(sig);
            return Err(d(format!(
                "the child pid {child} signalled itself: it started no daemon"
            )));
        }
        a.child_env =
            a.g.as_ref()
                .and_then(|g| fs::read_to_string(&g.ready).ok())
                .and_then(|t| t.lines().nth(1).map(std::path::PathBuf::from));
        a.g().map_err(d)?.let_event(sig.id).map_err(d)?;
        a.daemon = Some(sig.pid);
        Ok(format!(
            "pid {} (forked by the child pid {child}) renames its ready file into place: the daemon runs",
            sig.pid
        ))
    }

    /// `daemon-exits`: the daemon is let go (the go file): it checks its environment,
    /// reports, and its `exit_group` is seen at the gate.
    fn daemon_exits(&mut self, p: usize) -> Result<String, Diverged> {
        let d = |e: String| Diverged(e);
        let Some(daemon) = self.actors[p].daemon else {
            return Err(d("no daemon of it runs".into()));
        };
        self.actors[p].g().map_err(d)?.let_child_go();
        loop {
            match self.pull_fresh(p, false).map_err(d)? {
                Got::DaemonExit(e) => {
                    let a = &mut self.actors[p];
                    let report =
                        a.g.as_ref()
                            .and_then(|g| fs::read_to_string(&g.report).ok())
                            .map(|t| Report::parse(&t));
                    a.g().map_err(d)?.let_event(e.id).map_err(d)?;
                    a.daemon = None;
                    let what = match &report {
                        Some(r) if r.ok => "its environment intact".to_string(),
                        Some(r) => format!(
                            "its environment LOST ({})",
                            r.problem.trim().trim_end_matches(';')
                        ),
                        None => "no report".to_string(),
                    };
                    a.daemon_report = report;
                    return Ok(format!("daemon pid {daemon} checked {what}; {}", e.syscall));
                }
                Got::Ended(code) => {
                    return Err(d(format!(
                        "the tree ended (exit {code:?}) before the daemon's exit was seen"
                    )));
                }
                other => self.actors[p].back.push_back(other),
            }
        }
    }

    /// Lets the probe child check its environment, report and exit; the child of a run
    /// with a daemon just exits (the daemon reports); the child of a run with a nested
    /// clean was let go when the clean started, and the clean, done in the story, is let
    /// go to its end first.
    fn child_exits(&mut self, p: usize) -> Result<String, Diverged> {
        let d = |e: String| Diverged(e);
        let a = &mut self.actors[p];
        let daemon = a.daemon.is_some() || a.daemon_report.is_some();
        match a.signal.take() {
            Some(sig) if !daemon => {
                a.child_env =
                    a.g.as_ref()
                        .and_then(|g| fs::read_to_string(&g.ready).ok())
                        .and_then(|t| t.lines().nth(1).map(std::path::PathBuf::from));
                a.g().map_err(d)?.let_event(sig.id).map_err(d)?;
                a.g().map_err(d)?.let_child_go();
            }
            Some(sig) => {
                a.signal = Some(sig);
                return Err(d("its daemon has not signalled".into()));
            }
            None => {
                let nested_began = a.nested.is_some_and(|n| self.actors[n].began);
                if !(daemon || nested_began) || self.actors[p].child_gone {
                    return Err(d("no child of it runs".into()));
                }
            }
        }
        if let Some(n) = self.actors[p].nested {
            self.retire(n).map_err(d)?;
        }
        loop {
            match self.pull_fresh(p, false).map_err(d)? {
                Got::ChildExit(e) => {
                    let a = &mut self.actors[p];
                    let report = if daemon {
                        None
                    } else {
                        a.g.as_ref()
                            .and_then(|g| fs::read_to_string(&g.report).ok())
                            .map(|t| Report::parse(&t))
                    };
                    a.g().map_err(d)?.let_event(e.id).map_err(d)?;
                    a.child_gone = true;
                    let what = match &report {
                        _ if daemon => "exits (its daemon runs on)".to_string(),
                        Some(r) if r.ok => "checked its environment intact".to_string(),
                        Some(r) => format!(
                            "checked its environment LOST ({})",
                            r.problem.trim().trim_end_matches(';')
                        ),
                        None => "checked: no report".to_string(),
                    };
                    a.report = report;
                    return Ok(format!("child pid {} {what}; {}", e.pid, e.syscall));
                }
                Got::Ended(code) => {
                    self.actors[p].ended = code;
                    return Err(d(format!("the tree ended (exit {code:?}) with the child")));
                }
                other => self.actors[p].back.push_back(other),
            }
        }
    }

    /// Runs `p` to its next stop and holds it there, unless it is held, blocked, ended,
    /// or only waits for its child.
    fn park(&mut self, p: usize) -> Result<(), String> {
        let a = &self.actors[p];
        if !a.back.is_empty()
            || a.blocked.is_some()
            || a.ended.is_some()
            || a.signal.is_some()
            || a.retired
        {
            return Ok(());
        }
        let got = self.pull_fresh(p, true)?;
        let a = &mut self.actors[p];
        match got {
            Got::Ended(code) => a.ended = code,
            Got::Blocked(e) => a.blocked = Some(e),
            other => a.back.push_front(other),
        }
        Ok(())
    }

    /// True if `p` is seen holding no lock on `.lock` (its pid, in `/proc/locks`).
    fn released_root(&self, p: usize) -> bool {
        let a = &self.actors[p];
        let pid = a.pid() as u32;
        !locks::held_by(pid)
            .iter()
            .any(|l| !l.waiting && a.locked.contains(&l.inode))
    }

    fn step(
        &mut self,
        p: usize,
        step: Step,
        before: &State,
        after: &State,
    ) -> Result<String, Diverged> {
        let d = |e: String| Diverged(e);
        let waits = after.procs[p].life == Life::Waiting;
        let grant = before.procs[p].life == Life::Waiting;
        if grant {
            let a = &mut self.actors[p];
            let Some(b) = a.blocked.take() else {
                return Err(d("it was never seen waiting".into()));
            };
            let r = self.gate(p).map_err(d)?.wait_return(b.id, GRANT_WITHIN);
            let desc = self.describe(&b);
            let a = &mut self.actors[p];
            return match r {
                Ok(Settled::Returned(0)) => {
                    a.taken.push(step);
                    a.locked.extend(b.inode);
                    if step == Step::LockExclusive {
                        a.got_cache = true;
                    }
                    if step == Step::LockShared {
                        self.note_overtaking(p);
                    }
                    Ok(format!("{desc}: granted (the blocked call returned 0)"))
                }
                Ok(Settled::Returned(r)) => Err(d(format!("{desc}: {}", errno(r)))),
                Ok(other) => Err(d(format!("{desc}: {other:?}"))),
                Err(e) => Err(d(format!(
                    "{desc}: still asleep in the lock wait after {}s ({e})",
                    GRANT_WITHIN.as_secs()
                ))),
            };
        }
        if step == Step::SpawnChild {
            return self.spawn(p, after);
        }
        let got = self.pull(p).map_err(d)?;
        let matched = matches!(&got, Got::Step(e) if e.step == Some(step));
        if !matched {
            let what = self.describe_got(&got);
            let skippable = unseen(step)
                || (step == Step::ReleaseRootLock && self.released_root(p))
                || (step == Step::WaitForChild);
            if skippable && !matches!(got, Got::Ended(_)) {
                let a = &mut self.actors[p];
                a.back.push_front(got);
                a.taken.push(step);
                let why = if step == Step::ReleaseRootLock {
                    "released by closing its descriptor: /proc/locks shows no lock of it on .lock"
                } else {
                    "not a call the gate stops at here"
                };
                return Ok(format!("(no call: {why}; next stop: {what})"));
            }
            if let Got::Ended(code) = got {
                self.actors[p].ended = code;
            } else {
                self.actors[p].back.push_front(got);
            }
            if step == Step::ReleaseRootLock {
                return Err(d(format!(
                    "pid {} still holds its lock on .lock (/proc/locks), and next: {what}",
                    self.actors[p].pid()
                )));
            }
            return Err(d(what));
        }
        let Got::Step(e) = got else {
            unreachable!("matched above")
        };
        let desc = self.describe(&e);
        if step == Step::DeleteEntries {
            let holders = self.root_holders_besides(p);
            if !holders.is_empty() {
                self.deleted_beside.push(format!(
                    "{} deleted {} while {}",
                    self.actors[p].label,
                    self.rel(e.path.as_deref()),
                    holders.join(", ")
                ));
            }
        }
        let settled = self.gate(p).map_err(d)?.let_event(e.id).map_err(d)?;
        self.actors[p].taken.push(step);
        let is_lock = matches!(
            step,
            Step::LockShared | Step::LockExclusive | Step::AwaitAnnouncedCleans | Step::LockEnv
        );
        if !is_lock {
            let out = match settled {
                Settled::Returned(r) => errno(r),
                Settled::Blocked => "asleep in the lock wait".to_string(),
                Settled::Gone => "its thread is gone".to_string(),
            };
            let mut extra = String::new();
            if step == Step::DeleteEntries {
                // The model's deletion is one step: its further removals go on, up to
                // the process's next stop (held).
                let next = self.pull(p).map_err(d)?;
                extra = format!(
                    "; the deletion ran to its end, next stop: {}",
                    self.describe_got(&next)
                );
                let a = &mut self.actors[p];
                match next {
                    Got::Ended(code) => a.ended = code,
                    Got::Blocked(e) => a.blocked = Some(e),
                    other => a.back.push_front(other),
                }
            }
            // A step the model says fails must fail for real, and one it says does
            // its work must not.
            let model_fails = matches!(
                after.procs[p].life,
                Life::Done(
                    Outcome::EnvVanished
                        | Outcome::RootVanished
                        | Outcome::RootNotEmpty
                        | Outcome::SpawnFailed
                )
            );
            let real_fails = matches!(settled, Settled::Returned(r) if r < 0);
            let strict = matches!(
                step,
                Step::RemoveRoot | Step::PersistEnv | Step::UnlinkLockFile
            );
            if (model_fails && !real_fails) || (strict && real_fails && !model_fails) {
                return Err(d(format!("{desc}: {out}")));
            }
            if real_fails && model_fails {
                self.failures
                    .push(format!("{}'s {step} {out}", self.actors[p].label));
            }
            return Ok(format!("{desc}: {out}{extra}"));
        }
        let forced = after.procs[p].forced && !before.procs[p].forced;
        let gave_up = after.procs[p].life == Life::Done(Outcome::GaveUp);
        let a = &mut self.actors[p];
        match (settled, waits, forced || gave_up) {
            (Settled::Blocked, true, _) => {
                a.blocked = Some(e);
                Ok(format!(
                    "{desc}: blocked (asleep in the kernel's lock wait)"
                ))
            }
            (Settled::Returned(r), true, _) if r < 0 => {
                // A refused try (`LOCK_NB`); the wait is the blocking retry.
                match self.pull(p).map_err(d)? {
                    Got::Blocked(b) => {
                        let bdesc = self.describe(&b);
                        self.actors[p].blocked = Some(b);
                        Ok(format!(
                            "{desc}: {}; then {bdesc}: blocked (asleep in the kernel's lock wait)",
                            errno(r)
                        ))
                    }
                    other => {
                        let what = self.describe_got(&other);
                        self.actors[p].back.push_front(other);
                        Err(d(format!("{desc}: {}; then {what}", errno(r))))
                    }
                }
            }
            (Settled::Returned(r), false, true) if r < 0 => {
                if step == Step::LockExclusive {
                    a.got_cache = true;
                }
                Ok(format!(
                    "{desc}: {} (busy): it goes on without it",
                    errno(r)
                ))
            }
            (Settled::Returned(0), false, false) => {
                a.locked.extend(e.inode);
                if step == Step::LockExclusive {
                    a.got_cache = true;
                }
                if step == Step::LockShared {
                    self.note_overtaking(p);
                }
                Ok(format!("{desc}: granted (returned 0)"))
            }
            (Settled::Blocked, _, _) => Err(d(format!("{desc}: blocked in the lock wait"))),
            (Settled::Returned(r), _, _) => Err(d(format!("{desc}: {}", errno(r)))),
            (Settled::Gone, _, _) => Err(d(format!("{desc}: its thread is gone"))),
        }
    }

    /// A run `p` was granted the cache: a clean started before it that has not got it
    /// was overtaken.
    fn note_overtaking(&mut self, p: usize) {
        if !self.actors[p].kind.is_run() {
            return;
        }
        let me = self.actors[p].order;
        for a in &self.actors {
            if a.kind.is_clean() && a.started() && a.order < me && !a.got_cache {
                self.overtook.push(format!(
                    "{} got its shared lock on .lock while {} (started before it) had not got the cache",
                    self.actors[p].label, a.label
                ));
            }
        }
    }

    /// `spawn-child`: the probe child's signal (the child the model means is the last
    /// process the run started); or, where the model's spawn fails, the run's exit
    /// without a child.
    fn spawn(&mut self, p: usize, after: &State) -> Result<String, Diverged> {
        let d = |e: String| Diverged(e);
        let fails = after.procs[p].life == Life::Done(Outcome::SpawnFailed);
        let got = self.pull(p).map_err(d)?;
        match got {
            Got::Signal(e) => {
                let a = &mut self.actors[p];
                a.taken.push(Step::SpawnChild);
                let child = a.child.map_or("?".to_string(), |c| c.to_string());
                a.signal = Some(e);
                let line = format!(
                    "pid {child} execve (the last process pid {} started): the child runs",
                    a.pid()
                );
                if fails {
                    return Err(d(line));
                }
                Ok(line)
            }
            Got::Exit(e) if fails => {
                let a = &mut self.actors[p];
                let err = a.g.as_ref().map(Gated::stderr).unwrap_or_default();
                let why = err
                    .lines()
                    .find(|l| l.contains("rror"))
                    .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or("(nothing on stderr)")
                    .trim()
                    .to_string();
                a.taken.push(Step::SpawnChild);
                self.failures.push(format!(
                    "{} exited without running its child: {why}",
                    self.actors[p].label
                ));
                Ok(format!(
                    "pid {} {} before any child ran: {why}",
                    e.pid, e.syscall
                ))
            }
            other => {
                let what = self.describe_got(&other);
                if let Got::Ended(code) = other {
                    self.actors[p].ended = code;
                } else {
                    self.actors[p].back.push_front(other);
                }
                Err(d(what))
            }
        }
    }

    /// Lets each process whose last step was `delete-entries` finish it (its further
    /// removals are the same step) up to its next stop.
    fn settle_story(&mut self) -> Result<(), String> {
        for p in 0..self.actors.len() {
            if !self.actors[p].started() || self.actors[p].ended.is_some() || self.actors[p].retired
            {
                continue;
            }
            if self.actors[p].taken.last() == Some(&Step::DeleteEntries)
                && self.actors[p].back.is_empty()
                && self.actors[p].blocked.is_none()
            {
                let got = self.pull(p)?;
                self.log.push(format!(
                    "{} next: {}",
                    self.actors[p].label,
                    self.describe_got(&got)
                ));
                match got {
                    Got::Ended(code) => self.actors[p].ended = code,
                    Got::Blocked(e) => self.actors[p].blocked = Some(e),
                    other => self.actors[p].back.push_front(other),
                }
            }
        }
        Ok(())
    }

    /// The property on the real side at the end of the story.
    fn observe(&mut self, property: PropertyName) -> Result<(Seen, String), String> {
        use PropertyName as P;
        self.settle_story()?;
        let fails = |why: String| (Seen::Fails, why);
        Ok(match property {
            P::LiveEnvIntact => {
                let mut lost: Vec<String> = self.failures.clone();
                for p in 0..self.actors.len() {
                    self.let_children_report(p)?;
                    let a = &self.actors[p];
                    if let Some(r) = &a.report
                        && !r.ok
                    {
                        lost.push(format!(
                            "{}'s child lost its environment ({})",
                            a.label,
                            r.problem.trim().trim_end_matches(';')
                        ));
                    }
                    if let Some(r) = &a.daemon_report
                        && !r.ok
                    {
                        lost.push(format!(
                            "{}'s daemon lost its environment ({})",
                            a.label,
                            r.problem.trim().trim_end_matches(';')
                        ));
                    }
                }
                if lost.is_empty() {
                    (
                        Seen::Holds,
                        "every child found its environment intact".into(),
                    )
                } else {
                    fails(lost.join("; "))
                }
            }
            P::MutualExclusion | P::RootLockExclusion => {
                if self.deleted_beside.is_empty() {
                    (
                        Seen::Holds,
                        "no deletion was released while another process held .lock".into(),
                    )
                } else {
                    fails(self.deleted_beside.join("; "))
                }
            }
            P::NoOvertaking => {
                if self.overtook.is_empty() {
                    (
                        Seen::Holds,
                        "no run got the cache before a clean that started first".into(),
                    )
                } else {
                    fails(self.overtook.join("; "))
                }
            }
            P::NoDeadlock | P::CleanTerminates | P::CleanSucceeds => {
                // Stuck: alive and asleep in a lock wait (itself or its group), or
                // waiting for a child whose nested clean is.
                let stuck: Vec<String> = (0..self.actors.len())
                    .filter(|&i| property == P::NoDeadlock || self.actors[i].kind.is_clean())
                    .filter_map(|i| {
                        self.stuck(i)
                            .map(|w| format!("{} {w}", self.actors[i].label))
                    })
                    .collect();
                let alive = (0..self.actors.len()).filter(|&i| self.alive(i)).count();
                match property {
                    P::NoDeadlock if alive > 0 && stuck.len() == alive => fails(format!(
                        "every live process is blocked: {}",
                        stuck.join("; ")
                    )),
                    P::NoDeadlock => (
                        Seen::Holds,
                        format!("{} of {alive} live processes blocked", stuck.len()),
                    ),
                    _ if !stuck.is_empty() => fails(format!(
                        "when nothing else could happen in the story, {}",
                        stuck.join("; ")
                    )),
                    P::CleanSucceeds if !self.failures.is_empty() => {
                        fails(self.failures.join("; "))
                    }
                    _ => {
                        // The cleans' own ends, once everything may go.
                        let ends = self.run_out()?;
                        let bad: Vec<String> = ends
                            .iter()
                            .filter(|(_, kind, code)| {
                                kind.is_clean()
                                    && (*code != Some(0)
                                        || property == P::CleanTerminates && code.is_none())
                            })
                            .map(|(l, _, c)| format!("{l} exited {c:?}"))
                            .collect();
                        if bad.is_empty() {
                            (Seen::Holds, "every clean exited 0".into())
                        } else {
                            fails(bad.join("; "))
                        }
                    }
                }
            }
            P::NoLeakedTemp => {
                self.run_out()?;
                let left = sys::entries(&self.sb.tmp).unwrap_or_default();
                if left.is_empty() {
                    (Seen::Holds, "no temporary cache remained in TMPDIR".into())
                } else {
                    fails(format!(
                        "TMPDIR still holds {left:?} when every process has ended"
                    ))
                }
            }
            P::CleanRemovesUnused => {
                let live: Vec<std::path::PathBuf> = self
                    .actors
                    .iter()
                    .filter(|a| a.signal.is_some())
                    .filter_map(|a| {
                        let g = a.g.as_ref()?;
                        let t = fs::read_to_string(&g.ready).ok()?;
                        t.lines().nth(1).map(std::path::PathBuf::from)
                    })
                    .collect();
                let left: Vec<String> = sys::envs_below(&self.sb.cache)
                    .into_iter()
                    .filter(|e| !live.iter().any(|l| l.starts_with(e) || e.starts_with(l)))
                    .map(|e| self.rel(Some(&e)))
                    .collect();
                if left.is_empty() {
                    (Seen::Holds, "no unused environment was left".into())
                } else {
                    fails(format!("unused environments left: {left:?}"))
                }
            }
            P::CleanOverlapsChild | P::RunsShareLock => (
                Seen::Holds,
                "a witness: no counterexample story to observe".into(),
            ),
        })
    }

    /// True if `i` has started and not ended (a nested clean the story is done with
    /// counts as ended).
    fn alive(&self, i: usize) -> bool {
        let a = &self.actors[i];
        a.started() && a.ended.is_none() && !a.retired
    }

    /// How `i` is stuck, if it is: asleep in a lock wait (itself, or a process of its
    /// group), or, a run whose child runs a nested clean, waiting for a child that waits
    /// for a nested clean that is.
    fn stuck(&self, i: usize) -> Option<String> {
        if !self.alive(i) {
            return None;
        }
        let a = &self.actors[i];
        let asleep = |w: wait::LockWait| format!("is asleep in a lock wait ({})", w.details);
        if a.host.is_some() {
            return wait::lock_wait(a.pid() as u32).map(asleep);
        }
        if let Some(n) = a.nested
            && self.alive(n)
        {
            let child = a.child.map_or("?".to_string(), |c| c.to_string());
            return self.stuck(n).map(|w| {
                format!(
                    "waits for its child (pid {child}), which waits for {}, which {w}",
                    self.actors[n].label
                )
            });
        }
        process::group_members(a.pid() as u32)
            .into_iter()
            .find_map(wait::lock_wait)
            .map(asleep)
    }

    /// At the end of the story, the children that can still tell whether their
    /// environment is intact do: a run's child (after its nested clean ran to its end),
    /// a daemon (after its run, once the model has the run ended, has exited).
    fn let_children_report(&mut self, p: usize) -> Result<(), String> {
        let label = self.actors[p].label.clone();
        let mut lines = Vec::new();
        let daemon_kind = self.actors[p].kind == Kind::RunDaemon;
        if daemon_kind && self.actors[p].signal.is_some() {
            lines.push(self.daemon_starts(p).map_err(|Diverged(e)| e)?);
        }
        let a = &self.actors[p];
        let nested_began = a.nested.is_some_and(|n| self.actors[n].began);
        let child_runs = a.signal.is_some()
            || (!a.child_gone && (a.daemon.is_some() || nested_began) && a.ended.is_none());
        if child_runs {
            lines.push(self.child_exits(p).map_err(|Diverged(e)| e)?);
        }
        if self.actors[p].daemon.is_some() {
            let run_done = self
                .end
                .as_ref()
                .is_some_and(|s| matches!(s.procs[p].life, Life::Done(_) | Life::Killed));
            if run_done && self.actors[p].ended.is_none() {
                lines.push(self.run_to_end(p)?);
            }
            lines.push(self.daemon_exits(p).map_err(|Diverged(e)| e)?);
        }
        for line in lines {
            self.log.push(format!("{label}: {line}"));
        }
        Ok(())
    }

    /// Lets `p` take every stop it has left up to its own exit (the story has it
    /// ended); what it started lives on.
    fn run_to_end(&mut self, p: usize) -> Result<String, String> {
        let mut went = Vec::new();
        loop {
            let got = self.pull(p)?;
            match got {
                Got::Exit(e) => {
                    let code = match e.syscall {
                        Syscall::ExitGroup { code } => code,
                        _ => -1,
                    };
                    self.gate(p)?.let_event(e.id)?;
                    self.actors[p].ended = Some(code);
                    return Ok(format!(
                        "it runs to its end ({}): pid {} exit_group({code})",
                        if went.is_empty() {
                            "no stop left".to_string()
                        } else {
                            went.join(", ")
                        },
                        e.pid
                    ));
                }
                Got::Ended(code) => {
                    self.actors[p].ended = code;
                    return Ok(format!("it ran to its end (exit {code:?})"));
                }
                Got::Blocked(e) => {
                    return Err(format!(
                        "{} blocked on its way to its end: {}",
                        self.actors[p].label,
                        self.describe(&e)
                    ));
                }
                other => {
                    went.push(self.describe_got(&other));
                    if let Some(e) = other.held() {
                        let id = e.id;
                        self.gate(p)?.let_event(id)?;
                    }
                }
            }
        }
    }

    /// Lets every process go and waits until all have ended; each one's exit code. A
    /// nested clean the story left waiting for a lock its own host holds, with no lock
    /// timeout to end the wait, would wait forever: its tree is killed.
    fn run_out(&mut self) -> Result<Vec<(String, Kind, Option<i32>)>, String> {
        for h in 0..self.actors.len() {
            let Some(n) = self.actors[h].nested else {
                continue;
            };
            let why = if !self.actors[n].began {
                // A child let go would start the nested clean the story never started.
                Some(format!("the story did not start {}", self.actors[n].label))
            } else if self.alive(n)
                && self.actors[n].blocked.is_some()
                && !(self.model.procs[n].spec.timeout && self.runner.has_lock_timeout())
            {
                Some(format!(
                    "{} waits for a lock its host holds",
                    self.actors[n].label
                ))
            } else {
                None
            };
            if let Some(why) = why
                && self.actors[h].ended.is_none()
                && let Some(g) = self.actors[h].g.as_mut()
            {
                let code = g.kill_tree()?;
                self.actors[h].ended = Some(code);
                self.log.push(format!(
                    "{} killed with its tree: {why}",
                    self.actors[h].label
                ));
            }
        }
        for a in self.actors.iter_mut() {
            if let Some(g) = a.g.as_mut() {
                g.let_child_go();
                g.unhold()?;
            }
        }
        let mut out = Vec::new();
        for i in 0..self.actors.len() {
            let a = &mut self.actors[i];
            let Some(g) = a.g.as_mut() else { continue };
            let code = match a.ended {
                Some(c) => Some(c),
                None => g.go().ok(),
            };
            a.ended = code;
            self.log.push(format!("{} exit {code:?}", a.label));
            out.push((a.label.clone(), a.kind, code));
            // Its nested clean ended with it.
            if let Some(n) = a.nested
                && let Some(pid) = self.actors[n].own_pid
            {
                let seen = self.actors[i].g.as_mut().and_then(|g| g.exit_of(pid));
                let a = &mut self.actors[n];
                a.ended = a.ended.or(seen);
                self.log.push(format!("{} exit {:?}", a.label, a.ended));
                out.push((a.label.clone(), a.kind, a.ended));
            }
        }
        Ok(out)
    }

    /// Lets everything end (and kills what does not).
    /// After a divergence (`!conformed`) nothing is let go: the processes are in a state
    /// the story does not know, and may wait for each other for ever (a nested clean for
    /// its own parent's lock); they are killed with their trees.
    fn finish(&mut self, conformed: bool) {
        if conformed {
            let _ = self.run_out();
        }
        for a in self.actors.iter_mut() {
            a.g = None;
        }
    }
}
