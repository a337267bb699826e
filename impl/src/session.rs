//! A session: one cachelock (or uv-like) process, running its policy's program one
//! [`Step`] at a time on real files.
//!
//! This is the single seam between the model and the real protocol. Production runs the
//! steps back to back with [`Wait::Block`] ([`Session::run_to_completion`]); the
//! conformance harness drives them one at a time with [`Wait::NoBlock`] and compares
//! [`Session::observe`] with the model's state. There is no second implementation.
//!
//! What each step does is `Step`'s documentation in `cachelock_model::protocol`; the
//! rules the steps rely on:
//! - Runs lock `<cache>/.lock` shared, cleans exclusive, on a fresh descriptor each.
//!   Under the `cachelock` policy a run releases the root lock before spawning and keeps
//!   its environment alive with `environments/<env>.lock` (shared, inherited by the child);
//!   a clean deletes an environment only while holding its lock exclusive, taken without
//!   waiting, and skips the others.
//! - A clean announces itself (`.cleans/<pid>-<random>`, locked before it is visible), so
//!   that runs that start later wait for it instead of overtaking it.
//! - A `--no-cache` run never touches the user's cache; its temporary cache is removed
//!   only after the child has exited (except under `uv-0.8.19`, which reproduces uv's bug).
//! - Everything held is released in the drop order of [`Held`]'s fields, which is the
//!   protocol's order, on every path.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cachelock_model::protocol::{DropTemp, EnvLock, PruneTemp};
use cachelock_model::{Design, EnvName, Kind, Mode, OnBusy, Policy, Step};

use crate::announce;
use crate::cache::{self, CLEANS_DIR, CacheDir, ENV_MARKER, ENVIRONMENTS_DIR, LOCK_FILE};
use crate::child;
use crate::error::{Error, IoContext};
use crate::faults::{self, Fault};
use crate::guards::Held;
use crate::lockfile::{LockFile, Observer, Silent, TryLock, pid_list, process_list};
use crate::safe_fs::{DirFd, OwnedTree};

/// uv's default lock timeout, used when none is configured.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// How to configure a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The cache: a shared directory, or a private temporary one (`--no-cache`).
    pub cache: CacheDir,
    /// The policy whose program runs.
    pub policy: Policy,
    /// What the process is.
    pub kind: Kind,
    /// The environment's name (`--env NAME`, the script's or the tool's name).
    pub env_name: String,
    /// The child command and its arguments (runs only).
    pub command: Vec<OsString>,
    /// The longest any lock wait may last; `None` waits forever.
    pub lock_timeout: Option<Duration>,
    /// Told about lock waits and what a clean did (the command's prints them; the
    /// library itself never prints).
    pub observer: Arc<dyn Observer>,
    /// Forward SIGINT, SIGTERM and SIGHUP to the child while it runs (the command sets
    /// it). The handlers are process-wide: set it for one session at a time.
    pub forward_signals: bool,
}

impl SessionConfig {
    /// A configuration with the kind's default environment name, no command, uv's
    /// default timeout, and no output or signal handling.
    pub fn new(cache: CacheDir, policy: Policy, kind: Kind) -> SessionConfig {
        SessionConfig {
            cache,
            policy,
            kind,
            env_name: kind
                .env()
                .map(|e| e.dir_name())
                .unwrap_or("none")
                .to_string(),
            command: Vec::new(),
            lock_timeout: Some(DEFAULT_LOCK_TIMEOUT),
            observer: Arc::new(Silent),
            forward_signals: false,
        }
    }
}

/// Whether a step may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Lock waits block (up to the timeout); waiting for the child blocks.
    Block,
    /// A busy lock or a running child returns [`StepOutcome::WouldBlock`]: the step did
    /// not happen and nothing is held on its behalf.
    NoBlock,
}

/// What a step did, in the model's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step happened.
    Done,
    /// `build-env`: the environment was already there and is reused (`persist-env` will
    /// have nothing to do).
    Reused,
    /// Only with [`Wait::NoBlock`]: the step would have to wait; it did not happen.
    WouldBlock,
    /// `lock-exclusive` of a clean that does not wait (`clean --force`, or a busy clean
    /// under `OnBusy::OwnLayout`): the lock was busy; going on without it.
    ProceededUnlocked,
    /// `lock-exclusive` of a clean that gives up when the cache is busy: the session has
    /// finished (exit 0) without deleting anything.
    GaveUp,
    /// A clean found no cache: the session has finished (exit 0).
    NoCache,
    /// `delete-entries`: these environments were in use and kept.
    Skipped(Vec<String>),
    /// `wait-for-child`: the child exited with this code (128 + n for signal n).
    ChildExited(i32),
    /// The step failed (e.g. `spawn-child` with the environment gone, `persist-env`
    /// with the build gone): the session has finished (exit 2); the text says why.
    Failed(String),
}

