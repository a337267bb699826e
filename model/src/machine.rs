//! The stateright model: processes sharing one cache, a lock table with flock
//! semantics, and the cache's contents.
//!
//! Rules the model keeps (see `crate::protocol` for the vocabulary):
//! - Each process runs its policy's program ([`Policy::program`]) in order. A step is an
//!   action of the model; `actions()` says which steps are enabled and `next_state()` what
//!   they do. A lock step first *tries*; if the lock is busy the process is `Waiting` at
//!   that step and the same step becomes enabled again only when the lock can be granted
//!   (the blocking call returns).
//! - Locks live on inodes, not paths: `OpenLockFile` binds a descriptor to the inode that
//!   `.lock` names at that moment. `UnlinkLockFile` detaches the path, so a later open
//!   creates a fresh inode that nobody else has locked.
//! - A run's environment lock is one open file description shared by the run, its child
//!   and the child's daemon (when inherited); it is held while any of them has it open,
//!   and `UnlockEnvLock` releases it for all of them.
//! - Each run builds in a directory of its own and renames it into place: a clean that
//!   deletes the builds makes that run's `PersistEnv` fail, not another's. The root can
//!   only be removed once the scaffold, the bucket directories (which every build and
//!   uv's per-run overlay recreate) and `.lock` are gone.
//! - Under uv's designs a `run --with` child lives in the run's overlay, which goes
//!   when the run exits: a daemon outliving its run loses its environment.
//! - Events the processes do not choose (child exits, daemons, timeouts, SIGKILL) are
//!   actions too, so every interleaving of steps and events is explored.
//! - The initial state is an existing cache (scaffold and `.lock`, inode 0) with no
//!   environment; symmetric processes (same kind and faults) are explored once.
//! - The model is acyclic: every action moves some process, child or daemon forward, so
//!   every path is finite. A fair behaviour is a path that ends in a *quiescent* state
//!   ([`CacheModel::quiescent`]: no action is enabled but `killed`, which is never assumed
//!   to happen), and an `eventually` property is checked as "its goal holds in every
//!   reachable quiescent state" (see `crate::properties` for the fair events and why
//!   this is sound).

use std::fmt;

use stateright::{Model, Property, Representative};

use crate::properties::{self, PropertyName};
use crate::protocol::{
    ChildKind, Design, DropTemp, EnvLock, EnvName, Event, Kind, Mode, OnBusy, Policy, ProcSpec,
    Scenario, Step,
};

/// Index of a process in the scenario (after `run-nested-clean` is expanded).
pub type ProcId = usize;

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Life {
    /// It can take its next step.
    Ready,
    /// It tried the lock of its next step, found it busy and waits for it.
    Waiting,
    /// It has finished.
    Done(Outcome),
    /// It was killed with SIGKILL.
    Killed,
}

/// How a process finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Every step done.
    Ok,
    /// A clean found no cache root ("No cache found"), exit 0.
    NoCache,
    /// A lock wait timed out, exit 2.
    TimedOut,
    /// A clean found the lock busy and gave up, exit 0.
    GaveUp,
    /// The child could not be spawned: its environment was gone.
    SpawnFailed,
    /// The environment vanished while the run was building or reusing it.
    EnvVanished,
    /// The cache root vanished before the run could open `.lock`.
    RootVanished,
    /// A clean could not remove the cache root: it was not empty (exit 2).
    RootNotEmpty,
}

/// A run's child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Child {
    NotSpawned,
    Running,
    Exited,
    FailedToSpawn,
}

/// The background process a `run-daemon` child starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Daemon {
    None,
    Running,
    Exited,
}

/// An environment on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvState {
    Absent,
    /// Under construction in a temporary directory.
    Building,
    Present,
}

/// A run's own part in building its environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Build {
    /// Not yet at `build-env`.
    None,
    /// Building in its own temporary directory.
    InProgress,
    /// Its build directory was deleted under it.
    Lost,
    /// The environment was there already: reusing it.
    Reused,
}

/// A `--no-cache` run's temporary cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Temp {
    /// Not created (or not a `--no-cache` run).
    None,
    /// On disk, holding the run's environment.
    Present(EnvState),
    /// Removed.
    Gone,
}

