//! The front API: a [`Cache`], [`EnvLease`]s on its environments, cleans and prunes that
//! return a [`CleanReport`], and a [`TempCache`], in the protocol's words.
//!
//! Everything here runs the policy's program ([`Policy::program`]) in a
//! [`Session`], one step at a time: the front API decides only where to stop
//! (before `persist-env`, so that the caller can fill the environment; before
//! `spawn-child`, because the caller spawns its own child) and turns what the steps did
//! into values. There is no second implementation of the protocol.
//!
//! The policy is [`Policy::DEFAULT`] (`cachelock-fenced`) unless chosen otherwise: the
//! child holds the environment's lock (`environments/<name>.lock`, shared) for as long as
//! it, or anything it started, lives, and the cache's lock (`<cache>/.lock`, shared) too,
//! because uv's own cleans respect nothing else. A clean deletes only environments whose
//! lock it can take exclusive without waiting, the others are reported as in use; it never
//! waits for the cache's lock: when that is busy it deletes only cachelock's unlocked
//! environments. (Under [`Policy::Cachelock`] runs hold the cache's lock only while they
//! prepare their environment: safe among cachelock processes, not beside an old uv.)
//!
//! # The inherited descriptor
//!
//! [`LiveEnv::configure`] prepares the caller's own [`Command`] so that the child
//! inherits the environment's lock:
//! - `CACHELOCK_ENV` ([`ENV_DIR_VAR`]) is the environment's directory;
//! - `CACHELOCK_ENV_LOCK_FD` ([`ENV_LOCK_FD_VAR`]) is the number of a descriptor, open in
//!   the child without `FD_CLOEXEC`, on the environment's lock file (for a temporary
//!   cache, on the temporary cache's `.lock`). It shares its lock with the parent's
//!   descriptor (one open file description), so the environment is kept from deletion
//!   for as long as any process holds a copy open: the child, and whatever it starts
//!   without closing the descriptor (a daemon that must keep its environment keeps it).
//! - The child must never `flock(fd, LOCK_UN)` it: that would release the lock for every
//!   copy, the parent's included. Closing it is how a process lets go.
//! - Until the `Command` is dropped, it holds a duplicate of the descriptor (close-on-exec
//!   in this process, so other children do not get it), which keeps the lock too.
//!
//! - Under a policy whose child also inherits the cache's lock (`cachelock-fenced`, the
//!   default: old uv's cleans respect nothing else), `CACHELOCK_ROOT_LOCK_FD`
//!   ([`ROOT_LOCK_FD_VAR`]) is the number of a descriptor on `<cache>/.lock`, locked
//!   shared, with the same rules: never unlock it, close it to let go.
//!
//! Under a policy whose child does not inherit the lock (uv's), `configure` sets only
//! `CACHELOCK_ENV` and removes `CACHELOCK_ENV_LOCK_FD` (and `CACHELOCK_ROOT_LOCK_FD`) from
//! the child's environment.
//!
//! # Example
//!
//! Lease an environment, fill it if it is new, and run a child in it:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::process::Command;
//! use cachelock::Cache;
//!
//! let dir = tempfile::tempdir()?;
//! let cache = Cache::open(dir.path());
//!
//! let lease = cache.lease("black@24.1")?;
//! assert!(!lease.is_reused());
//! if let Some(build) = lease.build_dir() {
//!     std::fs::write(build.join("black"), "#!/bin/sh\necho formatted\n")?;
//! }
//! let env = lease.commit()?;
//!
//! let mut cmd = Command::new("sh");
//! cmd.args(["-c", r#"test -f "$CACHELOCK_ENV/black" && test -n "$CACHELOCK_ENV_LOCK_FD""#]);
//! env.configure(&mut cmd)?;
//! assert!(cmd.status()?.success());
//! drop(env);
//!
//! // The next lease finds the environment complete and reuses it.
//! let again = cache.lease("black@24.1")?;
//! assert!(again.is_reused() && again.build_dir().is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cachelock_model::{Kind, Mode, Policy, Step};

