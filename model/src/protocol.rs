//! The protocol's vocabulary: steps, scenarios and policies.
//!
//! This module has no dependencies. The stateright model (`crate::machine`), the real
//! implementation (crate `cachelock`), the conformance harness and the docs all speak
//! these words, so a step has one name everywhere:
//!
//! - A [`Step`] is something a uv (or cachelock) process does to the cache: open the lock
//!   file, lock it, build an environment, spawn the child, delete entries, … A process is a
//!   [`Kind`] (what the user typed) and runs the list of steps its [`Policy`] prescribes
//!   for that kind ([`Policy::program`]), in order, each at most once.
//! - An [`Event`] is something that happens *to* a process and that it does not choose:
//!   its child exits, starts a daemon, its lock wait times out, it is killed.
//! - A [`Scenario`] is the list of processes that share one cache
//!   (`run-script+crash,clean`).
//!
//! The lock rules every policy shares (flock(2) semantics, as uv relies on):
//! - `<cache>/.lock` is locked *shared* by users of the cache and *exclusive* by
//!   cleaners. A lock belongs to an open file description: it is released when the last
//!   descriptor of that description is closed (a killed process closes all of its
//!   descriptors), or at once for everybody sharing it by an explicit unlock.
//! - There is no upgrade and no fairness: while an exclusive request waits, new shared
//!   requests are granted. A process that only waits is invisible to the others.
//! - Opening the file and locking it are separate steps, and the lock is on the inode the
//!   descriptor was opened on, not on the path.
//!
//! The `cachelock` policy (ours) keeps every property in every CI scenario, but
//! `mutual-exclusion` under `clean --force`, which deletes without the lock by
//! definition. Its rules, and the failure each one prevents:
//! - A run holds the root lock shared only while it sets up, and releases it before
//!   spawning: a server or a nested `clean` never blocks a clean (`clean-terminates`,
//!   `clean-succeeds`, `no-deadlock`).
//! - What keeps an environment alive is its own lock file, `environments/<env>.lock`,
//!   locked shared *before* the environment is built or reused, while the root lock is
//!   still held: there is no window in which a clean can take it (`live-env-intact`).
//! - The child inherits that descriptor, and so does anything the child starts: the lock
//!   outlives a killed run and covers daemons. The run ends its part with `close`, never
//!   `LOCK_UN`, which would release it for all of them.
//! - A clean deletes an environment only while holding that lock exclusive, taken
//!   without waiting; a busy one is skipped and reported as in use. Builds are spared
//!   the same way. No lock file is ever unlinked, so no inode is orphaned.
//! - A clean's first step publishes an announcement that is already locked when it
//!   appears; a run's first step waits for the cleans announced before it started. A
//!   clean that is only waiting is thus visible, and later runs do not overtake it
//!   (`no-overtaking`), which flock alone (no writer preference) cannot give.
//! - A `--no-cache` run keeps its temporary cache until its child has exited, and drops
//!   it on every path but SIGKILL (`no-leaked-temp`). The temporary cache is locked
//!   shared from birth and the child inherits that lock, so a prune can tell a leaked
//!   one (its lock is free) from one in use, and removes only those
//!   (`remove-leaked-temp`): a killed run's temporary cache goes with the next prune.

use std::fmt;

/// Lock mode of a file lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Any number of shared holders; conflicts with an exclusive holder.
    Shared,
    /// One holder; conflicts with every other holder.
    Exclusive,
}

impl Mode {
    /// Both modes, shared first.
    pub const ALL: [Mode; 2] = [Mode::Shared, Mode::Exclusive];

    /// The mode's name, as every report, story and JSON document spells it: `shared` or
    /// `exclusive`. The one place the names are written.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Exclusive => "exclusive",
        }
    }

    /// The mode named `name` (the inverse of [`Mode::name`]).
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol step: something a process does to the cache, in the order its policy's
/// program prescribes. The same enum names the model's actions, the implementation's
/// steps, the conformance mapping and the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// cachelock clean: publish `<cache>/.cleans/<id>`, a file that is already locked
    /// exclusive when it appears (created and locked under a temporary name, then renamed
    /// into place), so that runs starting from now on see the clean and wait for it.
    AnnounceClean,
    /// cachelock run: list the announced cleans and wait (shared lock on each
    /// announcement) until every clean announced before this run started has finished.
    AwaitAnnouncedCleans,
    /// `--no-cache`: create a private temporary cache (`$TMPDIR/.tmpXXXXXX`).
    CreateTempCache,
    /// Create the cache root and its scaffold (`CACHEDIR.TAG`, `.gitignore`, buckets).
    CreateScaffold,
    /// Open (creating if needed) `<cache>/.lock`; the descriptor now names an inode.
    /// A clean that finds no cache root stops here ("No cache found").
    OpenLockFile,
    /// Lock `.lock` shared: try once, and if it is busy wait until it is granted.
    LockShared,
    /// Lock `.lock` exclusive: try once; if busy, wait (clean), go on without the lock
    /// (`clean --force`) or give up (a clean that only prunes when the cache is free).
    LockExclusive,
    /// cachelock run: lock the environment's own lock file
    /// (`<cache>/environments/<env>.lock`) shared. This lock, not the root lock, is what
    /// keeps the environment alive while the child runs.
    LockEnv,
    /// Start building the environment under a temporary name (`builds/.tmpX`), or reuse
    /// it when it is already present.
    BuildEnv,
    /// Rename the built environment into place. Fails if the build directory vanished.
    PersistEnv,
    /// Release the root lock (close the descriptor on `.lock`).
    ReleaseRootLock,
    /// Spawn the child in the environment (`CACHELOCK_ENV=<dir>`). Fails if the
    /// environment (or the temporary cache holding it) is gone.
    SpawnChild,
    /// Wait until the child has exited (signals are forwarded, the lock is kept).
    WaitForChild,
    /// Remove the temporary cache (`--no-cache`), and with it its environment.
    DropTempCache,
    /// Close this process's descriptor on the environment lock. The lock stays held as
    /// long as a child or a daemon still has the inherited descriptor open.
    CloseEnvLock,
    /// Unlock the environment lock explicitly (`LOCK_UN`): this releases it for every
    /// process sharing the descriptor, a daemon that inherited it included.
    UnlockEnvLock,
    /// Delete the cache's entries: environments and builds, and (clean, not prune) the
    /// scaffold. `.lock` and the root stay. Under a policy with environment locks, an
    /// environment is deleted only if its lock can be taken exclusive without waiting;
    /// the others are skipped and reported as in use.
    DeleteEntries,
    /// Under a design with a trash ([`Design::trash`]), a clean's `delete-entries`: the
    /// same entries leave the cache's namespace, but by one rename each into a trash
    /// directory of this clean's own (`<cache>/.trash/<unique>/`), so the time it holds
    /// `.lock` does not grow with the cache.
    MoveToTrash,
    /// Delete every trash directory in the cache (this clean's and any a killed clean
    /// left). Nothing ever opens a path under `.trash/`, so deleting it is safe at any
    /// time, under no lock.
    DeleteTrash,
    /// Unlink `<cache>/.lock` (uv up to 0.12: only if this clean held the lock).
    UnlinkLockFile,
    /// Remove the cache root directory (tolerating "directory not empty").
    RemoveRoot,
    /// cachelock clean: remove this clean's announcement and unlock it.
    WithdrawAnnouncement,
    /// cachelock prune, last: remove the temporary caches that killed `--no-cache` runs
    /// left in `$TMPDIR` (only cachelock's). Which ones is the design's [`PruneTemp`]:
    /// under cachelock's, only those whose lock it can take exclusive without waiting,
    /// so that a live run, or the child that inherited the lock, keeps its own.
    RemoveLeakedTemp,
}