/// A descriptor on `<cache>/.lock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootFd {
    /// The inode the descriptor was opened on.
    pub inode: u8,
    /// The lock held through it, if any.
    pub lock: Option<Mode>,
}

/// The open file description of a run's environment lock (always a shared lock) and
/// which processes have a descriptor on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvFd {
    pub parent: bool,
    pub child: bool,
    pub daemon: bool,
}

impl EnvFd {
    fn normalize(fd: Option<EnvFd>) -> Option<EnvFd> {
        fd.filter(|f| f.parent || f.child || f.daemon)
    }
}

/// One process's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proc {
    /// Symmetry class: processes with the same class are interchangeable. Constant.
    pub class: u8,
    /// Index of the next step in the process's program.
    pub at: u8,
    pub life: Life,
    pub root_fd: Option<RootFd>,
    pub env_fd: Option<EnvFd>,
    pub temp: Temp,
    pub build: Build,
    pub child: Child,
    pub daemon: Daemon,
    /// A `clean --force` that found the lock busy and went on without it.
    pub forced: bool,
    /// Cleans this run waits for (bit per process), at `AwaitAnnouncedCleans`.
    pub awaited: u16,
    /// Cleans that had started and not yet got the cache when this run started.
    pub pending_cleans: u16,
}

/// The cache directory as the processes see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fs {
    /// The root directory exists.
    pub root: bool,
    /// The scaffold files exist.
    pub scaffold: bool,
    /// The bucket directories exist (`environments/`, `builds/`): made with the scaffold
    /// and again by any build; a prune keeps them, a clean without environment locks
    /// removes them. The root cannot be removed while they exist.
    pub buckets: bool,
    /// The inode `<cache>/.lock` names, if the path exists.
    pub lock_path: Option<u8>,
    /// The next inode number a create will use.
    pub next_inode: u8,
    /// The cached environments, indexed like [`EnvName::CACHED`].
    pub envs: [EnvState; 3],
}

/// Facts about the past that the properties need (set by transitions, never cleared).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct History {
    /// A process deleted cache contents while another believed it held the lock.
    pub deleted_under_lock_holder: bool,
    /// A run got the cache before a clean that had started before it.
    pub overtook_clean: bool,
    /// A clean finished its work leaving an environment nobody used.
    pub left_unused_env: bool,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    pub procs: Vec<Proc>,
    pub fs: Fs,
    pub history: History,
}

/// An action of the model: a process takes its next step, or an event happens to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Step(ProcId, Step),
    Event(ProcId, Event),
}

/// What is fixed about one process for the whole check.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub spec: ProcSpec,
    /// The kind whose program the process runs (`Clean` for a nested clean).
    pub kind: Kind,
    pub program: Vec<Step>,
    /// For a nested clean: the run whose child runs it.
    pub host: Option<ProcId>,
    /// For a `run-nested-clean`: its nested clean.
    pub nested: Option<ProcId>,
    /// Name in stories: `run#1`, `clean#2`, `nested-clean#1`.
    pub label: String,
}

/// The model of one policy on one scenario.
#[derive(Clone, Debug)]
pub struct CacheModel {
    pub policy: Policy,
    pub design: Design,
    pub scenario: Scenario,
    pub procs: Vec<ProcInfo>,
    /// The properties handed to the checker: every one that applies to the scenario,
    /// unless narrowed with [`CacheModel::checking`].
    pub checked: Vec<PropertyName>,
}

fn env_index(env: EnvName) -> Option<usize> {
    EnvName::CACHED.iter().position(|e| *e == env)
}