use crate::cache::{self, CLEANS_DIR, CacheDir, ENV_MARKER, ENVIRONMENTS_DIR, LOCK_FILE};
use crate::error::Error;
use crate::lockfile::LockFile;
use crate::session::{DEFAULT_LOCK_TIMEOUT, Session, SessionConfig, StepOutcome, Wait};

/// The variable that names the environment's directory in the child.
pub const ENV_DIR_VAR: &str = "CACHELOCK_ENV";
/// The variable that holds the number of the inherited lock descriptor in the child.
pub const ENV_LOCK_FD_VAR: &str = "CACHELOCK_ENV_LOCK_FD";
/// The variable that holds the number of the inherited descriptor on `<cache>/.lock` in
/// the child (under a policy whose child inherits it).
pub const ROOT_LOCK_FD_VAR: &str = "CACHELOCK_ROOT_LOCK_FD";

type Callback = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The choices shared by [`Cache`] and [`TempCache`].
#[derive(Clone)]
struct Options {
    policy: Policy,
    lock_timeout: Option<Duration>,
    on_wait: Option<Callback>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: Policy::DEFAULT,
            lock_timeout: Some(DEFAULT_LOCK_TIMEOUT),
            on_wait: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("policy", &self.policy)
            .field("lock_timeout", &self.lock_timeout)
            .field("on_wait", &self.on_wait.as_ref().map(|_| "Fn(&Progress)"))
            .finish()
    }
}

impl Options {
    fn session(&self, cache: CacheDir, kind: Kind, env_name: Option<&str>) -> SessionConfig {
        let mut config = SessionConfig::new(cache, self.policy, kind);
        if let Some(name) = env_name {
            config.env_name = name.to_string();
        }
        config.lock_timeout = self.lock_timeout;
        config
    }

    fn lease(&self, cache: CacheDir, kind: Kind, name: &str) -> Result<EnvLease, CacheError> {
        let mut session = Session::new(self.session(cache, kind, Some(name)))?;
        let on_wait = self.on_wait.clone();
        let mut events = |p: &Progress| notify_wait(&on_wait, p);
        let outcomes = drive(&mut session, Some(Step::PersistEnv), name, &mut events)?;
        let reused = outcomes
            .iter()
            .any(|(step, outcome)| *step == Step::BuildEnv && *outcome == StepOutcome::Reused);
        let view = session.observe();
        let (Some(root), Some(env_dir)) = (view.root, view.env_dir) else {
            return Err(CacheError::Internal(format!(
                "the {} program has no build-env step",
                self.policy
            )));
        };
        Ok(EnvLease {
            session,
            name: name.to_string(),
            root,
            env_dir,
            build_dir: view.build_dir,
            reused,
            temporary: kind == Kind::RunNoCache,
            options: self.clone(),
        })
    }
}

fn notify_wait(on_wait: &Option<Callback>, progress: &Progress) {
    if let (Some(callback), Progress::Waiting { .. }) = (on_wait, progress) {
        callback(progress);
    }
}

/// A cache directory shared with other processes (uv's `Cache`, cargo's `CacheLocker`):
/// lease environments in it, clean it, prune it.
///
/// Opening does nothing on disk; the cache and its scaffold (`CACHEDIR.TAG`,
/// `.gitignore`, `environments/`, `builds/`) are created by the first lease. A `Cache`
/// holds no lock and no descriptor: each operation takes and releases its own.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use cachelock::{Cache, Policy, Progress};
///
/// // The caller decides what a wait shows: here, a message to its own progress thread.
/// let (waits, _progress_thread) = mpsc::channel();
/// let cache = Cache::open("/var/cache/my-tool")
///     .policy(Policy::CachelockFenced) // the default
///     .lock_timeout(Some(Duration::from_secs(30)))
///     .on_wait(move |p| {
///         if let Progress::Waiting { lock, .. } = p {
///             let _ = waits.send(format!("waiting for {}", lock.display()));
///         }
///     });
/// assert_eq!(cache.root(), std::path::Path::new("/var/cache/my-tool"));
/// ```
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    options: Options,
}