/// A lock descriptor as an observer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockView {
    /// No descriptor.
    Closed,
    /// An open descriptor holding no lock.
    Open,
    /// An open descriptor holding the lock in this mode.
    Held(Mode),
}

/// A snapshot of what a session holds, for mapping real state to model state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// The step that would run next.
    pub next_step: Option<Step>,
    /// True once the program has ended (normally or not).
    pub finished: bool,
    /// The cache root in use (the temporary cache's path for `--no-cache`).
    pub root: Option<PathBuf>,
    /// The descriptor on `<root>/.lock`.
    pub root_lock: LockView,
    /// The descriptor on the environment's lock file.
    pub env_lock: LockView,
    /// A clean's published announcement.
    pub announcement: Option<PathBuf>,
    /// The child's pid, once spawned (and until waited for).
    pub child_pid: Option<u32>,
    /// True while the child runs.
    pub child_running: bool,
    /// The environment directory (known from `build-env` on).
    pub env_dir: Option<PathBuf>,
    /// The environment being built (`builds/.tmpX`), between `build-env` and
    /// `persist-env`.
    pub build_dir: Option<PathBuf>,
    /// The temporary cache, while it exists (`--no-cache`).
    pub temp_cache: Option<PathBuf>,
    /// The exit code once finished.
    pub exit_code: Option<i32>,
}

/// One process of the protocol. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    design: Design,
    program: Vec<Step>,
    next: usize,
    finished: bool,
    exit_code: i32,
    root: Option<PathBuf>,
    env_dir: Option<PathBuf>,
    reused_env: bool,
    clean_held_lock: bool,
    /// A clean that found `.lock` busy and goes on under `OnBusy::OwnLayout`: it deletes
    /// only the unlocked environments (and their builds) of cachelock's own buckets.
    own_layout_only: bool,
    /// The announcements `await-announced-cleans` waits for, listed at its first try.
    awaited: Option<Vec<PathBuf>>,
    /// What `delete-entries` removed and kept, once it has run.
    delete_report: Option<cache::DeleteReport>,
    /// This clean's trash, between `move-to-trash` and `delete-trash`.
    trash: Option<cache::OwnTrash>,
    held: Held,
}

impl Session {
    /// Checks the configuration and prepares the policy's program for the kind. Nothing
    /// on disk changes yet.
    pub fn new(config: SessionConfig) -> Result<Session, Error> {
        let kind = config.kind;
        let root = match (&config.cache, kind) {
            (_, Kind::RunNoCache) => None,
            (CacheDir::Persistent(p), _) => {
                Some(std::path::absolute(p).ctx("resolve the cache directory", p)?)
            }
            (CacheDir::Temporary, _) => {
                return Err(Error::Config(format!(
                    "a temporary cache is only for run-no-cache, not for {kind}; pass a cache directory"
                )));
            }
        };
        if kind.is_run() {
            check_env_name(&config.env_name)?;
        }
        if kind.is_clean()
            && let Some(root) = &root
            && root.exists()
        {
            cache::check_cleanable(root)?;
        }
        Ok(Session {
            design: config.policy.design(),
            program: config.policy.program(kind),
            config,
            next: 0,
            finished: false,
            exit_code: 0,
            root,
            env_dir: None,
            reused_env: false,
            clean_held_lock: false,
            own_layout_only: false,
            awaited: None,
            delete_report: None,
            trash: None,
            held: Held::default(),
        })
    }

    /// The policy's program for this session's kind.
    pub fn program(&self) -> &[Step] {
        &self.program
    }

    /// The step that would run next; `None` once finished.
    pub fn next_step(&self) -> Option<Step> {
        if self.finished {
            None
        } else {
            self.program.get(self.next).copied()
        }
    }

    /// The exit code the process should end with (the child's for a run).
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// What `delete-entries` removed (files, bytes) and kept as in use, once it has run.
    pub fn delete_report(&self) -> Option<&cache::DeleteReport> {
        self.delete_report.as_ref()
    }

