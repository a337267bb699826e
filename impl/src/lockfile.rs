//! A lock file: one open descriptor and at most one flock(2) lock on it.
//!
//! Rules (the same as uv's, so that cachelock and uv exclude each other):
//! - A lock file is created atomically: an existing file is opened read-write; otherwise a
//!   temporary file in the same directory is made mode 0o666 and moved into place without
//!   replacing anything, and the loser of a creation race opens the winner's file.
//! - Opening and locking are separate: a descriptor names an inode, and the lock is on that
//!   inode, not on the path.
//! - A descriptor is never converted between modes (on Linux a failed shared-to-exclusive
//!   conversion drops the shared lock): a lock in another mode takes a fresh [`LockFile`].
//! - Dropping a [`LockFile`] closes its descriptor and never unlocks explicitly: a copy
//!   of the descriptor inherited by a child keeps the lock until the child closes it.
//!   [`LockFile::unlock`] (`LOCK_UN`) releases it for every copy.
//! - A wait blocks in flock(2), so that the kernel hands the lock over the moment it is
//!   released, and the kernel's lock table shows the waiter to `cachelock status`.
//!   Without a deadline it blocks on the calling thread (a signal handler's `EINTR` only
//!   makes it wait again). With one it blocks on a helper thread that owns a duplicate of
//!   the descriptor (`dup(2)`: the same open file description, whose lock is the
//!   `LockFile`'s), while the caller waits for the helper's answer until the deadline.
//! - A wait that times out holds nothing, then or later: the `LockFile` swaps its
//!   descriptor for a fresh one on the same file and leaves the old description to the
//!   helper, whose flock(2) may stay blocked until the holder lets go. When it returns,
//!   granted or not, the helper closes its descriptor, the description's last: a lock it
//!   got is released at that instant, without the caller ever having held it. Until then
//!   the abandoned request is still a waiter of this pid in the kernel's lock table, and a
//!   granted one is held for the few instructions between the grant and the close.
//! - This module neither prints nor looks at other processes: a wait reports to an
//!   [`Observer`] that the command provides (who holds the lock, the time waited).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cachelock_model::Mode;

use crate::error::{Error, IoContext};
use crate::faults::{self, Fault};

/// The fallback on a file system without flock(2) (some network and FUSE file systems),
/// as uv and cargo do: warn once (through `tracing`, which the command prints), then go on
/// as if the lock had been granted. Nothing is held (`held()` stays `None`), so processes
/// on such a cache are not protected from each other: the warning says so.
fn warn_unsupported(path: &Path) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::SeqCst) {
        tracing::warn!(
            "the file system of `{}` does not support file locks; continuing without \
             them, so concurrent cachelock or uv processes on this cache are not protected from \
             each other (a clean may delete what a run uses); a cache directory on a local \
             file system has working locks.",
            path.display()
        );
    }
}

/// What happens during a lock wait, told to whoever shows it. Every method does nothing
/// by default: a library user who wants silence passes [`Silent`].
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// The first attempt found `path` busy and the wait begins; `why` turns the holders'
    /// pids into a one-line sentence.
    fn busy(&self, _path: &Path, _mode: Mode, _why: &dyn Fn(&[u32]) -> String) {}
    /// About once a second while waiting, with the time waited so far.
    fn tick(&self, _waited: Duration) {}
    /// The wait has ended, the lock taken or not.
    fn wait_ended(&self) {}
    /// Who holds `path` (pid and command line), for a timeout error.
    fn holders(&self, _path: &Path) -> Vec<String> {
        Vec::new()
    }
    /// A line for the user (what a clean removed, which cache it acts on, …).
    fn notice(&self, _text: &str) {}
    /// A prune left these entries at the top of the cache alone: they are not part of
    /// cachelock's layout (a uv cache's `archive-v0`, `wheels-v5`, …). By default a
    /// [`Observer::notice`] naming them.
    fn left_alone(&self, names: &[String]) {
        self.notice(&format!(
            "Left alone (not cachelock's layout, which a prune knows): {}",
            names.join(", ")
        ));
    }
}

