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
//! - A clean under a design with a trash (`Design::trash`, cachelock's) does not delete
//!   while it holds `.lock`: `MoveToTrash` takes out of the cache's namespace exactly
//!   what `DeleteEntries` would delete, one rename each into a trash directory of its
//!   own (`<cache>/.trash/<unique>/`), so every process sees the same as after a
//!   deletion and the same facts are noted; then it releases `.lock`, withdraws its
//!   announcement, and only then `DeleteTrash` deletes every trash directory. The time
//!   it holds `.lock`, and that runs wait for it, no longer grows with the cache. What
//!   is in the trash is never used by anyone (no process opens a path under `.trash/`
//!   and nothing leaves it but by deletion), so deleting it changes nothing a process
//!   sees, under any lock or none: the state records only whether trash exists. A clean
//!   killed between the two leaves trash; the next clean or prune deletes it. (The
//!   implementation keeps a trash directory being filled locked, so that a second
//!   clean deleting trash skips it rather than race the renames into it.) Moving only
//!   after releasing `.lock` (`fenced-trash-after-release`) is what breaks
//!   mutual-exclusion: the moves are what others see.
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

use crate::properties::{self, PropertyName};
use crate::protocol::{Design, Kind, Policy, ProcSpec, Scenario, Step};
pub use crate::state::{
    Action, Build, Child, Daemon, EnvFd, EnvState, Fs, History, Life, Outcome, Proc, ProcId,
    RootFd, State, Temp,
};

/// What is fixed about one process for the whole check.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub spec: ProcSpec,
    /// The policy the process runs: its `@policy`, or the checked one.
    pub policy: Policy,
    /// That policy's design.
    pub design: Design,
    /// The kind whose program the process runs (`Clean` for a nested clean).
    pub kind: Kind,
    pub program: Vec<Step>,
    /// For a nested clean: the run whose child runs it.
    pub host: Option<ProcId>,
    /// For a `run-nested-clean`: its nested clean.
    pub nested: Option<ProcId>,
    /// Name in stories: `run#1`, `clean#2`, `nested-clean#1`; a process of another
    /// release than the checked one says which: `clean#1@uv-0.13`.
    pub label: String,
}

/// The model of one policy on one scenario: what is fixed for the whole check. Its
/// queries are in `crate::queries`, its transitions and the stateright `Model` impl in
/// `crate::transitions`.
#[derive(Clone, Debug)]
pub struct CacheModel {
    /// The checked policy: every process without an `@policy` runs it, and the
    /// properties judge it (`crate::properties`).
    pub policy: Policy,
    pub scenario: Scenario,
    pub procs: Vec<ProcInfo>,
    /// The properties handed to the checker: every one that applies to the scenario,
    /// unless narrowed with [`CacheModel::checking`].
    pub checked: Vec<PropertyName>,
}

impl CacheModel {
    /// Builds the model; a `run-nested-clean` brings its nested clean as an extra process.
    pub fn new(policy: Policy, scenario: &Scenario) -> CacheModel {
        let mut procs: Vec<ProcInfo> = Vec::new();
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        let mut label = |name: &'static str, spec: &ProcSpec| {
            let n = counts.entry(name).or_default();
            *n += 1;
            match spec.policy {
                Some(p) => format!("{name}#{n}@{p}"),
                None => format!("{name}#{n}"),
            }
        };
        for spec in &scenario.procs {
            let id = procs.len();
            let own = spec.policy_or(policy);
            procs.push(ProcInfo {
                spec: *spec,
                policy: own,
                design: own.design(),
                kind: spec.kind,
                program: own.program(spec.kind),
                host: None,
                nested: None,
                label: label(spec.kind.token(), spec),
            });
            if spec.kind == Kind::RunNestedClean {
                let nested_id = procs.len();
                procs[id].nested = Some(nested_id);
                let nested = ProcSpec {
                    timeout: spec.timeout,
                    policy: spec.policy,
                    ..ProcSpec::plain(Kind::Clean)
                };
                procs.push(ProcInfo {
                    spec: nested,
                    policy: own,
                    design: own.design(),
                    kind: Kind::Clean,
                    program: own.program(Kind::Clean),
                    host: Some(id),
                    nested: None,
                    label: label("nested-clean", &nested),
                });
            }
        }
        CacheModel {
            policy,
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

    /// True when two of the scenario's processes are interchangeable (one class under
    /// the symmetry reduction).
    pub fn has_interchangeable_processes(&self) -> bool {
        let classes: Vec<u8> = self.initial_state().procs.iter().map(|p| p.class).collect();
        classes
            .iter()
            .enumerate()
            .any(|(i, c)| *c != u8::MAX && classes[..i].contains(c))
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
                    leaked_at_start: 0,
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
                envs: [[EnvState::Absent; 3]; 2],
                trash: false,
            },
            history: History::default(),
        }
    }

    /// True if process `p` runs the checked policy.
    pub fn is_checked(&self, p: ProcId) -> bool {
        self.procs[p].policy == self.policy
    }

    /// The layout process `p`'s environments live in (the index into `Fs::envs`).
    pub fn layout(&self, p: ProcId) -> usize {
        usize::from(self.procs[p].design.new_layout)
    }

    /// True if processes of more than one layout share the cache (stories then say
    /// whose layout an environment is in).
    pub fn mixed_layouts(&self) -> bool {
        (0..self.procs.len()).any(|p| self.layout(p) != self.layout(0))
    }

    /// The names of the properties this model checks.
    pub fn property_names(&self) -> Vec<PropertyName> {
        self.checked.clone()
    }
}