impl Step {
    /// Every step, in the order the docs list them.
    pub const ALL: [Step; 23] = [
        Step::AnnounceClean,
        Step::AwaitAnnouncedCleans,
        Step::CreateTempCache,
        Step::CreateScaffold,
        Step::OpenLockFile,
        Step::LockShared,
        Step::LockExclusive,
        Step::LockEnv,
        Step::BuildEnv,
        Step::PersistEnv,
        Step::ReleaseRootLock,
        Step::SpawnChild,
        Step::WaitForChild,
        Step::DropTempCache,
        Step::CloseEnvLock,
        Step::UnlockEnvLock,
        Step::DeleteEntries,
        Step::MoveToTrash,
        Step::DeleteTrash,
        Step::UnlinkLockFile,
        Step::RemoveRoot,
        Step::WithdrawAnnouncement,
        Step::RemoveLeakedTemp,
    ];

    /// The step's name in stories, logs and docs (kebab case of the variant).
    pub fn name(self) -> &'static str {
        match self {
            Step::AnnounceClean => "announce-clean",
            Step::AwaitAnnouncedCleans => "await-announced-cleans",
            Step::CreateTempCache => "create-temp-cache",
            Step::CreateScaffold => "create-scaffold",
            Step::OpenLockFile => "open-lock-file",
            Step::LockShared => "lock-shared",
            Step::LockExclusive => "lock-exclusive",
            Step::LockEnv => "lock-env",
            Step::BuildEnv => "build-env",
            Step::PersistEnv => "persist-env",
            Step::ReleaseRootLock => "release-root-lock",
            Step::SpawnChild => "spawn-child",
            Step::WaitForChild => "wait-for-child",
            Step::DropTempCache => "drop-temp-cache",
            Step::CloseEnvLock => "close-env-lock",
            Step::UnlockEnvLock => "unlock-env-lock",
            Step::DeleteEntries => "delete-entries",
            Step::MoveToTrash => "move-to-trash",
            Step::DeleteTrash => "delete-trash",
            Step::UnlinkLockFile => "unlink-lock-file",
            Step::RemoveRoot => "remove-root",
            Step::WithdrawAnnouncement => "withdraw-announcement",
            Step::RemoveLeakedTemp => "remove-leaked-temp",
        }
    }

    /// One line saying what the step does, for docs and `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Step::AnnounceClean => "clean publishes an already-locked announcement file",
            Step::AwaitAnnouncedCleans => "run waits for cleans announced before it started",
            Step::CreateTempCache => "create the private temporary cache of --no-cache",
            Step::CreateScaffold => "create the cache root and its scaffold files",
            Step::OpenLockFile => {
                "open or create <cache>/.lock (a clean stops if there is no cache)"
            }
            Step::LockShared => "lock .lock shared; wait while it is busy",
            Step::LockExclusive => {
                "lock .lock exclusive; if busy: wait, go on unlocked (--force) or give up"
            }
            Step::LockEnv => "lock the environment's own lock file shared",
            Step::BuildEnv => "build the environment under a temporary name, or reuse it",
            Step::PersistEnv => "rename the built environment into place",
            Step::ReleaseRootLock => "release the lock on .lock",
            Step::SpawnChild => "spawn the child in the environment",
            Step::WaitForChild => "wait until the child exits",
            Step::DropTempCache => "remove the temporary cache and its environment",
            Step::CloseEnvLock => {
                "close the environment lock descriptor (inherited copies keep it)"
            }
            Step::UnlockEnvLock => "unlock the environment lock for every descriptor sharing it",
            Step::DeleteEntries => {
                "delete environments, builds and scaffold (skipping locked environments)"
            }
            Step::MoveToTrash => {
                "move what delete-entries deletes into the clean's trash, one rename each"
            }
            Step::DeleteTrash => "delete every trash directory in the cache, under no lock",
            Step::UnlinkLockFile => "unlink <cache>/.lock",
            Step::RemoveRoot => "remove the cache root if it is empty",
            Step::WithdrawAnnouncement => "clean removes and unlocks its announcement",
            Step::RemoveLeakedTemp => {
                "prune removes killed --no-cache runs' temporary caches whose lock is free"
            }
        }
    }

    /// Looks a step up by its [`Step::name`].
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happens to a process without it taking a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The child exits (its environment is no longer needed by it).
    ChildExits,
    /// The child starts a background process that inherits its descriptors and keeps
    /// using the environment after the child exits.
    ChildStartsDaemon,
    /// The daemon exits.
    DaemonExits,
    /// A lock wait exceeded the timeout: the process exits 2, holding nothing.
    LockTimeout,
    /// The uv process is killed with SIGKILL: its descriptors are closed (its locks are
    /// released unless a child inherited them), its temporary cache leaks, its child
    /// keeps running.
    Killed,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 5] = [
        Event::ChildExits,
        Event::ChildStartsDaemon,
        Event::DaemonExits,
        Event::LockTimeout,
        Event::Killed,
    ];

    /// The event's name in stories and docs.
    pub fn name(self) -> &'static str {
        match self {
            Event::ChildExits => "child-exits",
            Event::ChildStartsDaemon => "child-starts-daemon",
            Event::DaemonExits => "daemon-exits",
            Event::LockTimeout => "lock-timeout",
            Event::Killed => "killed",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which environment a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvName {
    /// `uv run --with …`: a cached environment (`archive-v0/<id>`), shared by every run
    /// with the same requirements.
    With,
    /// `uv run --script`: the script's environment (`environments-v2/<script>-<hash>`).
    Script,
    /// `uv tool run` / `uvx`: the tool's cached environment.
    Tool,
    /// `--no-cache`: an environment inside the run's own temporary cache.
    Temp,
}

impl EnvName {
    /// The environments that live in the shared cache (not in a temporary cache).
    pub const CACHED: [EnvName; 3] = [EnvName::With, EnvName::Script, EnvName::Tool];

    /// Directory name of the environment inside the cache.
    pub fn dir_name(self) -> &'static str {
        match self {
            EnvName::With => "with",
            EnvName::Script => "script",
            EnvName::Tool => "tool",
            EnvName::Temp => "temp",
        }
    }
}