impl CacheModel {
    /// Builds the model; a `run-nested-clean` brings its nested clean as an extra process.
    pub fn new(policy: Policy, scenario: &Scenario) -> CacheModel {
        let mut procs: Vec<ProcInfo> = Vec::new();
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        let mut label = |name: &'static str| {
            let n = counts.entry(name).or_default();
            *n += 1;
            format!("{name}#{n}")
        };
        for spec in &scenario.procs {
            let id = procs.len();
            procs.push(ProcInfo {
                spec: *spec,
                kind: spec.kind,
                program: policy.program(spec.kind),
                host: None,
                nested: None,
                label: label(spec.kind.token()),
            });
            if spec.kind == Kind::RunNestedClean {
                let nested_id = procs.len();
                procs[id].nested = Some(nested_id);
                procs.push(ProcInfo {
                    spec: ProcSpec {
                        kind: Kind::Clean,
                        crash: false,
                        timeout: spec.timeout,
                    },
                    kind: Kind::Clean,
                    program: policy.program(Kind::Clean),
                    host: Some(id),
                    nested: None,
                    label: label("nested-clean"),
                });
            }
        }
        CacheModel {
            policy,
            design: policy.design(),
            scenario: scenario.clone(),
            procs,
            checked: properties::ALL
                .iter()
                .filter(|p| p.applies_to(scenario))
                .copied()
                .collect(),
        }
    }

    /// The same model, checking only those of `wanted` that apply.
    pub fn checking(mut self, wanted: &[PropertyName]) -> CacheModel {
        self.checked.retain(|p| wanted.contains(p));
        self
    }

    /// The initial state: an existing cache with its scaffold and `.lock`, no
    /// environments, every process about to start.
    pub fn initial_state(&self) -> State {
        let mut classes: Vec<(ProcSpec, bool)> = Vec::new();
        let procs = self
            .procs
            .iter()
            .map(|info| {
                // Processes tied to another (nested cleans and their hosts) are not
                // interchangeable; the others are, when their specs are equal.
                let key = (info.spec, info.host.is_some() || info.nested.is_some());
                let class = if key.1 {
                    u8::MAX
                } else {
                    match classes.iter().position(|c| *c == key) {
                        Some(i) => i as u8,
                        None => {
                            classes.push(key);
                            (classes.len() - 1) as u8
                        }
                    }
                };
                Proc {
                    class,
                    at: 0,
                    life: Life::Ready,
                    root_fd: None,
                    env_fd: None,
                    temp: Temp::None,
                    build: Build::None,
                    child: Child::NotSpawned,
                    daemon: Daemon::None,
                    forced: false,
                    awaited: 0,
                    pending_cleans: 0,
                }
            })
            .collect();
        State {
            procs,
            fs: Fs {
                root: true,
                scaffold: true,
                buckets: true,
                lock_path: Some(0),
                next_inode: 1,
                envs: [EnvState::Absent; 3],
            },
            history: History::default(),
        }
    }

    /// The step process `p` would take next, if it has one.
    pub fn next_step(&self, s: &State, p: ProcId) -> Option<Step> {
        self.procs[p].program.get(s.procs[p].at as usize).copied()
    }

    /// True while the uv process itself is alive (not finished, not killed).
    pub fn alive(&self, s: &State, p: ProcId) -> bool {
        matches!(s.procs[p].life, Life::Ready | Life::Waiting)
    }

    /// True once the process has taken its first step.
    pub fn started(&self, s: &State, p: ProcId) -> bool {
        s.procs[p].at > 0 || s.procs[p].life != Life::Ready
    }

    /// A nested clean whose host child will never run it counts as finished.
    fn moot(&self, s: &State, p: ProcId) -> bool {
        match self.procs[p].host {
            Some(h) => {
                let hc = s.procs[h].child;
                hc == Child::FailedToSpawn
                    || (hc == Child::NotSpawned && !self.alive(s, h))
                    || (hc == Child::Exited && !self.started(s, p))
            }
            None => false,
        }
    }

    /// True if the process will take no more steps (done, killed or moot).
    pub fn finished(&self, s: &State, p: ProcId) -> bool {
        !self.alive(s, p) || self.moot(s, p)
    }

    /// True if a nested clean may act: its host's child is running.
    fn gated_open(&self, s: &State, p: ProcId) -> bool {
        match self.procs[p].host {
            Some(h) => s.procs[h].child == Child::Running,
            None => true,
        }
    }

    /// The index of `step` in process `p`'s program.
    fn index_of(&self, p: ProcId, step: Step) -> Option<usize> {
        self.procs[p].program.iter().position(|s| *s == step)
    }

    /// A clean "has the cache" once it is past its `lock-exclusive` step.
    pub fn clean_has_cache(&self, s: &State, c: ProcId) -> bool {
        self.procs[c].kind.is_clean()
            && self.alive(s, c)
            && self
                .index_of(c, Step::LockExclusive)
                .is_some_and(|i| (s.procs[c].at as usize) > i)
    }

    /// A clean that holds the cache right now: past its `lock-exclusive` step and not
    /// yet past its `release-root-lock` step.
    pub fn clean_holds_cache(&self, s: &State, c: ProcId) -> bool {
        self.clean_has_cache(s, c)
            && self
                .index_of(c, Step::ReleaseRootLock)
                .is_some_and(|i| (s.procs[c].at as usize) <= i)
    }

    /// A clean that has announced itself and not yet withdrawn.
    fn announced(&self, s: &State, c: ProcId) -> bool {
        self.procs[c].kind.is_clean()
            && self.alive(s, c)
            && self
                .index_of(c, Step::AnnounceClean)
                .is_some_and(|i| (s.procs[c].at as usize) > i)
    }

    /// Cleans that have started but not yet got the cache (bit per process).
    fn pending_cleans(&self, s: &State) -> u16 {
        (0..self.procs.len())
            .filter(|&c| {
                self.procs[c].kind.is_clean()
                    && self.started(s, c)
                    && self.alive(s, c)
                    && !self.clean_has_cache(s, c)
            })
            .fold(0, |m, c| m | (1 << c))
    }

    /// Whether process `p` could be granted `mode` on the inode its descriptor names.
    pub fn root_grantable(&self, s: &State, p: ProcId, mode: Mode) -> bool {
        let Some(fd) = s.procs[p].root_fd else {
            return false;
        };
        s.procs.iter().enumerate().all(|(q, other)| {
            q == p
                || match other.root_fd {
                    Some(RootFd {
                        inode,
                        lock: Some(m),
                    }) if inode == fd.inode => mode == Mode::Shared && m == Mode::Shared,
                    _ => true,
                }
        })
    }

    /// True if the environment of run `p` is on disk.
    ///
    /// Under a design with run overlays (uv's `run --with`), the child of a `run`-family
    /// process lives in the run's own overlay on top of the cached environment, which
    /// the run removes when it exits (a killed run leaks it).
    pub fn env_present(&self, s: &State, p: ProcId) -> bool {
        let kind = self.procs[p].kind;
        match kind.env() {
            Some(EnvName::Temp) => s.procs[p].temp == Temp::Present(EnvState::Present),
            Some(env) => {
                let overlay_gone = self.design.run_overlay
                    && env == EnvName::With
                    && matches!(s.procs[p].life, Life::Done(_));
                !overlay_gone && env_index(env).is_some_and(|i| s.fs.envs[i] == EnvState::Present)
            }
            None => false,
        }
    }

    /// True if some process has the environment lock of `env` (any descriptor open).
    pub fn env_locked(&self, s: &State, env: EnvName) -> bool {
        self.procs
            .iter()
            .zip(&s.procs)
            .any(|(info, st)| info.kind.env() == Some(env) && st.env_fd.is_some())
    }

    /// True if some live process or child uses `env`: a run past its first
    /// environment step that has not finished, a running child, or a daemon.
    pub fn env_in_use(&self, s: &State, env: EnvName) -> bool {
        (0..self.procs.len()).any(|p| {
            let info = &self.procs[p];
            let st = &s.procs[p];
            if info.kind.env() != Some(env) {
                return false;
            }
            let first = info
                .program
                .iter()
                .position(|x| matches!(x, Step::LockEnv | Step::BuildEnv));
            let claimed = self.alive(s, p) && first.is_some_and(|i| (st.at as usize) > i);
            claimed || st.child == Child::Running || st.daemon == Daemon::Running
        })
    }

    /// Is process `p` blocked with no way forward on its own (for `no-deadlock`)?
    pub fn stuck(&self, s: &State, p: ProcId) -> bool {
        let st = &s.procs[p];
        match st.life {
            Life::Waiting => {
                let can_time_out = self.design.lock_timeout && self.procs[p].spec.timeout;
                !can_time_out && !self.step_enabled(s, p)
            }
            Life::Ready => match self.next_step(s, p) {
                Some(Step::WaitForChild) if st.child == Child::Running => self.child_stuck(s, p),
                _ => false,
            },
            Life::Done(_) | Life::Killed => false,
        }
    }

    /// A running child is stuck only when it waits for its nested clean, which is stuck.
    fn child_stuck(&self, s: &State, p: ProcId) -> bool {
        match self.procs[p].nested {
            Some(n) => !self.finished(s, n) && self.stuck(s, n),
            None => false,
        }
    }

    /// True if the step a process is at can be taken now.
    pub fn step_enabled(&self, s: &State, p: ProcId) -> bool {
        let st = &s.procs[p];
        let Some(step) = self.next_step(s, p) else {
            return false;
        };
        if !self.alive(s, p) || !self.gated_open(s, p) {
            return false;
        }
        if st.life == Life::Ready {
            return match step {
                Step::WaitForChild => st.child != Child::Running,
                _ => true,
            };
        }
        // Waiting: the blocking call returns only when the lock can be granted.
        match step {
            Step::LockShared => self.root_grantable(s, p, Mode::Shared),
            Step::LockExclusive => self.root_grantable(s, p, Mode::Exclusive),
            Step::AwaitAnnouncedCleans => {
                (0..self.procs.len()).all(|c| st.awaited & (1 << c) == 0 || !self.announced(s, c))
            }
            _ => false,
        }
    }

    pub fn event_enabled(&self, s: &State, p: ProcId, e: Event) -> bool {
        let st = &s.procs[p];
        let info = &self.procs[p];
        match e {
            Event::Killed => {
                info.spec.crash && info.host.is_none() && self.alive(s, p) && self.started(s, p)
            }
            Event::LockTimeout => {
                self.design.lock_timeout && info.spec.timeout && st.life == Life::Waiting
            }
            Event::ChildStartsDaemon => {
                st.child == Child::Running
                    && info.kind.child() == Some(ChildKind::Daemon)
                    && st.daemon == Daemon::None
            }
            Event::ChildExits => {
                st.child == Child::Running
                    && match info.kind.child() {
                        Some(ChildKind::Exits) => true,
                        Some(ChildKind::Daemon) => st.daemon != Daemon::None,
                        Some(ChildKind::NestedClean) => {
                            info.nested.is_some_and(|n| self.finished(s, n))
                        }
                        Some(ChildKind::Server) | None => false,
                    }
            }
            Event::DaemonExits => st.daemon == Daemon::Running,
        }
    }

    /// Ends a process: what its destructors do (close descriptors, remove the
    /// temporary cache). A kill skips the destructors: the temporary cache leaks.
    fn finish(&self, s: &mut State, p: ProcId, life: Life) {
        let st = &mut s.procs[p];
        st.life = life;
        st.root_fd = None;
        st.awaited = 0;
        if let Some(fd) = st.env_fd.as_mut() {
            fd.parent = false;
        }
        st.env_fd = EnvFd::normalize(st.env_fd);
        // A kept temporary cache (`DropTemp::Never`) has no destructor either.
        if life != Life::Killed
            && self.design.drop_temp != DropTemp::Never
            && let Temp::Present(_) = st.temp
        {
            st.temp = Temp::Gone;
        }
    }

    fn advance(&self, s: &mut State, p: ProcId) {
        let st = &mut s.procs[p];
        st.at += 1;
        st.life = Life::Ready;
        if st.at as usize == self.procs[p].program.len() {
            self.finish(s, p, Life::Done(Outcome::Ok));
        }
    }

    /// A run got the cache: check that no clean that started before it is still
    /// waiting for it.
    fn note_run_got_cache(&self, s: &mut State, p: ProcId) {
        if self.procs[p].kind.is_run() {
            let still_pending = self.pending_cleans(s);
            if s.procs[p].pending_cleans & still_pending != 0 {
                s.history.overtook_clean = true;
            }
        }
    }

    /// A clean finished its work (deleted, or gave up): every unused environment must
    /// be gone.
    fn note_clean_done(&self, s: &mut State) {
        let left = EnvName::CACHED
            .iter()
            .enumerate()
            .any(|(i, env)| s.fs.envs[i] != EnvState::Absent && !self.env_in_use(s, *env));
        if left {
            s.history.left_unused_env = true;
        }
    }

    fn lock_step(&self, s: &mut State, p: ProcId, mode: Mode) {
        if self.root_grantable(s, p, mode) {
            if let Some(fd) = s.procs[p].root_fd.as_mut() {
                fd.lock = Some(mode);
            }
            self.note_run_got_cache(s, p);
            self.advance(s, p);
            return;
        }
        let on_busy = match mode {
            Mode::Shared => OnBusy::Wait,
            Mode::Exclusive => self.policy.on_busy(self.procs[p].kind),
        };
        match on_busy {
            OnBusy::Wait => s.procs[p].life = Life::Waiting,
            OnBusy::ProceedUnlocked => {
                s.procs[p].forced = true;
                self.advance(s, p);
            }
            OnBusy::GiveUp => {
                self.note_clean_done(s);
                self.finish(s, p, Life::Done(Outcome::GaveUp));
            }
        }
    }

    fn take_step(&self, s: &mut State, p: ProcId, step: Step) {
        if s.procs[p].at == 0 && s.procs[p].life == Life::Ready && self.procs[p].kind.is_run() {
            s.procs[p].pending_cleans = self.pending_cleans(s);
        }
        let kind = self.procs[p].kind;
        match step {
            Step::AnnounceClean | Step::WithdrawAnnouncement | Step::ReleaseRootLock => {
                if step == Step::ReleaseRootLock {
                    s.procs[p].root_fd = None;
                }
                self.advance(s, p);
            }
            Step::AwaitAnnouncedCleans => {
                if s.procs[p].life == Life::Ready {
                    let announced = (0..self.procs.len())
                        .filter(|&c| self.announced(s, c))
                        .fold(0u16, |m, c| m | (1 << c));
                    if announced != 0 {
                        s.procs[p].awaited = announced;
                        s.procs[p].life = Life::Waiting;
                        return;
                    }
                }
                s.procs[p].awaited = 0;
                self.advance(s, p);
            }
            Step::CreateTempCache => {
                s.procs[p].temp = Temp::Present(EnvState::Absent);
                self.advance(s, p);
            }
            Step::CreateScaffold => {
                s.fs.root = true;
                s.fs.scaffold = true;
                s.fs.buckets = true;
                self.advance(s, p);
            }
            Step::OpenLockFile => {
                if !s.fs.root {
                    if kind.is_clean() {
                        self.finish(s, p, Life::Done(Outcome::NoCache));
                        return;
                    }
                    if self.design.scaffold_before_lock {
                        // The scaffold step made the root; a clean removed it since.
                        self.finish(s, p, Life::Done(Outcome::RootVanished));
                        return;
                    }
                    s.fs.root = true;
                }
                let inode = match s.fs.lock_path {
                    Some(i) => i,
                    None => {
                        let i = s.fs.next_inode;
                        s.fs.next_inode += 1;
                        s.fs.lock_path = Some(i);
                        i
                    }
                };
                s.procs[p].root_fd = Some(RootFd { inode, lock: None });
                self.advance(s, p);
            }
            Step::LockShared => self.lock_step(s, p, Mode::Shared),
            Step::LockExclusive => self.lock_step(s, p, Mode::Exclusive),
            Step::LockEnv => {
                s.procs[p].env_fd = Some(EnvFd {
                    parent: true,
                    child: false,
                    daemon: false,
                });
                self.advance(s, p);
            }
            Step::BuildEnv => {
                match kind.env() {
                    Some(EnvName::Temp) => {
                        if let Temp::Present(e) = s.procs[p].temp
                            && e == EnvState::Absent
                        {
                            s.procs[p].temp = Temp::Present(EnvState::Building);
                        }
                    }
                    Some(env) => {
                        s.fs.root = true;
                        s.fs.buckets = true;
                        if let Some(i) = env_index(env) {
                            if s.fs.envs[i] == EnvState::Present {
                                s.procs[p].build = Build::Reused;
                            } else {
                                s.fs.envs[i] = EnvState::Building;
                                s.procs[p].build = Build::InProgress;
                            }
                        }
                    }
                    None => {}
                }
                self.advance(s, p);
            }
            Step::PersistEnv => {
                let ok = match kind.env() {
                    Some(EnvName::Temp) => match s.procs[p].temp {
                        Temp::Present(EnvState::Absent) | Temp::None | Temp::Gone => false,
                        Temp::Present(_) => {
                            s.procs[p].temp = Temp::Present(EnvState::Present);
                            true
                        }
                    },
                    // Its own build moves into place (another run may have been first:
                    // then there is nothing to move), or the reused one must still be there.
                    Some(env) => match (env_index(env), s.procs[p].build) {
                        (Some(i), Build::InProgress) => {
                            s.fs.envs[i] = EnvState::Present;
                            true
                        }
                        (Some(i), Build::Reused) => s.fs.envs[i] == EnvState::Present,
                        _ => false,
                    },
                    None => false,
                };
                if ok {
                    self.advance(s, p);
                } else {
                    self.finish(s, p, Life::Done(Outcome::EnvVanished));
                }
            }
            Step::SpawnChild => {
                if !self.env_present(s, p) {
                    s.procs[p].child = Child::FailedToSpawn;
                    self.finish(s, p, Life::Done(Outcome::SpawnFailed));
                    return;
                }
                s.procs[p].child = Child::Running;
                if self.design.run_overlay && kind.env() == Some(EnvName::With) {
                    // The run's overlay environment is made in the builds bucket.
                    s.fs.root = true;
                    s.fs.buckets = true;
                }
                if self.design.child_inherits_env_lock
                    && let Some(fd) = s.procs[p].env_fd.as_mut()
                {
                    fd.child = true;
                }
                self.advance(s, p);
            }
            Step::WaitForChild => self.advance(s, p),
            Step::DropTempCache => {
                if let Temp::Present(_) = s.procs[p].temp {
                    s.procs[p].temp = Temp::Gone;
                }
                self.advance(s, p);
            }
            Step::CloseEnvLock => {
                if let Some(fd) = s.procs[p].env_fd.as_mut() {
                    fd.parent = false;
                }
                s.procs[p].env_fd = EnvFd::normalize(s.procs[p].env_fd);
                self.advance(s, p);
            }
            Step::UnlockEnvLock => {
                s.procs[p].env_fd = None;
                self.advance(s, p);
            }
            Step::DeleteEntries => {
                if (0..self.procs.len())
                    .any(|q| q != p && s.procs[q].root_fd.is_some_and(|fd| fd.lock.is_some()))
                {
                    s.history.deleted_under_lock_holder = true;
                }
                if s.fs.root {
                    for (i, env) in EnvName::CACHED.iter().enumerate() {
                        let guarded = self.design.env_lock != EnvLock::None;
                        if !guarded || !self.env_locked(s, *env) {
                            s.fs.envs[i] = EnvState::Absent;
                            for q in 0..self.procs.len() {
                                if self.procs[q].kind.env() == Some(*env)
                                    && s.procs[q].build == Build::InProgress
                                {
                                    s.procs[q].build = Build::Lost;
                                }
                            }
                        }
                    }
                    if kind != Kind::Prune {
                        s.fs.scaffold = false;
                        if self.design.env_lock == EnvLock::None {
                            s.fs.buckets = false;
                        }
                    }
                }
                self.note_clean_done(s);
                self.advance(s, p);
            }
            Step::UnlinkLockFile => {
                if !s.procs[p].forced {
                    s.fs.lock_path = None;
                }
                self.advance(s, p);
            }
            Step::RemoveRoot => {
                let empty = !s.fs.scaffold
                    && !s.fs.buckets
                    && s.fs.lock_path.is_none()
                    && s.fs.envs.iter().all(|e| *e == EnvState::Absent);
                if empty {
                    s.fs.root = false;
                } else if self.design.remove_root_strict {
                    self.finish(s, p, Life::Done(Outcome::RootNotEmpty));
                    return;
                }
                self.advance(s, p);
            }
        }
    }

    fn take_event(&self, s: &mut State, p: ProcId, e: Event) {
        match e {
            Event::Killed => self.finish(s, p, Life::Killed),
            Event::LockTimeout => self.finish(s, p, Life::Done(Outcome::TimedOut)),
            Event::ChildStartsDaemon => {
                let st = &mut s.procs[p];
                st.daemon = Daemon::Running;
                if let Some(fd) = st.env_fd.as_mut()
                    && fd.child
                {
                    fd.daemon = true;
                }
            }
            Event::ChildExits => {
                let st = &mut s.procs[p];
                st.child = Child::Exited;
                if let Some(fd) = st.env_fd.as_mut() {
                    fd.child = false;
                }
                st.env_fd = EnvFd::normalize(st.env_fd);
            }
            Event::DaemonExits => {
                let st = &mut s.procs[p];
                st.daemon = Daemon::Exited;
                if let Some(fd) = st.env_fd.as_mut() {
                    fd.daemon = false;
                }
                st.env_fd = EnvFd::normalize(st.env_fd);
            }
        }
    }
}