impl Cache {
    /// A cache at `root`, under [`Policy::DEFAULT`] with uv's default lock timeout
    /// (300 s). Nothing on disk changes.
    pub fn open(root: impl Into<PathBuf>) -> Cache {
        Cache {
            root: root.into(),
            options: Options::default(),
        }
    }

    /// A temporary cache instead: see [`TempCache`].
    pub fn temporary() -> TempCache {
        TempCache::new()
    }

    /// The protocol to follow: [`Policy::DEFAULT`] ([`Policy::CachelockFenced`]) by default; one of uv's releases
    /// (`Policy::Uv013`, …) to behave exactly as that release does, bugs included, beside
    /// its processes on the same cache.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Cache {
        self.options.policy = policy;
        self
    }

    /// The longest any one lock wait may last before it fails with
    /// [`CacheError::LockTimeout`]; `None` waits forever. Under uv 0.8's policies lock waits
    /// are unbounded whatever this says (those releases had no timeout).
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Cache {
        self.options.lock_timeout = timeout;
        self
    }

    /// Called with [`Progress::Waiting`] whenever an operation on this cache finds a lock
    /// busy and starts waiting for it (the library never prints).
    #[must_use]
    pub fn on_wait(mut self, callback: impl Fn(&Progress) + Send + Sync + 'static) -> Cache {
        self.options.on_wait = Some(Arc::new(callback));
        self
    }

    /// The cache's directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The policy in use.
    pub fn current_policy(&self) -> Policy {
        self.options.policy
    }

    /// Leases the environment `name` (`environments/<name>`): runs the policy's program up
    /// to `persist-env`, so that the environment is either reused
    /// ([`EnvLease::is_reused`]) or being built in [`EnvLease::build_dir`] for the caller
    /// to fill. Names are plain file names: ASCII letters, digits and `-_.@+=`, not
    /// starting with a dot (see [`crate::session::check_env_name`]).
    ///
    /// Under [`Policy::Cachelock`] the lease holds the cache's lock shared and the
    /// environment's lock shared until [`EnvLease::commit`]: a clean waits for it, and
    /// a lease waits for a clean that is running or announced. Under the default
    /// [`Policy::CachelockFenced`] the cache's lock stays held (and is handed to the
    /// child) until the [`LiveEnv`] is dropped.
    pub fn lease(&self, name: &str) -> Result<EnvLease, CacheError> {
        self.options
            .lease(CacheDir::Persistent(self.root.clone()), Kind::ToolRun, name)
    }

    /// Deletes the cache's contents, like `uv cache clean`, except the environments in use,
    /// which are kept and reported. Waits (up to the lock timeout) while a lease prepares
    /// its environment. `progress` sees every step, every wait and every environment kept.
    ///
    /// A directory that does not look like a cache (no `CACHEDIR.TAG`, and files a cache
    /// does not have) is refused with [`CacheError::NotACache`]; a missing one is
    /// [`CleanOutcome::NoCache`].
    ///
    /// Beside a running child, the child keeps its environment:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{BufRead, BufReader, Write};
    /// use std::process::{Command, Stdio};
    /// use cachelock::Cache;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cache = Cache::open(dir.path());
    /// let lease = cache.lease("black@24.1")?;
    /// if let Some(build) = lease.build_dir() {
    ///     std::fs::write(build.join("black"), "#!/bin/sh\n")?;
    /// }
    /// let env = lease.commit()?;
    ///
    /// // The child says when it runs, then waits for a line before checking its
    /// // environment again.
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", r#"echo ready; read _; test -f "$CACHELOCK_ENV/black""#])
    ///     .stdin(Stdio::piped())
    ///     .stdout(Stdio::piped());
    /// env.configure(&mut cmd)?;
    /// let mut child = cmd.spawn()?;
    /// drop(cmd);
    /// drop(env); // from now on only the child's inherited descriptor keeps the environment
    /// let mut line = String::new();
    /// BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    /// assert_eq!(line, "ready\n");
    ///
    /// let report = cache.clean(|_| {})?;
    /// assert_eq!(report.in_use.len(), 1);
    /// assert_eq!(report.in_use[0].name, "black@24.1");
    /// assert!(report.in_use[0].bytes > 0);
    ///
    /// writeln!(child.stdin.take().unwrap(), "go")?;
    /// assert!(child.wait()?.success()); // its environment was still there
    ///
    /// // Now nobody uses it: the next clean removes it.
    /// let report = cache.clean(|_| {})?;
    /// assert!(report.in_use.is_empty() && report.removed_files > 0);
    /// assert!(!dir.path().join("environments").join("black@24.1").exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn clean(&self, mut progress: impl FnMut(&Progress)) -> Result<CleanReport, CacheError> {
        self.delete(Kind::Clean, &mut progress)
    }

    /// Deletes the environments and builds nobody uses, keeps the scaffold, like
    /// `uv cache prune`; otherwise as [`Cache::clean`]. Under a policy whose design says
    /// so (`Design::prune_temp`: the default's removes those it can lock without waiting)
    /// the prune's last step, `remove-leaked-temp`, also removes the temporary caches that
    /// killed processes leaked in the temporary directory; they are told to the observer,
    /// not counted in the report. [`TempCache::remove_leaked`] does only that.
    pub fn prune(&self, mut progress: impl FnMut(&Progress)) -> Result<CleanReport, CacheError> {
        self.delete(Kind::Prune, &mut progress)
    }

    fn delete(
        &self,
        kind: Kind,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<CleanReport, CacheError> {
        let config = self
            .options
            .session(CacheDir::Persistent(self.root.clone()), kind, None);
        let mut session = Session::new(config)?;
        let on_wait = self.options.on_wait.clone();
        let mut events = |p: &Progress| {
            progress(p);
            notify_wait(&on_wait, p);
        };
        // Up to the release of the cache's lock: the environments kept are measured
        // while no lease can be preparing one.
        let mut outcomes = drive(&mut session, Some(Step::ReleaseRootLock), "", &mut events)?;
        let mut report = CleanReport {
            outcome: CleanOutcome::Cleaned,
            removed_files: 0,
            removed_bytes: 0,
            in_use: Vec::new(),
        };
        if let Some(deleted) = session.delete_report().cloned() {
            report.removed_files = deleted.removed_files;
            report.removed_bytes = deleted.removed_bytes;
            let envs = session
                .observe()
                .root
                .unwrap_or_else(|| self.root.clone())
                .join(ENVIRONMENTS_DIR);
            for name in &deleted.skipped {
                let kept = KeptEnv {
                    name: name.clone(),
                    bytes: tree_size(&envs.join(name)),
                };
                events(&Progress::KeptInUse(kept.clone()));
                report.in_use.push(kept);
            }
        }
        outcomes.extend(drive(&mut session, None, "", &mut events)?);
        // Under a design with a trash the files are removed after the release, by
        // `delete-trash`, which adds them to the report.
        if let Some(deleted) = session.delete_report() {
            report.removed_files = deleted.removed_files;
            report.removed_bytes = deleted.removed_bytes;
        }
        for (_, outcome) in &outcomes {
            match outcome {
                StepOutcome::NoCache => report.outcome = CleanOutcome::NoCache,
                StepOutcome::GaveUp => report.outcome = CleanOutcome::GaveUp,
                _ => {}
            }
        }
        Ok(report)
    }
}