/// What a run's child does once spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    /// Runs a while, then exits.
    Exits,
    /// Never exits (a server).
    Server,
    /// Starts a background process that keeps using the environment, then exits.
    Daemon,
    /// Itself runs `clean` (`uv run uv cache clean`) and exits when that clean is done.
    NestedClean,
}

/// The kind of a process: what the user typed. The scenario tokens are
/// [`Kind::token`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `uv run --with X CMD`: a run in a cached environment.
    Run,
    /// `uv run --script FILE`: a run in the script's cached environment.
    RunScript,
    /// `uv run --no-cache CMD`: a run in its own temporary cache.
    RunNoCache,
    /// `uv tool run` / `uvx`.
    ToolRun,
    /// A run whose child never exits.
    RunServer,
    /// A run whose child starts a daemon that outlives it.
    RunDaemon,
    /// A run whose child runs `clean` (`uv run uv cache clean`).
    RunNestedClean,
    /// `uv cache clean`.
    Clean,
    /// `uv cache clean --force`.
    CleanForce,
    /// `uv cache prune`.
    Prune,
}

impl Kind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [Kind; 10] = [
        Kind::Run,
        Kind::RunScript,
        Kind::RunNoCache,
        Kind::ToolRun,
        Kind::RunServer,
        Kind::RunDaemon,
        Kind::RunNestedClean,
        Kind::Clean,
        Kind::CleanForce,
        Kind::Prune,
    ];

    /// The kind whose scenario token is `token` (the inverse of [`Kind::token`]).
    pub fn from_token(token: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.token() == token)
    }

    /// The scenario token.
    pub fn token(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::RunScript => "run-script",
            Kind::RunNoCache => "run-no-cache",
            Kind::ToolRun => "tool-run",
            Kind::RunServer => "run-server",
            Kind::RunDaemon => "run-daemon",
            Kind::RunNestedClean => "run-nested-clean",
            Kind::Clean => "clean",
            Kind::CleanForce => "clean-force",
            Kind::Prune => "prune",
        }
    }

    /// One line for `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Kind::Run => "uv run --with X: a run in a cached environment",
            Kind::RunScript => "uv run --script: a run in the script's cached environment",
            Kind::RunNoCache => "uv run --no-cache: a run in its own temporary cache",
            Kind::ToolRun => "uvx / uv tool run: a run in the tool's cached environment",
            Kind::RunServer => "a run whose child never exits",
            Kind::RunDaemon => "a run whose child starts a daemon that outlives it",
            Kind::RunNestedClean => "a run whose child runs clean (uv run uv cache clean)",
            Kind::Clean => "uv cache clean",
            Kind::CleanForce => "uv cache clean --force",
            Kind::Prune => "uv cache prune",
        }
    }

    /// True for the cleaners (`clean`, `clean-force`, `prune`).
    pub fn is_clean(self) -> bool {
        matches!(self, Kind::Clean | Kind::CleanForce | Kind::Prune)
    }

    /// True for the runs.
    pub fn is_run(self) -> bool {
        !self.is_clean()
    }

    /// The environment a run uses; `None` for cleaners.
    pub fn env(self) -> Option<EnvName> {
        match self {
            Kind::Run | Kind::RunServer | Kind::RunDaemon | Kind::RunNestedClean => {
                Some(EnvName::With)
            }
            Kind::RunScript => Some(EnvName::Script),
            Kind::ToolRun => Some(EnvName::Tool),
            Kind::RunNoCache => Some(EnvName::Temp),
            Kind::Clean | Kind::CleanForce | Kind::Prune => None,
        }
    }

    /// What a run's child does; `None` for cleaners.
    pub fn child(self) -> Option<ChildKind> {
        match self {
            Kind::RunServer => Some(ChildKind::Server),
            Kind::RunDaemon => Some(ChildKind::Daemon),
            Kind::RunNestedClean => Some(ChildKind::NestedClean),
            k if k.is_run() => Some(ChildKind::Exits),
            _ => None,
        }
    }

    /// True for a run that uses the shared cache (and so takes its lock).
    pub fn uses_shared_cache(self) -> bool {
        self.is_run() && self != Kind::RunNoCache
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// One process of a scenario: its kind and the faults it may suffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcSpec {
    /// What the process is.
    pub kind: Kind,
    /// `+crash`: the process may be killed (SIGKILL) after any step.
    pub crash: bool,
    /// `+timeout`: the process's lock waits may time out (exit 2). For
    /// `run-nested-clean` this applies to the nested clean as well.
    pub timeout: bool,
    /// `@policy`: the release this process runs (`run@uv-0.13`); `None` runs the policy
    /// being checked. A `run-nested-clean`'s clean runs its host's policy.
    pub policy: Option<Policy>,
}

impl ProcSpec {
    /// A process of this kind with no faults, running the checked policy.
    pub fn plain(kind: Kind) -> ProcSpec {
        ProcSpec {
            kind,
            crash: false,
            timeout: false,
            policy: None,
        }
    }

    /// The policy this process runs when `checked` is the policy being checked.
    pub fn policy_or(&self, checked: Policy) -> Policy {
        self.policy.unwrap_or(checked)
    }
}

impl fmt::Display for ProcSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.token())?;
        if self.crash {
            f.write_str("+crash")?;
        }
        if self.timeout {
            f.write_str("+timeout")?;
        }
        if let Some(policy) = self.policy {
            write!(f, "@{policy}")?;
        }
        Ok(())
    }
}