impl CacheModel {
    /// The state after `action` (the model's transition function).
    pub fn after(&self, s: &State, action: Action) -> State {
        let mut next = s.clone();
        match action {
            Action::Step(p, step) => self.take_step(&mut next, p, step),
            Action::Event(p, e) => self.take_event(&mut next, p, e),
        }
        next
    }
}

impl Model for CacheModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial_state()]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for p in 0..self.procs.len() {
            if self.step_enabled(s, p)
                && let Some(step) = self.next_step(s, p)
            {
                out.push(Action::Step(p, step));
            }
            for e in Event::ALL {
                if self.event_enabled(s, p, e) {
                    out.push(Action::Event(p, e));
                }
            }
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        Some(self.after(s, action))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.checked.iter().map(|p| p.to_stateright()).collect()
    }
}

impl CacheModel {
    /// True if no fair action is enabled: only kills, or nothing at all. Fair are every
    /// enabled step and every enabled event but `killed` (a fault may happen, and need
    /// not); `lock-timeout` is enabled only under a policy with a lock timeout, for a
    /// `+timeout` process that waits. Every fair behaviour ends in such a state (the
    /// model is acyclic) and stays there.
    pub fn quiescent(&self, s: &State) -> bool {
        self.quiescent_with(s, &[Event::Killed])
    }