/// A private temporary cache per lease, like `uv run --no-cache`: created in `$TMPDIR`
/// by the lease (`create-temp-cache`), locked from birth (its `.lock`, held shared), and
/// removed when the [`LiveEnv`] and every process that inherited its lock are gone.
///
/// A `TempCache` itself holds nothing (it is the choice of policy, timeout and callback);
/// each [`TempCache::lease`] creates its own temporary cache, owned by the lease and then
/// by its [`LiveEnv`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::process::Command;
/// use cachelock::Cache;
///
/// let lease = Cache::temporary().lease("scratch")?;
/// std::fs::write(lease.build_dir().unwrap().join("tool"), "#!/bin/sh\n")?;
/// let env = lease.commit()?;
/// let root = env.cache_root().to_path_buf();
///
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", r#"test -f "$CACHELOCK_ENV/tool""#]);
/// env.configure(&mut cmd)?;
/// assert!(cmd.status()?.success());
/// assert!(root.join("CACHEDIR.TAG").exists());
///
/// drop(cmd); // it holds a copy of the lock until dropped
/// drop(env); // waits until no process holds the lock, then removes the temporary cache
/// assert!(!root.exists());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TempCache {
    options: Options,
}

impl TempCache {
    /// Temporary caches under [`Policy::DEFAULT`] with uv's default lock timeout.
    pub fn new() -> TempCache {
        TempCache::default()
    }