/// An [`Observer`] that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// How a wait that did not take the lock ended.
enum Waited {
    TimedOut(Duration),
    Failed(Error),
}

/// flock(2) in `mode`, blocking; a signal handler's `EINTR` only makes it wait again.
fn blocking_flock(file: &File, mode: Mode) -> io::Result<()> {
    loop {
        let result = match mode {
            Mode::Shared => file.lock_shared(),
            Mode::Exclusive => file.lock(),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// "pid 4121" or "pids 4121, 4188".
pub fn pid_list(pids: &[u32]) -> String {
    match pids {
        [] => "another process".to_string(),
        [pid] => format!("pid {pid}"),
        _ => format!(
            "pids {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// "2 processes (pids 4121, 4188)".
pub fn process_list(pids: &[u32]) -> String {
    match pids.len() {
        0 => "another process".to_string(),
        1 => format!("1 process ({})", pid_list(pids)),
        n => format!("{n} processes ({})", pid_list(pids)),
    }
}

/// An open lock file and the mode in which this descriptor holds its lock, if any.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
    held: Option<Mode>,
}

/// The result of a lock attempt that may not wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryLock {
    /// The lock is held now.
    Acquired,
    /// Somebody else holds a conflicting lock; nothing changed.
    Busy,
}

impl LockFile {
    /// Opens `path` read-write, creating it (mode 0o666) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<LockFile, Error> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_lock_file(path)?,
            Err(e) => return Err(Error::io("open the lock file", path, e)),
        };
        Ok(LockFile {
            file,
            path: path.to_path_buf(),
            held: None,
        })
    }

    /// Opens an existing lock file read-only; `None` if it does not exist (flock needs no
    /// write access).
    pub fn open_existing(path: &Path) -> Result<Option<LockFile>, Error> {
        match File::open(path) {
            Ok(file) => Ok(Some(LockFile {
                file,
                path: path.to_path_buf(),
                held: None,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open the lock file", path, e)),
        }
    }

    /// Wraps a descriptor that already holds `held` (an announcement locked before it was
    /// renamed into place).
    pub(crate) fn from_locked(file: File, path: PathBuf, held: Mode) -> LockFile {
        LockFile {
            file,
            path,
            held: Some(held),
        }
    }

    /// Wraps an open descriptor that holds no lock yet (a lock file opened relative to
    /// a directory descriptor, see `cache::open_lock_at`).
    pub(crate) fn from_file(file: File, path: PathBuf) -> LockFile {
        LockFile {
            file,
            path,
            held: None,
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open descriptor (to hand it to a child).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The mode this descriptor holds, if it holds the lock.
    pub fn held(&self) -> Option<Mode> {
        self.held
    }

    /// One attempt to take the lock in `mode`; never waits.
    pub fn try_lock(&mut self, mode: Mode) -> Result<TryLock, Error> {
        debug_assert!(self.held.is_none(), "a lock is never converted");
        let result = if faults::is(Fault::FlockUnsupported) {
            Err(TryLockError::Error(io::ErrorKind::Unsupported.into()))
        } else {
            match mode {
                Mode::Shared => self.file.try_lock_shared(),
                Mode::Exclusive => self.file.try_lock(),
            }
        };
        match result {
            Ok(()) => {
                self.held = Some(mode);
                tracing::trace!(path = %self.path.display(), ?mode, "acquired lock");
                Ok(TryLock::Acquired)
            }
            Err(TryLockError::WouldBlock) => Ok(TryLock::Busy),
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
                warn_unsupported(&self.path);
                Ok(TryLock::Acquired)
            }
            Err(TryLockError::Error(e)) => Err(Error::io("lock", &self.path, e)),
        }
    }

    /// Takes the lock in `mode`, waiting up to `timeout` (forever if `None`) and telling
    /// `observer` about the wait: [`Observer::busy`] once when the first attempt finds the
    /// lock busy (`why` turns the holders' pids into the sentence), [`Observer::tick`]
    /// about once a second, [`Observer::wait_ended`] when it ends, either way, and
    /// [`Observer::holders`] to name the holders in a timeout error.
    ///
    /// The wait blocks in flock(2) (so a waiter shows in the kernel's lock table and
    /// takes the lock the moment it is released), on this thread without a timeout, and
    /// on a helper thread with one; see [`LockFile`]'s module documentation for why a
    /// wait that times out never holds the lock afterwards.
    pub fn lock_observed(
        &mut self,
        mode: Mode,
        timeout: Option<Duration>,
        why: &dyn Fn(&[u32]) -> String,
        observer: &dyn Observer,
    ) -> Result<(), Error> {
        if self.try_lock(mode)? == TryLock::Acquired {
            return Ok(());
        }
        // A wait that may not last (a zero timeout, `hold --nonblock`) is no wait to announce.
        let waits = timeout != Some(Duration::ZERO);
        if waits {
            tracing::info!(path = %self.path.display(), ?mode, "waiting for lock");
            observer.busy(&self.path, mode, why);
        }
        let result = self.wait(mode, timeout, &mut |waited| observer.tick(waited));
        observer.wait_ended();
        match result {
            Err(Waited::TimedOut(waited)) => Err(Error::LockTimeout {
                holders: observer.holders(&self.path),
                path: self.path.clone(),
                mode,
                waited,
            }),
            Err(Waited::Failed(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// Takes the lock in `mode`, waiting up to `timeout` (forever if `None`). `on_busy`
    /// is called once, when the first attempt finds the lock busy, and `on_tick` about
    /// once a second while waiting, with the time waited so far.
    pub fn lock(
        &mut self,
        mode: Mode,
        timeout: Option<Duration>,
        on_busy: &mut dyn FnMut(&Path),
        on_tick: &mut dyn FnMut(Duration),
    ) -> Result<(), Error> {
        if self.try_lock(mode)? == TryLock::Acquired {
            return Ok(());
        }
        on_busy(&self.path);
        match self.wait(mode, timeout, on_tick) {
            Ok(()) => Ok(()),
            Err(Waited::TimedOut(waited)) => Err(Error::LockTimeout {
                path: self.path.clone(),
                mode,
                waited,
                holders: Vec::new(),
            }),
            Err(Waited::Failed(e)) => Err(e),
        }
    }

    /// The blocking wait (after a failed attempt): see the module documentation.
    fn wait(
        &mut self,
        mode: Mode,
        timeout: Option<Duration>,
        on_tick: &mut dyn FnMut(Duration),
    ) -> Result<(), Waited> {
        let Some(timeout) = timeout else {
            blocking_flock(&self.file, mode)
                .map_err(|e| Waited::Failed(Error::io("lock", &self.path, e)))?;
            self.acquired(mode);
            return Ok(());
        };
        if timeout.is_zero() {
            return Err(Waited::TimedOut(Duration::ZERO));
        }
        let start = Instant::now();
        // The helper flocks a duplicate of this descriptor: the same open file
        // description, so the lock it takes is this `LockFile`'s.
        let theirs = self
            .file
            .try_clone()
            .map_err(|e| Waited::Failed(Error::io("duplicate the descriptor of", &self.path, e)))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("cachelock-lock-wait".into())
            .spawn(move || {
                let result = blocking_flock(&theirs, mode);
                // If the waiter gave up, the receiver is gone and this send fails; either
                // way `theirs` is closed right after, and with it the last descriptor of
                // an abandoned description (see the module documentation).
                let _ = tx.send(result);
                drop(theirs);
            })
            .map_err(|e| Waited::Failed(Error::io("start a lock wait on", &self.path, e)))?;
        let tick = Duration::from_secs(1);
        loop {
            let waited = start.elapsed();
            let left = timeout.saturating_sub(waited);
            let received = if left.is_zero() {
                rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                })
            } else {
                rx.recv_timeout(left.min(tick))
            };
            match received {
                Ok(Ok(())) => {
                    self.acquired(mode);
                    return Ok(());
                }
                Ok(Err(e)) => return Err(Waited::Failed(Error::io("lock", &self.path, e))),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Waited::Failed(Error::io(
                        "lock",
                        &self.path,
                        io::Error::other("the lock wait ended without an answer"),
                    )));
                }
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                    self.abandon();
                    return Err(Waited::TimedOut(start.elapsed()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => on_tick(start.elapsed()),
            }
        }
    }

    fn acquired(&mut self, mode: Mode) {
        self.held = Some(mode);
        tracing::trace!(path = %self.path.display(), ?mode, "acquired lock");
    }

    /// After a timed-out wait: gives the description the helper still waits on over to
    /// the helper alone, by closing this descriptor and opening the file afresh. When the
    /// helper's flock(2) returns, it closes the last descriptor of that description, so a
    /// lock it may get then is released at once and never seen by this `LockFile`.
    fn abandon(&mut self) {
        let fresh = File::open(&self.path).or_else(|_| File::open("/dev/null"));
        match fresh {
            Ok(file) => self.file = file,
            // Nothing can be opened at all: keep the descriptor, and drop any lock the
            // helper got meanwhile (`LOCK_UN` on the shared description).
            Err(_) => {
                let _ = self.file.unlock();
            }
        }
        self.held = None;
    }

    /// Releases the lock with `LOCK_UN`: for every descriptor sharing this open file
    /// description, inherited copies included.
    pub fn unlock(&mut self) -> Result<(), Error> {
        self.file.unlock().ctx("unlock", &self.path)?;
        self.held = None;
        Ok(())
    }
}

/// Creates a lock file atomically; the loser of a creation race opens the winner's file.
/// The file is made under a temporary name beside `path` and renamed into place; a
/// clean deletes whatever it finds at the top of a cache, that temporary file too, so
/// one that vanished before its rename is made again (a clean ends: the number of
/// tries is bounded only as a guard).
fn create_lock_file(path: &Path) -> Result<File, Error> {
    const TRIES: usize = 1000;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tries = 0;
    loop {
        tries += 1;
        let temp = tempfile::NamedTempFile::new_in(dir).ctx("create a lock file in", dir)?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o666))
            .ctx("set the permissions of", temp.path())?;
        match temp.persist_noclobber(path) {
            Ok(file) => return Ok(file),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                return OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .ctx("open the lock file", path);
            }
            Err(e) if e.error.kind() == io::ErrorKind::NotFound && tries < TRIES => continue,
            Err(e) => return Err(Error::io("create the lock file", path, e.error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn ignore(_: libc::c_int) {}

    /// A clean deletes whatever it finds at the top of the cache, a creator's temporary
    /// file too, between its creation and its rename into `.lock`: the creator makes
    /// another (or opens the `.lock` someone else made), it does not fail.
    #[test]
    fn a_lock_file_is_created_while_its_temporary_files_are_deleted() -> Result<(), Error> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join(".lock");
        let stop = AtomicBool::new(false);
        let removed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for e in std::fs::read_dir(dir.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        if e.file_name().to_string_lossy().starts_with(".tmp")
                            && std::fs::remove_file(e.path()).is_ok()
                        {
                            removed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
            let mut result = Ok(());
            // Until the race has been run often (or a bound, far above what it takes).
            for _ in 0..100_000 {
                if removed.load(Ordering::Relaxed) >= 20 {
                    break;
                }
                let _ = std::fs::remove_file(&path);
                if let Err(e) = create_lock_file(&path) {
                    result = Err(e);
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
            result
        })?;
        // The race was run: temporary files were removed under the creator.
        assert!(
            removed.load(Ordering::Relaxed) >= 20,
            "too few temporary files removed"
        );
        Ok(())
    }

    #[test]
    fn a_blocking_wait_interrupted_by_a_signal_waits_on() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join(".lock");
        let mut holder = LockFile::open_or_create(&path)?;
        assert_eq!(holder.try_lock(Mode::Exclusive)?, TryLock::Acquired);
        // A handler without SA_RESTART, so that the blocked flock(2) returns EINTR.
        // SAFETY: a zeroed sigaction is "no flags, empty mask"; the handler does nothing.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            let _ = tx.send(unsafe { libc::pthread_self() } as usize);
            let mut lock = LockFile::open_or_create(&waiter_path)?;
            lock.lock(Mode::Shared, None, &mut |_| {}, &mut |_| {})?;
            Ok::<_, Error>(lock.held())
        });
        let thread = rx.recv().map_err(|_| Error::Finished)? as libc::pthread_t;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: the thread is alive until it is joined below.
            unsafe {
                libc::pthread_kill(thread, libc::SIGUSR2);
            }
        }
        drop(holder);
        let held = waiter.join().map_err(|_| Error::Finished)??;
        assert_eq!(held, Some(Mode::Shared));
        Ok(())
    }

    #[test]
    fn a_timed_out_wait_never_holds_the_lock_afterwards() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join(".lock");
        let mut holder = LockFile::open_or_create(&path)?;
        assert_eq!(holder.try_lock(Mode::Exclusive)?, TryLock::Acquired);
        let mut waiter = LockFile::open_or_create(&path)?;
        let err = waiter
            .lock(
                Mode::Exclusive,
                Some(Duration::from_millis(50)),
                &mut |_| {},
                &mut |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        assert_eq!(waiter.held(), None);
        // The holder lets go: the abandoned helper may get the lock now, but only on a
        // description nobody else has, which it closes at once. A third descriptor gets
        // the lock (the deadline only bounds the failure: a leaked lock never goes).
        drop(holder);
        let mut third = LockFile::open_or_create(&path)?;
        third.lock(
            Mode::Exclusive,
            Some(Duration::from_secs(30)),
            &mut |_| {},
            &mut |_| {},
        )?;
        assert_eq!(third.held(), Some(Mode::Exclusive));
        // `waiter` is still open and holds nothing; its fresh descriptor conflicts.
        assert_eq!(waiter.try_lock(Mode::Shared)?, TryLock::Busy);
        Ok(())
    }

    #[test]
    fn a_wait_with_a_timeout_gets_the_lock_when_it_is_released() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join(".lock");
        let mut holder = LockFile::open_or_create(&path)?;
        assert_eq!(holder.try_lock(Mode::Exclusive)?, TryLock::Acquired);
        let (busy_tx, busy_rx) = std::sync::mpsc::channel();
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || {
            let mut lock = LockFile::open_or_create(&waiter_path)?;
            lock.lock(
                Mode::Shared,
                Some(Duration::from_secs(60)),
                &mut |_| {
                    let _ = busy_tx.send(());
                },
                &mut |_| {},
            )?;
            // Held through this descriptor: a conflicting one is refused.
            let mut other = LockFile::open_or_create(&waiter_path)?;
            Ok::<_, Error>((lock.held(), other.try_lock(Mode::Exclusive)?, lock))
        });
        busy_rx.recv().map_err(|_| Error::Finished)?;
        drop(holder);
        let (held, other, _lock) = waiter.join().map_err(|_| Error::Finished)??;
        assert_eq!(held, Some(Mode::Shared));
        assert_eq!(other, TryLock::Busy);
        Ok(())
    }

    #[test]
    fn two_descriptors_in_one_process_exclude_each_other() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join(".lock");
        let mut a = LockFile::open_or_create(&path)?;
        let mut b = LockFile::open_or_create(&path)?;
        assert_eq!(a.try_lock(Mode::Exclusive)?, TryLock::Acquired);
        assert_eq!(b.try_lock(Mode::Shared)?, TryLock::Busy);
        let err = b
            .lock(
                Mode::Shared,
                Some(Duration::from_millis(100)),
                &mut |_| {},
                &mut |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        drop(a);
        assert_eq!(b.try_lock(Mode::Shared)?, TryLock::Acquired);
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(&path).map(|m| m.mode() & 0o777);
        // chmod after creation: the umask does not apply.
        assert_eq!(mode.ok(), Some(0o666));
        Ok(())
    }
}