/// A list of processes sharing one cache: `run-script+crash,clean`, or with processes of
/// other releases, `run,clean+timeout@uv-0.13`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scenario {
    /// The processes, in the order written.
    pub procs: Vec<ProcSpec>,
}

/// Why a scenario string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

/// The largest scenario the model accepts (process ids are bits of a `u16`, and the
/// state space grows quickly).
pub const MAX_PROCS: usize = 6;

/// The largest scenario the model takes for sampling (`crate::simulate`), which never
/// enumerates the state space: as many processes as a `u16` has bits.
pub const MAX_SIMULATED_PROCS: usize = 16;

impl Scenario {
    /// Parses `token[+crash][+timeout][@policy],…`, of at most [`MAX_PROCS`] processes. The policy goes last: `@uv-0.13+crash`
    /// is refused with the order to use.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_at_most(text, MAX_PROCS)
    }

    /// As [`Scenario::parse`], with at most `max` processes (never more than
    /// [`MAX_SIMULATED_PROCS`]).
    pub fn parse_at_most(text: &str, max: usize) -> Result<Scenario, ScenarioError> {
        let max = max.min(MAX_SIMULATED_PROCS);
        let text = text.trim();
        if text.is_empty() {
            return Err(ScenarioError(format!(
                "empty scenario: give a comma-separated list of processes ({})",
                Kind::ALL.map(Kind::token).join(", ")
            )));
        }
        let mut procs = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (body, policy) = match part.split_once('@') {
                None => (part, None),
                Some((body, name)) => {
                    if let Some((name, suffix)) = name.split_once('+') {
                        return Err(ScenarioError(format!(
                            "`{part}`: the policy goes last, after the suffixes: write `{body}+{suffix}@{name}`"
                        )));
                    }
                    let policy = Policy::parse(name).map_err(|e| {
                        ScenarioError(format!("`{part}` in scenario `{text}`: {e}"))
                    })?;
                    (body, Some(policy))
                }
            };
            let mut pieces = body.split('+');
            let token = pieces.next().unwrap_or_default();
            let kind = Kind::from_token(token).ok_or_else(|| {
                ScenarioError(format!(
                    "unknown process `{token}` in scenario `{text}`: expected one of {}",
                    Kind::ALL.map(Kind::token).join(", ")
                ))
            })?;
            let mut spec = ProcSpec {
                policy,
                ..ProcSpec::plain(kind)
            };
            for flag in pieces {
                let slot = match flag {
                    "crash" => &mut spec.crash,
                    "timeout" => &mut spec.timeout,
                    other => {
                        return Err(ScenarioError(format!(
                            "unknown suffix `+{other}` on `{part}`: expected +crash or +timeout"
                        )));
                    }
                };
                if *slot {
                    return Err(ScenarioError(format!(
                        "suffix `+{flag}` repeated on `{part}`"
                    )));
                }
                *slot = true;
            }
            procs.push(spec);
        }
        let expanded = procs
            .iter()
            .map(|p| if p.kind == Kind::RunNestedClean { 2 } else { 1 })
            .sum::<usize>();
        if expanded > max {
            let hint = if max < MAX_SIMULATED_PROCS {
                format!(" (sampling with --simulate takes up to {MAX_SIMULATED_PROCS})")
            } else {
                String::new()
            };
            return Err(ScenarioError(format!(
                "scenario `{text}` has {expanded} processes (a run-nested-clean counts 2); the model takes at most {max}{hint}"
            )));
        }
        Ok(Scenario { procs })
    }

    /// True if some process is of this kind.
    pub fn has(&self, pred: impl Fn(Kind) -> bool) -> bool {
        self.procs.iter().any(|p| pred(p.kind))
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.procs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Scenario {
    type Err = ScenarioError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::parse(s)
    }
}

/// When a run gives up the root lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReleaseRoot {
    /// Just before spawning the child (uv PR 15888, and PR 15977 for persistent caches).
    BeforeSpawn,
    /// Only after the child has exited (uv PR 15990).
    AfterChild,
}

/// When a `--no-cache` run removes its temporary cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropTemp {
    /// Just before spawning (uv 0.8.19: the whole cache handle is dropped).
    BeforeSpawn,
    /// After the child has exited.
    AfterChild,
    /// Never: the temporary cache is handed over to the child and kept.
    Never,
}

/// Which temporary caches (of `--no-cache` runs, in `$TMPDIR`) a prune removes. A
/// `--no-cache` run locks its temporary cache shared from birth (`create-temp-cache`)
/// and its child inherits that lock where the design has the child inherit the
/// environment lock; a SIGKILL leaves the temporary cache behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PruneTemp {
    /// None: prune works on the shared cache only (uv), so a killed run's temporary
    /// cache stays for ever.
    Never,
    /// Those whose lock it can take exclusive without waiting (`remove-leaked-temp`):
    /// their run is gone and no child holds the inherited lock.
    Unlocked,
    /// Every one, locked or not (built to break `live-env-intact`).
    Any,
}

/// Whether and when a run locks its environment's own lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvLock {
    /// No environment locks: the root lock is the only protection.
    None,
    /// Before building or reusing the environment, while the root lock is held.
    BeforeBuild,
    /// Only after the root lock has been released (a race window).
    AfterRootRelease,
}

/// What a `lock-exclusive` step does when the lock is busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnBusy {
    /// Wait until it is granted (or the wait times out).
    Wait,
    /// Go on without the lock and delete every entry no environment lock protects, uv's
    /// layout and the scaffold included (uv's `clean --force`).
    ProceedUnlocked,
    /// Exit successfully without doing anything.
    GiveUp,
    /// Go on without the root lock, but delete only what no other lock can protect but
    /// the process's own: the environments of the new layout (`Design::new_layout`)
    /// whose environment lock can be taken; the scaffold and every entry of uv's layout,
    /// which `.lock` protects, stay for a clean that gets `.lock` exclusive.
    OwnLayout,
}