    /// The protocol to follow (see [`Cache::policy`]); under `Policy::Uv0819` the
    /// temporary cache is removed before the child could use it, as uv 0.8.19 did.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> TempCache {
        self.options.policy = policy;
        self
    }

    /// See [`Cache::lock_timeout`].
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> TempCache {
        self.options.lock_timeout = timeout;
        self
    }

    /// See [`Cache::on_wait`].
    #[must_use]
    pub fn on_wait(mut self, callback: impl Fn(&Progress) + Send + Sync + 'static) -> TempCache {
        self.options.on_wait = Some(Arc::new(callback));
        self
    }

    /// Creates a temporary cache and leases the environment `name` in it, always new
    /// (see [`Cache::lease`]).
    pub fn lease(&self, name: &str) -> Result<EnvLease, CacheError> {
        self.options
            .lease(CacheDir::Temporary, Kind::RunNoCache, name)
    }

    /// Removes the temporary caches in `$TMPDIR` whose process was killed before it could
    /// remove them: only the library's own (tagged, owned by this user) whose lock nobody
    /// holds, each deleted under that lock held exclusive. Returns their paths.
    pub fn remove_leaked() -> Result<Vec<PathBuf>, CacheError> {
        Ok(cache::remove_leaked_temp_caches(&std::env::temp_dir())?
            .into_iter()
            .map(|(path, _)| path)
            .collect())
    }
}

/// An environment leased from a cache, stopped before `persist-env`: either reused
/// (complete, nothing to do) or new, with a build directory for the caller to fill.
///
/// **Drop**: an uncommitted build is removed; the environment's lock is closed (never
/// unlocked), the cache's lock released; for a temporary cache, the cache is removed.
#[must_use = "dropping a lease removes the build; call commit()"]
#[derive(Debug)]
pub struct EnvLease {
    session: Session,
    name: String,
    root: PathBuf,
    env_dir: PathBuf,
    build_dir: Option<PathBuf>,
    reused: bool,
    temporary: bool,
    options: Options,
}

impl EnvLease {
    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if the environment was complete already and is reused; false if it is new
    /// and [`EnvLease::build_dir`] is to be filled.
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// The directory to fill, for a new environment (`builds/<name>.build-XXXXXX`); `None`
    /// when it is reused. It holds one file of the library's, `cachelock-env`, which
    /// marks a complete environment; [`EnvLease::commit`] writes it again if filling
    /// the directory removed it.
    pub fn build_dir(&self) -> Option<&Path> {
        self.build_dir.as_deref()
    }

    /// Where the environment is once committed (`environments/<name>`).
    pub fn env_dir(&self) -> &Path {
        &self.env_dir
    }