    /// The policy's design choices.
    pub fn design(&self) -> Design {
        self.design
    }

    /// The guards the session holds, for the front API (`crate::api`), which hands the
    /// environment lock to the caller's own child and ends a temporary cache itself.
    pub(crate) fn held_mut(&mut self) -> &mut Held {
        &mut self.held
    }

    /// The guards the session holds (see [`Session::held_mut`]).
    pub(crate) fn held(&self) -> &Held {
        &self.held
    }

    /// What the session holds now.
    pub fn observe(&mut self) -> SessionView {
        let lock_view = |l: &Option<LockFile>| match l {
            None => LockView::Closed,
            Some(l) => l.held().map_or(LockView::Open, LockView::Held),
        };
        let (child_pid, child_running) = match self.held.child.as_mut() {
            Some(c) => (Some(c.id()), c.running()),
            None => (None, false),
        };
        SessionView {
            next_step: self.next_step(),
            finished: self.finished || self.next >= self.program.len(),
            root: self.root.clone(),
            root_lock: lock_view(&self.held.root_lock),
            env_lock: lock_view(&self.held.env_lock),
            announcement: self
                .held
                .announcement
                .as_ref()
                .map(|a| a.path().to_path_buf()),
            child_pid,
            child_running,
            env_dir: self.env_dir.clone(),
            build_dir: self.held.build.as_ref().map(|b| b.path().to_path_buf()),
            temp_cache: self
                .held
                .temp_cache
                .as_ref()
                .map(|t| t.path().to_path_buf()),
            exit_code: (self.finished || self.next >= self.program.len()).then_some(self.exit_code),
        }
    }