/// The design choices a policy bundles. [`Policy::program`] turns them into steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Design {
    /// A run creates the scaffold and opens `.lock` before locking (uv up to 0.12).
    pub scaffold_before_lock: bool,
    /// A clean that held the lock unlinks `.lock` and removes the root (uv up to 0.12).
    pub clean_unlinks_lock: bool,
    /// The mode in which runs lock the root.
    pub run_lock: Mode,
    /// When a run with a persistent cache releases the root lock.
    pub release_root: ReleaseRoot,
    /// When a `--no-cache` run removes its temporary cache.
    pub drop_temp: DropTemp,
    /// Which temporary caches a prune removes (`remove-leaked-temp`).
    pub prune_temp: PruneTemp,
    /// Environment locks.
    pub env_lock: EnvLock,
    /// A run ends its environment lock with `LOCK_UN` rather than `close`.
    pub env_unlock: bool,
    /// The child inherits the environment lock's descriptor (no `O_CLOEXEC`).
    pub child_inherits_env_lock: bool,
    /// Cleans announce themselves and runs wait for announced cleans.
    pub announce_cleans: bool,
    /// What a plain clean or prune does when `.lock` is busy.
    pub clean_on_busy: OnBusy,
    /// What `clean --force` does when `.lock` is busy. It never waits: uv's goes on
    /// unlocked and deletes everything (`ProceedUnlocked`); the fenced family's deletes
    /// what its busy clean deletes (`OwnLayout`), so that an old run, which only `.lock`
    /// protects, keeps its environment even beside a forced clean.
    pub force_on_busy: OnBusy,
    /// The run's environments live in a bucket of their own that uv never opens
    /// (`environments/`, not uv's `archive-v0`/`environments-v2`): an old run never
    /// reuses them, a new run never reuses uv's. An old clean still deletes every bucket.
    pub new_layout: bool,
    /// The child inherits the run's descriptor on `.lock` (no `O_CLOEXEC`): the shared
    /// lock outlives a killed run and covers the child's daemon, so an old clean, which
    /// respects only `.lock`, waits for them too.
    pub child_inherits_root_lock: bool,
    /// Lock waits can time out (`UV_LOCK_TIMEOUT`, uv 0.9.16 and later): `+timeout`
    /// processes exit 2 instead of waiting forever. Without it `+timeout` has no effect.
    pub lock_timeout: bool,
    /// `remove-root` fails (the clean exits 2) when the root is not empty, instead of
    /// tolerating it (uv 0.8.19).
    pub remove_root_strict: bool,
    /// A `run --with` child runs in an overlay environment of the run's own (on top of
    /// the cached one) that the run deletes when it exits (uv: `builds-v0/.tmpX`), so a
    /// daemon outliving the run loses its `sys.prefix` even without a clean.
    pub run_overlay: bool,
    /// Where a clean's deletion happens ([`Trash`]).
    pub trash: Trash,
}

/// Where a clean deletes what it deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trash {
    /// In place, while it holds what it holds (`delete-entries`).
    None,
    /// `move-to-trash` while it holds what it holds, `delete-trash` after releasing `.lock`.
    BeforeRelease,
    /// `move-to-trash` only after releasing `.lock` (broken: the moves happen beside
    /// runs that got `.lock` meanwhile).
    AfterRelease,
}

/// A named bundle of design choices. The first five are the ones the project is about;
/// the others are each built to break one property, to show that the checker would
/// notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    /// uv 0.8.19 (PR 15888): runs drop the cache handle before spawning.
    Uv0819,
    /// uv 0.8.20 to 0.12.x (PR 15990): runs hold the lock until the child exits.
    Uv0820,
    /// uv 0.13: clean keeps `.lock` and the root; scaffold only after locking.
    Uv013,
    /// uv PR 15977 (not merged): persistent caches are released before spawning.
    UvPr15977,
    /// Our protocol: environment locks inherited by the child, announced cleans.
    Cachelock,
    /// uv 0.13, but a clean gives up when the lock is busy (like uv's autoprune preview).
    UvAutoprune,
    /// uv 0.13, but runs take the lock exclusive: one process at a time.
    Serial,
    /// cachelock, but the environment lock is taken after the root lock is released.
    CachelockLateEnvLock,
    /// cachelock, but the environment lock is ended with `LOCK_UN`.
    CachelockUnlock,
    /// cachelock, but the child does not inherit the environment lock.
    CachelockCloexec,
    /// cachelock, but cleans do not announce themselves.
    CachelockNoAnnounce,
    /// cachelock, but the temporary cache is handed to the child and never removed.
    CachelockKeepTemp,
    /// cachelock, but prune removes every temporary cache, in use or not.
    CachelockPruneAnyTemp,
    /// Ours, safe beside old uv: cachelock's environment locks in a layout of its own,
    /// plus `.lock` held shared (and inherited) while the child lives, as old uv expects.
    CachelockFenced,
    /// cachelock-fenced, but a clean waits for `.lock` like uv's.
    FencedCleanWaits,
    /// cachelock-fenced, but a clean gives up when `.lock` is busy.
    FencedCleanGivesUp,
    /// cachelock-fenced, but a busy clean deletes every unlocked entry, uv's layout too.
    FencedCleanAllLayouts,
    /// cachelock-fenced, but the child does not inherit `.lock`.
    FencedCloexec,
    /// cachelock-fenced, but environments live where uv's do.
    FencedSharedLayout,
    /// cachelock-fenced, but `clean --force` goes on unlocked and deletes uv's layout too.
    FencedForceUnlocked,
    /// cachelock-fenced, but a clean moves what it deletes to its trash only after
    /// releasing `.lock`.
    FencedTrashAfterRelease,
}