    /// Runs the policy's steps from `persist-env` up to `spawn-child`: the build is moved
    /// into place in one rename (if another process persisted the same environment first,
    /// theirs is used), and under [`Policy::Cachelock`] the cache's lock is released;
    /// only the environment's lock is held from then on (under the default policy both
    /// stay held, and both go to the child).
    ///
    /// Fails with [`CacheError::EnvRemoved`] if the environment (or the build) is gone,
    /// which the protocol prevents under [`Policy::Cachelock`] but not under every
    /// policy.
    pub fn commit(mut self) -> Result<LiveEnv, CacheError> {
        if let Some(build) = &self.build_dir {
            let marker = build.join(ENV_MARKER);
            if build.is_dir() && !marker.is_file() {
                fs::write(&marker, format!("{}\n", self.name))
                    .map_err(|e| CacheError::io("write", &marker, e))?;
            }
        }
        let on_wait = self.options.on_wait.clone();
        let mut events = |p: &Progress| notify_wait(&on_wait, p);
        drive(
            &mut self.session,
            Some(Step::SpawnChild),
            &self.name,
            &mut events,
        )?;
        // What `spawn-child` checks before it spawns (the caller spawns instead).
        if !self.env_dir.join(ENV_MARKER).is_file() {
            return Err(CacheError::EnvRemoved {
                name: self.name,
                step: Step::SpawnChild,
            });
        }
        let lock = if self.session.design().child_inherits_env_lock {
            let held = self.session.held();
            match held.env_lock.as_ref().or(held.temp_lock.as_ref()) {
                Some(lock) => Some(lock.file().try_clone().map_err(|e| {
                    CacheError::io("duplicate the lock descriptor of", lock.path(), e)
                })?),
                None => None,
            }
        } else {
            None
        };
        let root_lock = match self.session.held().root_lock.as_ref() {
            Some(held)
                if self.session.design().child_inherits_root_lock && held.held().is_some() =>
            {
                Some(held.file().try_clone().map_err(|e| {
                    CacheError::io("duplicate the lock descriptor of", held.path(), e)
                })?)
            }
            _ => None,
        };
        Ok(LiveEnv {
            session: self.session,
            name: self.name,
            root: self.root,
            dir: self.env_dir,
            lock,
            root_lock,
            temporary: self.temporary,
        })
    }
}

/// A committed environment, kept alive by its lock: hand it to children with
/// [`LiveEnv::configure`].
///
/// **Drop**: the environment's lock is closed, never unlocked, so a child that inherited
/// it keeps the environment alive after the `LiveEnv` is gone. (The caller's child
/// replaces `spawn-child` and `wait-for-child`; the program's last steps are not run, the
/// session's guards end what it holds in their declared order, so a policy ending with
/// `unlock-env-lock` closes the lock here instead.) Under uv's policies,
/// which hold the cache's lock until the child exits, that lock is released now: drop
/// the `LiveEnv` after the child has exited. For a temporary cache, dropping **blocks**
/// until no process holds the temporary cache's lock any more (the children that
/// inherited it, and any `Command` still holding a copy), then removes the temporary
/// cache, then releases its lock.
#[derive(Debug)]
pub struct LiveEnv {
    session: Session,
    name: String,
    root: PathBuf,
    dir: PathBuf,
    /// A close-on-exec copy of the descriptor the child inherits.
    lock: Option<fs::File>,
    /// A close-on-exec copy of the descriptor on `.lock` the child inherits too.
    root_lock: Option<fs::File>,
    temporary: bool,
}

impl LiveEnv {
    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The environment's directory (`CACHELOCK_ENV` in the child).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache's root (the temporary cache's, for a [`TempCache`] lease).
    pub fn cache_root(&self) -> &Path {
        &self.root
    }

    /// True if children configured with [`LiveEnv::configure`] inherit the lock: under the
    /// policies whose design says so (`Design::child_inherits_env_lock`: `cachelock` and
    /// its variants but `cachelock-cloexec`; not uv's).
    pub fn child_inherits_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// Prepares `command` to run in this environment: sets `CACHELOCK_ENV`, and makes the
    /// child inherit the lock as the module documentation describes
    /// (`CACHELOCK_ENV_LOCK_FD`). The program, arguments, working directory, other
    /// variables and stdio stay the caller's. Call it once per `Command`.
    pub fn configure<'c>(&self, command: &'c mut Command) -> Result<&'c mut Command, CacheError> {
        command.env(ENV_DIR_VAR, &self.dir);
        match &self.root_lock {
            Some(lock) => inherit(command, ROOT_LOCK_FD_VAR, lock, &self.dir)?,
            None => {
                command.env_remove(ROOT_LOCK_FD_VAR);
            }
        }
        match &self.lock {
            Some(lock) => inherit(command, ENV_LOCK_FD_VAR, lock, &self.dir)?,
            None => {
                command.env_remove(ENV_LOCK_FD_VAR);
            }
        }
        Ok(command)
    }
}