    /// As [`CacheModel::quiescent`], with `unfair` the events a behaviour need not take
    /// (`killed`, and for `clean-succeeds` also `lock-timeout`).
    pub fn quiescent_with(&self, s: &State, unfair: &[Event]) -> bool {
        (0..self.procs.len()).all(|p| {
            !self.step_enabled(s, p)
                && Event::ALL
                    .iter()
                    .all(|e| unfair.contains(e) || !self.event_enabled(s, p, *e))
        })
    }

    /// The names of the properties this model checks.
    pub fn property_names(&self) -> Vec<PropertyName> {
        self.checked.clone()
    }
}

/// Symmetry: processes of the same class are interchangeable. The representative
/// sorts each class by process state and renumbers the bit masks that name processes.
impl Representative for State {
    fn representative(&self) -> Self {
        let n = self.procs.len();
        let mut order: Vec<usize> = (0..n).collect();
        // Stable sort within classes only: positions of each class stay the same.
        let mut by_class: std::collections::BTreeMap<u8, Vec<usize>> = Default::default();
        for (i, p) in self.procs.iter().enumerate() {
            if p.class != u8::MAX {
                by_class.entry(p.class).or_default().push(i);
            }
        }
        for members in by_class.values() {
            let mut sorted = members.clone();
            sorted.sort_by(|a, b| self.procs[*a].cmp(&self.procs[*b]));
            for (slot, src) in members.iter().zip(sorted) {
                order[*slot] = src;
            }
        }
        if order.iter().enumerate().all(|(i, o)| i == *o) {
            return self.clone();
        }
        // new position of old process `old`
        let mut new_pos = vec![0; n];
        for (slot, old) in order.iter().enumerate() {
            new_pos[*old] = slot;
        }
        let remap = |mask: u16| -> u16 {
            (0..n)
                .filter(|old| mask & (1 << old) != 0)
                .fold(0, |m, old| m | (1 << new_pos[old]))
        };
        let procs = order
            .iter()
            .map(|old| {
                let mut p = self.procs[*old].clone();
                p.awaited = remap(p.awaited);
                p.pending_cleans = remap(p.pending_cleans);
                p
            })
            .collect();
        State {
            procs,
            fs: self.fs.clone(),
            history: self.history,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Step(p, s) => write!(f, "p{p}: {s}"),
            Action::Event(p, e) => write!(f, "p{p}: {e}"),
        }
    }
}