/// Why a policy name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Every policy, in table order.
    pub const ALL: [Policy; 21] = [
        Policy::Uv0819,
        Policy::Uv0820,
        Policy::Uv013,
        Policy::UvPr15977,
        Policy::Cachelock,
        Policy::UvAutoprune,
        Policy::Serial,
        Policy::CachelockLateEnvLock,
        Policy::CachelockUnlock,
        Policy::CachelockCloexec,
        Policy::CachelockNoAnnounce,
        Policy::CachelockKeepTemp,
        Policy::CachelockPruneAnyTemp,
        Policy::CachelockFenced,
        Policy::FencedCleanWaits,
        Policy::FencedCleanGivesUp,
        Policy::FencedCleanAllLayouts,
        Policy::FencedCloexec,
        Policy::FencedSharedLayout,
        Policy::FencedForceUnlocked,
        Policy::FencedTrashAfterRelease,
    ];

    /// The policy the `cachelock` command follows unless told otherwise: the one that is
    /// safe beside every uv release sharing the cache (a user cannot know which do).
    pub const DEFAULT: Policy = Policy::CachelockFenced;

    /// The policies also checked beside old uv (the mixed scenarios): ours, and the
    /// designs that were tried for being safe beside it.
    pub const BESIDE_OLD_UV: [Policy; 8] = [
        Policy::Cachelock,
        Policy::CachelockFenced,
        Policy::FencedCleanWaits,
        Policy::FencedCleanGivesUp,
        Policy::FencedCleanAllLayouts,
        Policy::FencedCloexec,
        Policy::FencedSharedLayout,
        Policy::FencedForceUnlocked,
    ];

    /// The policy's name, as `--policy` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Uv0819 => "uv-0.8.19",
            Policy::Uv0820 => "uv-0.8.20",
            Policy::Uv013 => "uv-0.13",
            Policy::UvPr15977 => "uv-pr15977",
            Policy::Cachelock => "cachelock",
            Policy::UvAutoprune => "uv-autoprune",
            Policy::Serial => "serial",
            Policy::CachelockLateEnvLock => "cachelock-late-env-lock",
            Policy::CachelockUnlock => "cachelock-unlock",
            Policy::CachelockCloexec => "cachelock-cloexec",
            Policy::CachelockNoAnnounce => "cachelock-no-announce",
            Policy::CachelockKeepTemp => "cachelock-keep-temp",
            Policy::CachelockPruneAnyTemp => "cachelock-prune-any-temp",
            Policy::CachelockFenced => "cachelock-fenced",
            Policy::FencedCleanWaits => "fenced-clean-waits",
            Policy::FencedCleanGivesUp => "fenced-clean-gives-up",
            Policy::FencedCleanAllLayouts => "fenced-clean-all-layouts",
            Policy::FencedCloexec => "fenced-cloexec",
            Policy::FencedSharedLayout => "fenced-shared-layout",
            Policy::FencedForceUnlocked => "fenced-force-unlocked",
            Policy::FencedTrashAfterRelease => "fenced-trash-after-release",
        }
    }

    /// Two lines for the docs: what the policy is and where it comes from.
    pub fn summary(self) -> &'static str {
        match self {
            Policy::Uv0819 => {
                "uv 0.8.19 (PR 15888): a run drops its whole cache handle (lock and temporary cache) just before spawning; \
                 clean unlinks .lock and removes the root (failing, exit 2, if it is not empty); runs create the scaffold \
                 and open .lock before locking; no lock timeout."
            }
            Policy::Uv0820 => {
                "uv 0.8.20-0.12.x (PR 15990): runs hold the shared lock and the temporary cache until the child exits; \
                 clean waits for the exclusive lock, --force goes on unlocked; .lock handling as in 0.8.19, but a root \
                 that is not empty is tolerated; no lock timeout (UV_LOCK_TIMEOUT came in 0.9.16)."
            }
            Policy::Uv013 => {
                "uv 0.13: as uv-0.8.20, but clean keeps .lock and the root, a run creates the scaffold only after \
                 locking, and lock waits can time out (UV_LOCK_TIMEOUT, exit 2)."
            }
            Policy::UvPr15977 => {
                "uv PR 15977 (closed): as uv-0.13, but a run with a persistent cache releases the lock before spawning; \
                 temporary caches are kept until the child exits."
            }
            Policy::Cachelock => {
                "Ours: a run locks its environment's own lock file before building it, releases the root lock before \
                 spawning, and the child inherits the environment lock; clean announces itself, deletes only what it can lock."
            }
            Policy::UvAutoprune => {
                "Built to break clean-removes-unused: as uv-0.13, but clean gives up (exit 0) when the lock is busy, \
                 as uv's cache-autoprune preview (issue 20116) does."
            }
            Policy::Serial => {
                "Built to break runs-share-lock: as uv-0.13, but runs lock exclusive, so one process uses the cache \
                 at a time (the simplest safe design)."
            }
            Policy::CachelockLateEnvLock => {
                "Built to break live-env-intact: as cachelock, but the environment lock is taken only after the root \
                 lock is released, leaving a window in which a clean deletes the environment."
            }
            Policy::CachelockUnlock => {
                "Built to break live-env-intact with daemons: as cachelock, but the run ends the environment lock with \
                 LOCK_UN, which also releases the copy its child's daemon inherited."
            }
            Policy::CachelockCloexec => {
                "Built to break live-env-intact with crashes: as cachelock, but the environment lock is close-on-exec, \
                 so a killed run's orphaned child is unprotected."
            }
            Policy::CachelockNoAnnounce => {
                "Built to break no-overtaking: as cachelock, but cleans do not announce themselves; a waiting clean is \
                 invisible and later runs take the cache first."
            }
            Policy::CachelockKeepTemp => {
                "Built to break no-leaked-temp: as cachelock, but the temporary cache is handed over to the child \
                 (kept) so that it outlives a killed parent, and nobody removes it."
            }
            Policy::CachelockPruneAnyTemp => {
                "Built to break live-env-intact with --no-cache: as cachelock, but prune removes every temporary \
                 cache of cachelock's, not only those whose lock is free, so a running --no-cache child loses its \
                 environment."
            }
            Policy::CachelockFenced => {
                "Ours, the default, safe beside old uv: as cachelock (environment locks, announced cleans), with its \
                 environments in a bucket uv never opens; a run also keeps .lock shared until its child exits, and the \
                 child inherits it (the fence old uv's cleans respect); a clean that gets .lock exclusive at once cleans \
                 everything no environment lock protects, a clean that finds it busy (and clean --force, which never \
                 waits) deletes only the unlocked environments of its own bucket."
            }
            Policy::FencedCleanWaits => {
                "Tried for upgrades: as cachelock-fenced, but a clean that finds .lock busy waits for it, as uv's does: \
                 beside a server it waits for ever."
            }
            Policy::FencedCleanGivesUp => {
                "Tried for upgrades: as cachelock-fenced, but a clean that finds .lock busy gives up (exit 0, nothing \
                 deleted): beside a server it never cleans."
            }
            Policy::FencedCleanAllLayouts => {
                "Tried for upgrades: as cachelock-fenced, but a clean that finds .lock busy deletes every entry no \
                 environment lock protects, uv's layout too: a running old uv's environment goes."
            }
            Policy::FencedCloexec => {
                "Tried for upgrades: as cachelock-fenced, but the child does not inherit .lock: once the run is killed \
                 or has exited, an old clean deletes its orphaned child's or daemon's environment."
            }
            Policy::FencedSharedLayout => {
                "Tried for upgrades: as cachelock-fenced, but the environments live where uv's do: an old run reuses \
                 a new run's environment and the other way round, and a busy clean deletes one an old run uses."
            }
            Policy::FencedForceUnlocked => {
                "Tried for upgrades: as cachelock-fenced, but clean --force goes on unlocked as uv's does and deletes \
                 every entry no environment lock protects: a running old uv's environment, which only .lock \
                 protects, goes."
            }
            Policy::FencedTrashAfterRelease => {
                "Built to break mutual-exclusion: as cachelock-fenced, but a clean moves what it deletes into its \
                 trash only after releasing .lock, beside the runs that got .lock meanwhile."
            }
        }
    }

    /// Looks a policy up by name; the error names the valid choices.
    pub fn parse(name: &str) -> Result<Policy, PolicyError> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                PolicyError(format!(
                    "unknown policy `{name}`: expected one of {}",
                    Policy::ALL.map(Policy::name).join(", ")
                ))
            })
    }

    /// True for the policies that describe a real uv release or PR.
    pub fn is_uv(self) -> bool {
        matches!(
            self,
            Policy::Uv0819 | Policy::Uv0820 | Policy::Uv013 | Policy::UvPr15977
        )
    }

    /// The design choices of this policy.
    pub fn design(self) -> Design {
        let uv_0_8_20 = Design {
            scaffold_before_lock: true,
            clean_unlinks_lock: true,
            run_lock: Mode::Shared,
            release_root: ReleaseRoot::AfterChild,
            drop_temp: DropTemp::AfterChild,
            prune_temp: PruneTemp::Never,
            env_lock: EnvLock::None,
            env_unlock: false,
            child_inherits_env_lock: false,
            announce_cleans: false,
            clean_on_busy: OnBusy::Wait,
            force_on_busy: OnBusy::ProceedUnlocked,
            new_layout: false,
            child_inherits_root_lock: false,
            lock_timeout: false,
            remove_root_strict: false,
            run_overlay: true,
            trash: Trash::None,
        };
        let uv_0_13 = Design {
            scaffold_before_lock: false,
            clean_unlinks_lock: false,
            lock_timeout: true,
            ..uv_0_8_20
        };
        let cachelock = Design {
            run_overlay: false,
            release_root: ReleaseRoot::BeforeSpawn,
            env_lock: EnvLock::BeforeBuild,
            child_inherits_env_lock: true,
            announce_cleans: true,
            prune_temp: PruneTemp::Unlocked,
            new_layout: true,
            trash: Trash::BeforeRelease,
            ..uv_0_13
        };
        let fenced = Design {
            release_root: ReleaseRoot::AfterChild,
            child_inherits_root_lock: true,
            clean_on_busy: OnBusy::OwnLayout,
            force_on_busy: OnBusy::OwnLayout,
            ..cachelock
        };
        match self {
            Policy::Uv0819 => Design {
                release_root: ReleaseRoot::BeforeSpawn,
                drop_temp: DropTemp::BeforeSpawn,
                remove_root_strict: true,
                ..uv_0_8_20
            },
            Policy::Uv0820 => uv_0_8_20,
            Policy::Uv013 => uv_0_13,
            Policy::UvPr15977 => Design {
                release_root: ReleaseRoot::BeforeSpawn,
                ..uv_0_13
            },
            Policy::Cachelock => cachelock,
            Policy::UvAutoprune => Design {
                clean_on_busy: OnBusy::GiveUp,
                ..uv_0_13
            },
            Policy::Serial => Design {
                run_lock: Mode::Exclusive,
                ..uv_0_13
            },
            Policy::CachelockLateEnvLock => Design {
                env_lock: EnvLock::AfterRootRelease,
                ..cachelock
            },
            Policy::CachelockUnlock => Design {
                env_unlock: true,
                ..cachelock
            },
            Policy::CachelockCloexec => Design {
                child_inherits_env_lock: false,
                ..cachelock
            },
            Policy::CachelockNoAnnounce => Design {
                announce_cleans: false,
                ..cachelock
            },
            Policy::CachelockKeepTemp => Design {
                drop_temp: DropTemp::Never,
                ..cachelock
            },
            Policy::CachelockPruneAnyTemp => Design {
                prune_temp: PruneTemp::Any,
                ..cachelock
            },
            Policy::CachelockFenced => fenced,
            Policy::FencedCleanWaits => Design {
                clean_on_busy: OnBusy::Wait,
                ..fenced
            },
            Policy::FencedCleanGivesUp => Design {
                clean_on_busy: OnBusy::GiveUp,
                ..fenced
            },
            // Its forced clean deletes what its busy clean deletes, as the default's does.
            Policy::FencedCleanAllLayouts => Design {
                clean_on_busy: OnBusy::ProceedUnlocked,
                force_on_busy: OnBusy::ProceedUnlocked,
                ..fenced
            },
            Policy::FencedCloexec => Design {
                child_inherits_root_lock: false,
                ..fenced
            },
            Policy::FencedSharedLayout => Design {
                new_layout: false,
                ..fenced
            },
            Policy::FencedForceUnlocked => Design {
                force_on_busy: OnBusy::ProceedUnlocked,
                ..fenced
            },
            Policy::FencedTrashAfterRelease => Design {
                trash: Trash::AfterRelease,
                ..fenced
            },
        }
    }

    /// The steps a process of this kind takes under this policy, in order.
    pub fn program(self, kind: Kind) -> Vec<Step> {
        let d = self.design();
        let mut p = Vec::new();
        if kind.is_clean() {
            if d.announce_cleans {
                p.push(Step::AnnounceClean);
            }
            p.extend([Step::OpenLockFile, Step::LockExclusive]);
            match d.trash {
                Trash::None => p.extend([Step::DeleteEntries, Step::ReleaseRootLock]),
                Trash::BeforeRelease => p.extend([Step::MoveToTrash, Step::ReleaseRootLock]),
                Trash::AfterRelease => p.extend([Step::ReleaseRootLock, Step::MoveToTrash]),
            }
            if d.clean_unlinks_lock && kind != Kind::Prune {
                p.extend([Step::UnlinkLockFile, Step::RemoveRoot]);
            }
            if d.announce_cleans {
                p.push(Step::WithdrawAnnouncement);
            }
            // Last but for a prune's temporary caches: runs started meanwhile wait for
            // nothing of it.
            if d.trash != Trash::None {
                p.push(Step::DeleteTrash);
            }
            if kind == Kind::Prune && d.prune_temp != PruneTemp::Never {
                p.push(Step::RemoveLeakedTemp);
            }
            return p;
        }
        if kind == Kind::RunNoCache {
            p.extend([Step::CreateTempCache, Step::BuildEnv, Step::PersistEnv]);
            if d.drop_temp == DropTemp::BeforeSpawn {
                p.push(Step::DropTempCache);
            }
            p.extend([Step::SpawnChild, Step::WaitForChild]);
            if d.drop_temp == DropTemp::AfterChild {
                p.push(Step::DropTempCache);
            }
            return p;
        }
        let lock = match d.run_lock {
            Mode::Shared => Step::LockShared,
            Mode::Exclusive => Step::LockExclusive,
        };
        if d.announce_cleans {
            p.push(Step::AwaitAnnouncedCleans);
        }
        if d.scaffold_before_lock {
            p.extend([Step::CreateScaffold, Step::OpenLockFile, lock]);
        } else {
            p.extend([Step::OpenLockFile, lock, Step::CreateScaffold]);
        }
        if d.env_lock == EnvLock::BeforeBuild {
            p.push(Step::LockEnv);
        }
        p.extend([Step::BuildEnv, Step::PersistEnv]);
        if d.release_root == ReleaseRoot::BeforeSpawn {
            p.push(Step::ReleaseRootLock);
        }
        if d.env_lock == EnvLock::AfterRootRelease {
            p.push(Step::LockEnv);
        }
        p.extend([Step::SpawnChild, Step::WaitForChild]);
        // Locks are given up in the reverse order of taking them: the environment lock
        // before `.lock`, so that an old clean, which takes `.lock` and respects nothing
        // else, never deletes an environment whose lock is still held.
        if d.env_lock != EnvLock::None {
            p.push(if d.env_unlock {
                Step::UnlockEnvLock
            } else {
                Step::CloseEnvLock
            });
        }
        if d.release_root == ReleaseRoot::AfterChild {
            p.push(Step::ReleaseRootLock);
        }
        p
    }

    /// What a `lock-exclusive` step of this kind does when the lock is busy.
    pub fn on_busy(self, kind: Kind) -> OnBusy {
        match kind {
            Kind::CleanForce => self.design().force_on_busy,
            Kind::Clean | Kind::Prune => self.design().clean_on_busy,
            _ => OnBusy::Wait,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_round_trips() {
        let s = Scenario::parse("run-script+crash,clean+timeout, prune").unwrap();
        assert_eq!(s.to_string(), "run-script+crash,clean+timeout,prune");
        assert_eq!(s.procs[0].kind, Kind::RunScript);
        assert!(s.procs[0].crash && !s.procs[0].timeout);
    }

    #[test]
    fn a_process_may_name_its_release_after_its_suffixes() {
        let s = Scenario::parse("run,clean+timeout@uv-0.13, prune@uv-0.8.20").unwrap();
        assert_eq!(s.to_string(), "run,clean+timeout@uv-0.13,prune@uv-0.8.20");
        assert_eq!(s.procs[0].policy, None);
        assert_eq!(s.procs[1].policy, Some(Policy::Uv013));
        assert!(s.procs[1].timeout);
        assert_eq!(s.procs[2].policy_or(Policy::Cachelock), Policy::Uv0820);
        let e = Scenario::parse("clean@uv-0.13+timeout").unwrap_err();
        assert!(e.0.contains("write `clean+timeout@uv-0.13`"), "{e}");
        let e = Scenario::parse("run,clean@uv-9").unwrap_err();
        assert!(e.0.contains("unknown policy `uv-9`"), "{e}");
    }

    #[test]
    fn bad_scenarios_name_the_choices() {
        let e = Scenario::parse("run,cleen").unwrap_err();
        assert!(e.0.contains("unknown process `cleen`") && e.0.contains("clean-force"));
        let e = Scenario::parse("run+boom").unwrap_err();
        assert!(e.0.contains("+boom"));
        assert!(Scenario::parse("").is_err());
        assert!(Scenario::parse("run+crash+crash").is_err());
        assert!(Scenario::parse("run,run,run,run,run,run,run").is_err());
    }

    #[test]
    fn policy_names_round_trip_and_errors_list_them() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Ok(p));
        }
        let e = Policy::parse("uv-9").unwrap_err();
        assert!(e.0.contains("uv-0.13") && e.0.contains("cachelock"));
    }

    #[test]
    fn step_names_round_trip() {
        for s in Step::ALL {
            assert_eq!(Step::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn the_default_fences_old_cleans_until_the_child_exits() {
        assert_eq!(Policy::DEFAULT, Policy::CachelockFenced);
        let p = Policy::DEFAULT.program(Kind::Run);
        let at = |s| p.iter().position(|x| *x == s).unwrap();
        assert!(at(Step::LockShared) < at(Step::LockEnv));
        assert!(at(Step::WaitForChild) < at(Step::CloseEnvLock));
        assert!(at(Step::CloseEnvLock) < at(Step::ReleaseRootLock));
        assert!(Policy::DEFAULT.design().child_inherits_root_lock);
        assert_eq!(Policy::DEFAULT.on_busy(Kind::Clean), OnBusy::OwnLayout);
        // `--force` does not wait either, and deletes what a busy clean deletes.
        assert_eq!(Policy::DEFAULT.on_busy(Kind::CleanForce), OnBusy::OwnLayout);
        assert_eq!(
            Policy::FencedForceUnlocked.on_busy(Kind::CleanForce),
            OnBusy::ProceedUnlocked
        );
        assert_eq!(
            Policy::Uv013.on_busy(Kind::CleanForce),
            OnBusy::ProceedUnlocked
        );
    }

    #[test]
    fn uv_0_8_19_drops_the_temp_cache_before_spawning() {
        let p = Policy::Uv0819.program(Kind::RunNoCache);
        let drop = p.iter().position(|s| *s == Step::DropTempCache).unwrap();
        let spawn = p.iter().position(|s| *s == Step::SpawnChild).unwrap();
        assert!(drop < spawn, "{p:?}");
    }

    #[test]
    fn cachelock_locks_the_env_before_building_and_releases_root_before_spawn() {
        let p = Policy::Cachelock.program(Kind::Run);
        let at = |s| p.iter().position(|x| *x == s).unwrap();
        assert!(at(Step::LockEnv) < at(Step::BuildEnv));
        assert!(at(Step::ReleaseRootLock) < at(Step::SpawnChild));
        assert_eq!(p.first(), Some(&Step::AwaitAnnouncedCleans));
        assert_eq!(p.last(), Some(&Step::CloseEnvLock));
    }
}