/// Makes `command`'s child inherit a duplicate of `lock`, its number in `var`.
fn inherit(
    command: &mut Command,
    var: &str,
    lock: &fs::File,
    dir: &Path,
) -> Result<(), CacheError> {
    // A duplicate owned by the command: the descriptor number stays valid until the
    // command is dropped, whatever happens to the `LiveEnv`. It is close-on-exec here;
    // the hook clears the flag in the child only.
    let fd: OwnedFd = lock
        .try_clone()
        .map_err(|e| CacheError::io("duplicate the lock descriptor for", dir, e))?
        .into();
    command.env(var, fd.as_raw_fd().to_string());
    // SAFETY: the hook runs in the forked child before exec and calls only fcntl(2),
    // which is async-signal-safe; `fd` is owned by the hook, so the number it uses is
    // open for as long as the command can spawn.
    unsafe {
        command.pre_exec(move || {
            let raw = fd.as_raw_fd();
            let flags = libc::fcntl(raw, libc::F_GETFD);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

impl Drop for LiveEnv {
    fn drop(&mut self) {
        self.lock = None;
        self.root_lock = None;
        if !self.temporary {
            // The session's guards close the environment's lock (see `guards`).
            return;
        }
        let held = self.session.held_mut();
        let (Some(temp), Some(own)) = (held.temp_cache.take(), held.temp_lock.take()) else {
            return;
        };
        // The children hold our own descriptor's open file description: a fresh
        // descriptor gets the lock exclusive only once every copy is closed.
        let fresh = LockFile::open_existing(&temp.path().join(LOCK_FILE))
            .ok()
            .flatten();
        drop(own);
        if let Some(mut fresh) = fresh {
            let _ = fresh.lock(Mode::Exclusive, None, &mut |_| {}, &mut |_| {});
            // Removed only now that nobody uses it (unless the policy keeps it, as
            // `cachelock-keep-temp` does); its lock is released last.
            drop(temp);
            drop(fresh);
        }
    }
}

/// What an operation is doing, for progress callbacks ([`Cache::clean`],
/// [`Cache::on_wait`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A protocol step is about to run.
    Step(Step),
    /// The step found a lock busy and now waits for it, up to the lock timeout: the
    /// cache's lock (`.lock`), an environment's lock, or an announced clean (`.cleans`).
    Waiting {
        /// The step that waits.
        step: Step,
        /// The lock file (or for `await-announced-cleans`, the announcements' directory).
        lock: PathBuf,
    },
    /// A clean kept this environment: it is in use.
    KeptInUse(KeptEnv),
}

/// An environment a clean kept because it is in use.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptEnv {
    /// The environment's name.
    pub name: String,
    /// Its size (files and links, not following links), measured after the deletion.
    pub bytes: u64,
}

/// How a clean or prune ended.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanOutcome {
    /// It deleted what nobody uses.
    Cleaned,
    /// There was no cache: nothing to do.
    NoCache,
    /// The cache was in use and the policy gives up rather than wait (`uv-autoprune`).
    GaveUp,
}

/// What a clean or prune did.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanReport {
    /// How it ended.
    pub outcome: CleanOutcome,
    /// Files and links removed.
    pub removed_files: u64,
    /// Their total size in bytes.
    pub removed_bytes: u64,
    /// The environments kept because they are in use, by name.
    pub in_use: Vec<KeptEnv>,
}