    /// Performs the next step. On an error the session has finished (exit 2); what it
    /// held is released when it is dropped.
    pub fn step(&mut self, wait: Wait) -> Result<StepOutcome, Error> {
        let Some(step) = self.next_step() else {
            return Err(Error::Finished);
        };
        tracing::info!("{}: {}", step.name(), step.summary());
        if faults::active() == Some(Fault::KillAtStep(self.next)) {
            // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, nothing returns.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        let outcome = match self.perform(step, wait) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.finish(e.exit_code());
                return Err(e);
            }
        };
        tracing::debug!("{} -> {outcome:?}", step.name());
        match &outcome {
            StepOutcome::WouldBlock => {}
            StepOutcome::GaveUp | StepOutcome::NoCache => self.finish(0),
            StepOutcome::Failed(_) => self.finish(2),
            _ => self.next += 1,
        }
        if self.next >= self.program.len() {
            self.finished = true;
        }
        Ok(outcome)
    }

    /// The production path: runs every remaining step, blocking where a step waits, and
    /// returns the exit code to end with (the child's, for a run).
    pub fn run_to_completion(&mut self) -> Result<i32, Error> {
        while let Some(step) = self.next_step() {
            if let StepOutcome::Failed(message) = self.step(Wait::Block)? {
                return Err(Error::StepFailed { step, message });
            }
        }
        Ok(self.exit_code)
    }

    /// The bound on lock waits: the configured one, under a policy whose lock waits can
    /// time out at all (uv 0.8.x had no timeout: there a wait is unbounded).
    fn lock_timeout(&self) -> Option<Duration> {
        if self.design.lock_timeout {
            self.config.lock_timeout
        } else {
            None
        }
    }

    fn finish(&mut self, code: i32) {
        self.finished = true;
        self.exit_code = code;
    }

    fn root(&self) -> Result<PathBuf, Error> {
        self.root.clone().ok_or_else(|| {
            Error::Config("the program uses the cache before it has one (policy bug)".into())
        })
    }

    fn notice(&self, text: &str) {
        self.config.observer.notice(text);
    }

    fn no_cache(&mut self, root: &Path) -> StepOutcome {
        self.notice(&format!("No cache found at: {}", root.display()));
        StepOutcome::NoCache
    }

    /// Takes `lock` in `mode`: at once, or waiting as `wait` allows. `why` describes the
    /// holders for the one-line wait message.
    fn acquire(
        &self,
        lock: &mut LockFile,
        mode: Mode,
        wait: Wait,
        timeout: Option<Duration>,
        why: &dyn Fn(&[u32]) -> String,
    ) -> Result<bool, Error> {
        if lock.try_lock(mode)? == TryLock::Acquired {
            return Ok(true);
        }
        if wait == Wait::NoBlock {
            return Ok(false);
        }
        lock.lock_observed(mode, timeout, why, self.config.observer.as_ref())?;
        Ok(true)
    }

    fn perform(&mut self, step: Step, wait: Wait) -> Result<StepOutcome, Error> {
        let kind = self.config.kind;
        match step {
            Step::AnnounceClean => {
                let root = self.root()?;
                if !root.exists() {
                    return Ok(self.no_cache(&root));
                }
                self.held.announcement = Some(announce::announce(&root)?);
                Ok(StepOutcome::Done)
            }
            Step::AwaitAnnouncedCleans => self.await_announced_cleans(wait),
            Step::CreateTempCache => {
                let tmp = std::env::temp_dir();
                let tmp_dir = DirFd::open_root(&tmp).ctx("open the temporary directory", &tmp)?;
                let mut temp = OwnedTree::create_in(tmp_dir, ".tmp")
                    .ctx("create a temporary cache in", &tmp)?;
                if self.design.drop_temp == DropTemp::Never {
                    // The policy hands the temporary cache to the child and never removes
                    // it (built to show the leak the model finds).
                    temp.disable_cleanup(true);
                }
                cache::create_scaffold(temp.path())?;
                // Locked before anyone can see it unlocked: a leaked temporary cache is
                // one whose lock nobody holds (see `cache::leaked_temp_caches`).
                self.held.temp_lock = Some(cache::lock_temp_cache(temp.path())?);
                self.root = Some(temp.path().to_path_buf());
                self.held.temp_cache = Some(temp);
                Ok(StepOutcome::Done)
            }
            Step::CreateScaffold => {
                cache::create_scaffold(&self.root()?)?;
                Ok(StepOutcome::Done)
            }
            Step::OpenLockFile => {
                let root = self.root()?;
                if kind.is_clean() {
                    if !root.exists() {
                        return Ok(self.no_cache(&root));
                    }
                } else if self.design.scaffold_before_lock {
                    // The scaffold step made the root; if it is gone, a clean removed it
                    // meanwhile and opening `.lock` fails, as it does in uv up to 0.12.
                    if !root.is_dir() {
                        return Ok(StepOutcome::Failed(format!(
                            "could not open the lock file in `{}`: the cache directory was removed \
                             (by a concurrent clean?); run the command again",
                            root.display()
                        )));
                    }
                } else {
                    fs::create_dir_all(&root).ctx("create the cache directory", &root)?;
                }
                self.held.root_lock = Some(LockFile::open_or_create(&root.join(LOCK_FILE))?);
                Ok(StepOutcome::Done)
            }
            Step::LockShared | Step::LockExclusive => {
                let mode = if step == Step::LockShared {
                    Mode::Shared
                } else {
                    Mode::Exclusive
                };
                let mut lock = self.held.root_lock.take().ok_or_else(|| {
                    Error::Config("lock before open-lock-file (policy bug)".into())
                })?;
                let outcome = self.lock_root(&mut lock, mode, step, wait);
                self.held.root_lock = Some(lock);
                outcome
            }
            Step::LockEnv => {
                let root = self.root()?;
                let envs = open_cache_dir(&root, ENVIRONMENTS_DIR)?;
                let name = self.config.env_name.clone();
                let lock_name = format!("{name}.lock");
                let mut lock = cache::open_lock_at(&envs, &lock_name, true)
                    .ctx("open the lock file", &envs.child_path(lock_name.as_ref()))?
                    .ok_or_else(|| Error::Config("a created lock file is missing".into()))?;
                let why = |pids: &[u32]| {
                    format!(
                        "environment `{name}` is being deleted by {}; waiting…",
                        pid_list(pids)
                    )
                };
                if !self.acquire(&mut lock, Mode::Shared, wait, self.lock_timeout(), &why)? {
                    return Ok(StepOutcome::WouldBlock);
                }
                self.held.env_lock = Some(lock);
                Ok(StepOutcome::Done)
            }
            Step::BuildEnv => {
                let root = self.root()?;
                let env_dir = root.join(ENVIRONMENTS_DIR).join(&self.config.env_name);
                self.env_dir = Some(env_dir.clone());
                if env_dir.join(ENV_MARKER).is_file() {
                    self.reused_env = true;
                    return Ok(StepOutcome::Reused);
                }
                let builds = open_cache_dir(&root, cache::BUILDS_DIR)?;
                let builds_path = builds.path().to_path_buf();
                // Named after its environment, so that a clean can tell whose it is and
                // leave it alone while that environment's lock is held.
                let prefix = format!("{}{}", self.config.env_name, cache::BUILD_INFIX);
                let build = OwnedTree::create_in(builds, &prefix)
                    .ctx("create a build directory in", &builds_path)?;
                let marker = build.path().join(ENV_MARKER);
                build
                    .dir()
                    .create_file(ENV_MARKER, 0o644)
                    .and_then(|mut f| {
                        std::io::Write::write_all(
                            &mut f,
                            format!("{}\n", self.config.env_name).as_bytes(),
                        )
                    })
                    .ctx("write", &marker)?;
                self.held.build = Some(build);
                Ok(StepOutcome::Done)
            }
            Step::PersistEnv => self.persist_env(),
            Step::ReleaseRootLock => {
                if let Some(lock) = self.held.root_lock.take() {
                    self.clean_held_lock = lock.held().is_some();
                }
                Ok(StepOutcome::Done)
            }
            Step::SpawnChild => {
                if faults::is(Fault::DropTempBeforeSpawn) {
                    self.held.temp_cache = None;
                }
                let outcome = self.spawn_child();
                if faults::is(Fault::ReleaseBeforeChildExit) {
                    self.held.root_lock = None;
                }
                outcome
            }
            Step::WaitForChild => {
                let Some(child) = self.held.child.as_mut() else {
                    return Ok(StepOutcome::Done);
                };
                let code = match wait {
                    Wait::Block => child.wait()?,
                    Wait::NoBlock => match child.try_wait()? {
                        Some(code) => code,
                        None => return Ok(StepOutcome::WouldBlock),
                    },
                };
                self.held.child = None;
                self.exit_code = code;
                Ok(StepOutcome::ChildExited(code))
            }
            Step::DropTempCache => {
                if let Some(temp) = self.held.temp_cache.take() {
                    temp.close()?;
                }
                // Only now that the directory is gone (see `guards`).
                self.held.temp_lock = None;
                Ok(StepOutcome::Done)
            }
            Step::CloseEnvLock => {
                self.held.env_lock = None;
                Ok(StepOutcome::Done)
            }
            Step::RemoveLeakedTemp => {
                let tmp = std::env::temp_dir();
                let removed = match self.design.prune_temp {
                    PruneTemp::Never => Vec::new(),
                    PruneTemp::Unlocked => cache::remove_leaked_temp_caches(&tmp)?,
                    PruneTemp::Any => cache::remove_every_temp_cache(&tmp)?,
                };
                for (dir, report) in removed {
                    self.notice(&format!(
                        "Removed leaked temporary cache {} ({} files)",
                        dir.display(),
                        report.removed_files
                    ));
                }
                Ok(StepOutcome::Done)
            }
            Step::UnlockEnvLock => {
                if let Some(mut lock) = self.held.env_lock.take() {
                    lock.unlock()?;
                }
                Ok(StepOutcome::Done)
            }
            Step::DeleteTrash => {
                let root = self.root()?;
                let report = cache::delete_trash(&root, self.trash.take())?;
                self.notice(&format!(
                    "Removed {} files ({} bytes)",
                    report.removed_files, report.removed_bytes
                ));
                let total = self.delete_report.get_or_insert_with(Default::default);
                total.removed_files += report.removed_files;
                total.removed_bytes += report.removed_bytes;
                Ok(StepOutcome::Done)
            }
            Step::DeleteEntries | Step::MoveToTrash => {
                let root = self.root()?;
                // Under `OnBusy::OwnLayout` a busy clean keeps the scaffold and every entry
                // of uv's layout, which `.lock` protects: it deletes as a prune does.
                let scaffold = kind != Kind::Prune && !self.own_layout_only;
                if self.own_layout_only {
                    self.notice(&format!(
                        "Cache in use (its .lock is held): deleting only cachelock's environments \
                         not in use at: {}",
                        root.display()
                    ));
                } else {
                    self.notice(&format!(
                        "{} cache at: {}",
                        if scaffold { "Clearing" } else { "Pruning" },
                        root.display()
                    ));
                }
                let env_locks =
                    self.design.env_lock != EnvLock::None && !faults::is(Fault::DeleteUnlockable);
                let report = if step == Step::MoveToTrash {
                    let (trash, report) = cache::move_entries_to_trash(&root, scaffold, env_locks)?;
                    self.trash = trash;
                    crate::faults::pause("moved-to-trash");
                    report
                } else {
                    cache::delete_entries(&root, scaffold, env_locks)?
                };
                for name in &report.skipped {
                    self.notice(&format!("Kept environment `{name}`: it is in use"));
                }
                if self.own_layout_only {
                    let foreign = foreign_entries(&root);
                    if !foreign.is_empty() {
                        self.notice(&format!(
                            "Left alone while the cache is in use (only its .lock protects them): {}; \
                             a clean that finds the cache free deletes them",
                            foreign.join(", ")
                        ));
                    }
                } else if !scaffold {
                    let foreign = foreign_entries(&root);
                    if !foreign.is_empty() {
                        self.config.observer.left_alone(&foreign);
                    }
                }
                if step == Step::DeleteEntries {
                    self.notice(&format!(
                        "Removed {} files ({} bytes)",
                        report.removed_files, report.removed_bytes
                    ));
                }
                let skipped = report.skipped.clone();
                self.delete_report = Some(report);
                if skipped.is_empty() {
                    Ok(StepOutcome::Done)
                } else {
                    Ok(StepOutcome::Skipped(skipped))
                }
            }
            Step::UnlinkLockFile => {
                if self.clean_held_lock {
                    let root = self.root()?;
                    match DirFd::open_root(&root) {
                        Ok(dir) => {
                            dir.remove_file(LOCK_FILE)
                                .ctx("remove the lock file", &root.join(LOCK_FILE))?;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("open the cache directory", root, e)),
                    }
                }
                Ok(StepOutcome::Done)
            }
            Step::RemoveRoot => {
                let root = self.root()?;
                match remove_root(&root) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                        if self.design.remove_root_strict {
                            return Ok(StepOutcome::Failed(format!(
                                "failed to remove the cache directory `{}`: it is not empty \
                                 (another process wrote to it while it was being cleaned); run the clean again",
                                root.display()
                            )));
                        }
                    }
                    Err(e) => return Err(Error::io("remove the cache directory", root, e)),
                }
                Ok(StepOutcome::Done)
            }
            Step::WithdrawAnnouncement => {
                if let Some(mut announcement) = self.held.announcement.take() {
                    announcement.withdraw()?;
                }
                Ok(StepOutcome::Done)
            }
        }
    }

    fn lock_root(
        &mut self,
        lock: &mut LockFile,
        mode: Mode,
        step: Step,
        wait: Wait,
    ) -> Result<StepOutcome, Error> {
        let kind = self.config.kind;
        if faults::is(Fault::SkipLockStep) {
            return Ok(StepOutcome::Done);
        }
        if lock.try_lock(mode)? == TryLock::Acquired {
            return Ok(StepOutcome::Done);
        }
        if step == Step::LockExclusive {
            match self.config.policy.on_busy(kind) {
                OnBusy::ProceedUnlocked => {
                    tracing::debug!("cache is in use, going on without the lock ({kind})");
                    return Ok(StepOutcome::ProceededUnlocked);
                }
                OnBusy::OwnLayout => {
                    self.own_layout_only = true;
                    tracing::debug!(
                        "cache is in use: cleaning only cachelock's environments that are not in use"
                    );
                    return Ok(StepOutcome::ProceededUnlocked);
                }
                OnBusy::GiveUp => {
                    self.notice("Cache is in use; nothing to do");
                    return Ok(StepOutcome::GaveUp);
                }
                OnBusy::Wait => {}
            }
        }
        let why = |pids: &[u32]| {
            if kind.is_clean() {
                format!("cache is in use by {}; waiting…", process_list(pids))
            } else {
                format!("cache is locked by {}; waiting…", pid_list(pids))
            }
        };
        let acquired = self.acquire(lock, mode, wait, self.lock_timeout(), &why)?;
        Ok(if acquired {
            StepOutcome::Done
        } else {
            StepOutcome::WouldBlock
        })
    }

    /// Waits for the cleans announced when this step was first tried, and only for
    /// those: a clean announced later started after this run and must not hold it up
    /// (the model's `await-announced-cleans` takes the same snapshot).
    fn await_announced_cleans(&mut self, wait: Wait) -> Result<StepOutcome, Error> {
        let dir = self.root()?.join(CLEANS_DIR);
        if self.awaited.is_none() {
            let mut names: Vec<OsString> = match fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .filter(|n| !n.to_string_lossy().starts_with(".tmp")) // not announced yet
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io("list the clean announcements in", dir, e)),
            };
            names.sort();
            self.awaited = Some(names.into_iter().map(|n| dir.join(n)).collect());
        }
        // One timeout for the whole step, however many cleans are announced.
        let start = std::time::Instant::now();
        while let Some(path) = self.awaited.as_ref().and_then(|a| a.first().cloned()) {
            if let Some(mut lock) = LockFile::open_existing(&path)? {
                let why = |pids: &[u32]| {
                    format!(
                        "cache is about to be cleaned by {}; waiting…",
                        pid_list(pids)
                    )
                };
                let left = self
                    .lock_timeout()
                    .map(|t| t.saturating_sub(start.elapsed()));
                if !self.acquire(&mut lock, Mode::Shared, wait, left, &why)? {
                    return Ok(StepOutcome::WouldBlock);
                }
                // Dropping `lock` closes it: that clean has finished, nothing to hold.
            }
            if let Some(a) = self.awaited.as_mut() {
                a.remove(0);
            }
        }
        Ok(StepOutcome::Done)
    }

    fn persist_env(&mut self) -> Result<StepOutcome, Error> {
        if self.reused_env {
            // Nothing to move, but the environment this run chose to reuse must still be
            // there: one deleted meanwhile fails here, not later at the spawn.
            return Ok(match &self.env_dir {
                Some(dir) if dir.join(ENV_MARKER).is_file() => StepOutcome::Done,
                Some(dir) => StepOutcome::Failed(format!(
                    "the environment `{}` was deleted (by a concurrent clean?) while this run was \
                     about to use it; run the command again",
                    dir.display()
                )),
                None => StepOutcome::Done,
            });
        }
        let (Some(build), Some(env_dir)) = (self.held.build.take(), self.env_dir.clone()) else {
            return Err(Error::Config(
                "persist-env before build-env (policy bug)".into(),
            ));
        };
        let vanished = |build: &Path| {
            StepOutcome::Failed(format!(
                "the environment being built at `{}` was deleted (by a concurrent clean?); run the command again",
                build.display()
            ))
        };
        let mut build = build;
        if build.parent().stat_entry(build.name()).is_err() {
            return Ok(vanished(build.path()));
        }
        let envs = open_cache_dir(&self.root()?, ENVIRONMENTS_DIR)?;
        match build
            .parent()
            .rename(build.name(), &envs, &self.config.env_name)
        {
            Ok(()) => {
                build.disable_cleanup(true);
                Ok(StepOutcome::Done)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
                ) =>
            {
                // Another run persisted the same environment first: use theirs.
                Ok(StepOutcome::Done)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vanished(build.path())),
            Err(e) => Err(Error::io("move the environment into place at", env_dir, e)),
        }
    }

    fn spawn_child(&mut self) -> Result<StepOutcome, Error> {
        let env_dir = self
            .env_dir
            .clone()
            .ok_or_else(|| Error::Config("spawn-child before build-env (policy bug)".into()))?;
        let program = self
            .config
            .command
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !env_dir.join(ENV_MARKER).is_file() {
            let why = if self.config.kind == Kind::RunNoCache {
                "its temporary cache was removed before the child started"
            } else {
                "it was deleted (by a concurrent clean?)"
            };
            return Ok(StepOutcome::Failed(format!(
                "failed to spawn `{program}`: the environment `{}` is missing: {why}; run the command again",
                env_dir.display()
            )));
        }
        // The child inherits the lock that keeps its environment alive: the environment
        // lock, or for `--no-cache` the temporary cache's, so that neither a clean nor a
        // prune of leaked temporary caches takes it from an orphaned child. Under a design
        // whose child inherits `.lock`, the shared lock on it goes along: old uv's cleans
        // respect nothing else, and they must wait for an orphaned child or a daemon too.
        let mut inherit: Vec<(&str, &std::fs::File)> = Vec::new();
        if self.design.child_inherits_env_lock
            && let Some(lock) = self.held.env_lock.as_ref().or(self.held.temp_lock.as_ref())
        {
            inherit.push(("CACHELOCK_ENV_LOCK_FD", lock.file()));
        }
        if self.design.child_inherits_root_lock
            && let Some(lock) = self.held.root_lock.as_ref()
            && lock.held().is_some()
        {
            inherit.push(("CACHELOCK_ROOT_LOCK_FD", lock.file()));
        }
        let child_env = match self.overlay(&env_dir)? {
            Some(overlay) => {
                let path = overlay.path().to_path_buf();
                self.held.overlay = Some(overlay);
                path
            }
            None => env_dir,
        };
        let child = child::spawn(
            &self.config.command,
            &[("CACHELOCK_ENV", child_env.as_os_str())],
            &inherit,
            self.config.forward_signals,
        )?;
        tracing::debug!(pid = child.id(), "spawned the child");
        self.held.child = Some(child);
        Ok(StepOutcome::Done)
    }

    /// uv's `run --with` (a design with run overlays, `Design::run_overlay`): the child
    /// runs in an overlay environment of this run's own on top of the cached one,
    /// removed when the run exits. Its marker is a link to the cached environment's, so
    /// the child sees the cached environment go, and the overlay go.
    fn overlay(&self, env_dir: &Path) -> Result<Option<OwnedTree>, Error> {
        if !self.design.run_overlay || self.config.kind.env() != Some(EnvName::With) {
            return Ok(None);
        }
        let builds = open_cache_dir(&self.root()?, cache::BUILDS_DIR)?;
        let builds_path = builds.path().to_path_buf();
        let prefix = format!("{}{}", self.config.env_name, cache::OVERLAY_INFIX);
        let overlay = OwnedTree::create_in(builds, &prefix)
            .ctx("create the run's overlay environment in", &builds_path)?;
        let marker = overlay.path().join(ENV_MARKER);
        overlay
            .dir()
            .symlink(&env_dir.join(ENV_MARKER), ENV_MARKER)
            .ctx("link the overlay to its environment at", &marker)?;
        Ok(Some(overlay))
    }
}

