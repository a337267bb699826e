//! What a state of the model is: each process's place in its program, its descriptors,
//! its child and daemon, the cache directory as the processes see it, and the facts about
//! the past that the properties need. Plain data: what can be asked of a state is in
//! `crate::queries`, how it changes in `crate::transitions`.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::protocol::{EnvName, Event, Mode, Step};

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

/// An open file description on `<cache>/.lock` and which processes have a descriptor
/// on it: the uv process, and (under a design whose child inherits it) its child and
/// the child's daemon. The lock held through it lasts while any of them has it open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootFd {
    /// The inode the descriptor was opened on.
    pub inode: u8,
    /// The lock held through it, if any.
    pub lock: Option<Mode>,
    pub parent: bool,
    pub child: bool,
    pub daemon: bool,
}

impl RootFd {
    /// A descriptor the process has just opened on `inode`, not locked.
    pub(crate) fn opened(inode: u8) -> RootFd {
        RootFd {
            inode,
            lock: None,
            parent: true,
            child: false,
            daemon: false,
        }
    }

    /// The description as long as some process still has a descriptor on it.
    pub(crate) fn normalize(fd: Option<RootFd>) -> Option<RootFd> {
        fd.filter(|f| f.parent || f.child || f.daemon)
    }
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
    /// The description as long as some process still has a descriptor on it.
    pub(crate) fn normalize(fd: Option<EnvFd>) -> Option<EnvFd> {
        fd.filter(|f| f.parent || f.child || f.daemon)
    }
}

/// One process's state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
    /// For a prune: the `--no-cache` runs whose temporary cache had leaked when it
    /// started (the run killed, its child exited), bit per process.
    pub leaked_at_start: u16,
}

/// The cache directory as the processes see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
    /// The cached environments: `envs[layout][env]`, layout 0 uv's buckets, layout 1
    /// the bucket of a design with `new_layout`; env indexed like [`EnvName::CACHED`].
    pub envs: [[EnvState; 3]; 2],
    /// A trash directory exists (`<cache>/.trash/…`): what a `move-to-trash` moved and
    /// no `delete-trash` has deleted yet. Nothing ever uses what is in it.
    pub trash: bool,
}

/// Facts about the past that the properties need (set by transitions, never cleared).
/// Each is noted only when a process of the checked policy is involved (as the one who
/// acted or the one it acted against): see `crate::properties` for the attribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct History {
    /// A process deleted an entry while another held the lock that protects it
    /// (`mutual-exclusion`).
    pub deleted_under_lock_holder: bool,
    /// A process deleted anything while another held a lock through a descriptor on
    /// `.lock` (`root-lock-exclusion`, the literal reading).
    pub deleted_beside_root_holder: bool,
    /// A process of the checked policy deleted an environment that another release's
    /// process was using under that release's own protection (`live-env-intact`).
    pub broke_protected_env: bool,
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

// Hashing: every state the checker generates is hashed once or twice (its fingerprint,
// its representative's), so a process hashes as one packed 96-bit word and the file
// system with the history as one 64-bit word, not field by field (a derived `Hash` feeds
// the hasher some twenty values per process). Each packing is injective: equal words
// mean equal values (`search::tests::packing_is_injective` checks it on every reachable state
// of several scenarios), so a fingerprint still tells states apart as well as before.

impl Proc {
    /// The process's state in 96 bits, one value per distinct state.
    pub(crate) fn packed(&self) -> u128 {
        let life: u128 = match self.life {
            Life::Ready => 0,
            Life::Waiting => 1,
            Life::Killed => 2,
            Life::Done(o) => 3 + o as u128,
        };
        let root_fd: u128 = match self.root_fd {
            None => 0,
            Some(f) => {
                let lock = match f.lock {
                    None => 0,
                    Some(Mode::Shared) => 1,
                    Some(Mode::Exclusive) => 2,
                };
                1 | (f.inode as u128) << 1
                    | lock << 9
                    | (f.parent as u128) << 11
                    | (f.child as u128) << 12
                    | (f.daemon as u128) << 13
            }
        };
        let env_fd: u128 = match self.env_fd {
            None => 0,
            Some(f) => {
                1 | (f.parent as u128) << 1 | (f.child as u128) << 2 | (f.daemon as u128) << 3
            }
        };
        let temp: u128 = match self.temp {
            Temp::None => 0,
            Temp::Gone => 1,
            Temp::Present(e) => 2 + e as u128,
        };
        self.class as u128
            | (self.at as u128) << 8
            | life << 16
            | (self.awaited as u128) << 20
            | (self.pending_cleans as u128) << 36
            | (self.leaked_at_start as u128) << 52
            | root_fd << 68
            | env_fd << 82
            | temp << 86
            | (self.build as u128) << 89
            | (self.child as u128) << 91
            | (self.daemon as u128) << 93
            | (self.forced as u128) << 95
    }
}

impl Hash for Proc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.packed());
    }
}

impl Fs {
    /// The file system in 33 bits, one value per distinct file system.
    pub(crate) fn packed(&self) -> u64 {
        let lock_path = match self.lock_path {
            None => 0,
            Some(i) => 1 | (i as u64) << 1,
        };
        let envs = self
            .envs
            .iter()
            .flatten()
            .enumerate()
            .fold(0u64, |m, (i, e)| m | (*e as u64) << (2 * i));
        self.root as u64
            | (self.scaffold as u64) << 1
            | (self.buckets as u64) << 2
            | (self.trash as u64) << 3
            | lock_path << 4
            | (self.next_inode as u64) << 13
            | envs << 21
    }
}

impl Hash for Fs {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.packed());
    }
}

impl History {
    /// The history in 5 bits.
    pub(crate) fn packed(&self) -> u8 {
        self.deleted_under_lock_holder as u8
            | (self.deleted_beside_root_holder as u8) << 1
            | (self.broke_protected_env as u8) << 2
            | (self.overtook_clean as u8) << 3
            | (self.left_unused_env as u8) << 4
    }
}

impl Hash for History {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.packed());
    }
}

/// An action of the model: a process takes its next step, or an event happens to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Step(ProcId, Step),
    Event(ProcId, Event),
}

/// The slot of a cached environment in a layout of [`Fs::envs`] (`None` for
/// `EnvName::Temp`).
pub(crate) fn env_index(env: EnvName) -> Option<usize> {
    EnvName::CACHED.iter().position(|e| *e == env)
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Step(p, s) => write!(f, "p{p}: {s}"),
            Action::Event(p, e) => write!(f, "p{p}: {e}"),
        }
    }
}