/// What went wrong, in the library's words: what happened, to which path.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file-system operation failed.
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done ("create the lock file", …).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A lock wait lasted longer than the lock timeout.
    #[error(
        "timed out after {:.1}s waiting for the {} lock on `{}`",
        waited.as_secs_f64(),
        mode.name(),
        lock.display()
    )]
    LockTimeout {
        /// The lock file.
        lock: PathBuf,
        /// The mode that was requested.
        mode: Mode,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// A clean or prune was refused: the directory does not look like a cache.
    #[error("`{}` is not a cache directory: {reason}", path.display())]
    NotACache {
        /// The directory.
        path: PathBuf,
        /// Why it is not taken for a cache.
        reason: &'static str,
    },
    /// The environment name cannot be a directory name in a shared cache.
    #[error("`{name}` cannot name an environment: {reason}")]
    InvalidEnvName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The environment (or its build) was deleted by another process while this lease
    /// was about to use it (possible under uv's policies, not under `cachelock`).
    #[error("the environment `{name}` was deleted by another process before `{}`", step.name())]
    EnvRemoved {
        /// The environment.
        name: String,
        /// The step that found it gone.
        step: Step,
    },
    /// The cache directory was removed by another process while a lease was opening its
    /// lock (uv up to 0.12 removes the root when it cleans).
    #[error("the cache directory `{}` was removed by another process", path.display())]
    CacheRemoved {
        /// The cache directory.
        path: PathBuf,
    },
    /// A clean could not remove the cache directory: another process wrote to it
    /// meanwhile (uv 0.8.19's strict `remove-root`).
    #[error("the cache directory `{}` is not empty after the clean: another process wrote to it", path.display())]
    CacheNotEmpty {
        /// The cache directory.
        path: PathBuf,
    },
    /// A protocol step failed otherwise.
    #[error("`{}` failed: {message}", step.name())]
    StepFailed {
        /// The step.
        step: Step,
        /// What happened.
        message: String,
    },
    /// An inconsistency in the library or the policy (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl CacheError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> CacheError {
        CacheError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<Error> for CacheError {
    fn from(e: Error) -> CacheError {
        match e {
            Error::Io {
                action,
                path,
                source,
            } => CacheError::Io {
                action,
                path,
                source,
            },
            Error::LockTimeout {
                path, mode, waited, ..
            } => CacheError::LockTimeout {
                lock: path,
                mode,
                waited,
            },
            Error::NotACache { path, reason } => CacheError::NotACache { path, reason },
            Error::BadEnvName { name, reason } => CacheError::InvalidEnvName { name, reason },
            Error::Spawn { program, source } => CacheError::Io {
                action: "spawn",
                path: program.into(),
                source,
            },
            Error::StepFailed { step, message } => CacheError::StepFailed { step, message },
            other => CacheError::Internal(other.to_string()),
        }
    }
}

/// Runs `session`'s steps until the next one is `stop_before` (or to the end), telling
/// `events` of each step and of each wait. A step whose lock is busy is first tried
/// without waiting, so that the wait can be announced, then run again, waiting.
fn drive(
    session: &mut Session,
    stop_before: Option<Step>,
    env_name: &str,
    events: &mut dyn FnMut(&Progress),
) -> Result<Vec<(Step, StepOutcome)>, CacheError> {
    let mut outcomes = Vec::new();
    while let Some(step) = session.next_step() {
        if Some(step) == stop_before {
            break;
        }
        events(&Progress::Step(step));
        let mut outcome = session.step(Wait::NoBlock)?;
        if outcome == StepOutcome::WouldBlock {
            let root = session.observe().root.unwrap_or_default();
            let lock = match step {
                Step::LockEnv => root.join(ENVIRONMENTS_DIR).join(format!("{env_name}.lock")),
                Step::AwaitAnnouncedCleans => root.join(CLEANS_DIR),
                _ => root.join(LOCK_FILE),
            };
            events(&Progress::Waiting { step, lock });
            outcome = session.step(Wait::Block)?;
        }
        if let StepOutcome::Failed(message) = outcome {
            let root = session.observe().root.unwrap_or_default();
            return Err(match step {
                Step::PersistEnv | Step::SpawnChild => CacheError::EnvRemoved {
                    name: env_name.to_string(),
                    step,
                },
                Step::OpenLockFile => CacheError::CacheRemoved { path: root },
                Step::RemoveRoot => CacheError::CacheNotEmpty { path: root },
                _ => CacheError::StepFailed { step, message },
            });
        }
        outcomes.push((step, outcome));
    }
    Ok(outcomes)
}

/// The size of the files and links under `path`, not following links; what cannot be
/// read counts nothing.
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| tree_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}