/// Opens the cache's directory `name` (creating it if missing) through the root's
/// descriptor; a link in its place is refused, never followed.
fn open_cache_dir(root: &Path, name: &str) -> Result<DirFd, Error> {
    fs::create_dir_all(root).ctx("create the cache directory", root)?;
    let dir = DirFd::open_root(root).ctx("open the cache directory", root)?;
    dir.open_or_create_dir(name)
        .ctx("create the directory", &root.join(name))
}

/// Removes the (empty) cache root: `unlinkat` relative to its parent's descriptor (the
/// path up to the root is the user's). `Ok(false)` if it is gone.
fn remove_root(root: &Path) -> std::io::Result<bool> {
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the root directory is never removed",
        ));
    };
    DirFd::open_root(parent)?.remove_empty_dir(name)
}

/// The names at the top of a cache that a prune does not know (a uv cache's
/// `archive-v0`, `wheels-v5`, …), sorted.
fn foreign_entries(root: &Path) -> Vec<String> {
    const KNOWN: [&str; 7] = [
        LOCK_FILE,
        CLEANS_DIR,
        cache::TRASH_DIR,
        ENVIRONMENTS_DIR,
        cache::BUILDS_DIR,
        cache::TAG_FILE,
        ".gitignore",
    ];
    let mut names: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !KNOWN.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// An environment's name becomes a directory name (`environments/<name>`) and a lock file
/// name (`environments/<name>.lock`) in a cache others may write to, so only plain names
/// are accepted: ASCII letters, digits and `-_.@+=` (`black@24.1`, `torch+cu121`,
/// `tool-ruff`), not starting with a dot (so neither `.` nor `..`), never a path
/// separator, NUL, space or control character, not ending with `.lock`, not holding the
/// infix of a build or overlay directory (a clean tells whose a build is by it), and at
/// most [`MAX_ENV_NAME_LEN`] bytes.
pub fn check_env_name(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadEnvName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_ENV_NAME_LEN {
        return bad("it is too long");
    }
    if name.starts_with('.') {
        return bad("it starts with a dot");
    }
    if name.ends_with(".lock") {
        return bad("it ends with .lock");
    }
    if name.contains(cache::BUILD_INFIX) || name.contains(cache::OVERLAY_INFIX) {
        return bad(
            "it contains `.build-` or `.overlay-`, which name the cache's build directories",
        );
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+' | '='))
    {
        return bad("it contains a character other than letters, digits and `-_.@+=`");
    }
    Ok(())
}

/// The longest environment name, in bytes: with `.build-` and a random suffix, or
/// `.lock`, it must stay a valid file name (255 bytes).
pub const MAX_ENV_NAME_LEN: usize = 200;
