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
//! - Waits poll a non-blocking attempt until the deadline, so that a timed-out wait holds
//!   nothing and leaves no thread behind. Without a deadline the wait blocks in the kernel.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cachelock_model::Mode;

use crate::error::{Error, IoContext};
use crate::faults::{self, Fault};
use crate::procinfo;

/// The fallback on a file system without flock(2) (some network and FUSE file systems),
/// as uv and cargo do: warn once, then go on as if the lock had been granted. Nothing
/// is held (`held()` stays `None`), so processes on such a cache are not protected from
/// each other: the warning says so.
fn warn_unsupported(path: &Path) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "warning: the file system of `{}` does not support file locks; continuing without \
             them, so concurrent cachelock or uv processes on this cache are not protected from \
             each other (a clean may delete what a run uses). Use a local cache directory \
             (--cache-dir) to be safe.",
            path.display()
        );
    }
    tracing::warn!(path = %path.display(), "file locks unsupported; continuing without");
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

    /// Takes the lock in `mode`, waiting up to `timeout`, as the command does: when the
    /// first attempt finds it busy and `progress` is on, says once on stderr who holds it
    /// (`why` turns the holders' pids into the sentence), and on a terminal shows the
    /// time waited.
    pub fn lock_with_progress(
        &mut self,
        mode: Mode,
        timeout: Option<Duration>,
        progress: bool,
        why: &dyn Fn(&[u32]) -> String,
    ) -> Result<(), Error> {
        use std::io::{IsTerminal, Write};
        let tty = progress && std::io::stderr().is_terminal();
        let mut ticked = false;
        let result = self.lock(
            mode,
            timeout,
            &mut |path| {
                tracing::info!(path = %path.display(), ?mode, "waiting for lock");
                if progress {
                    let pids: Vec<u32> = procinfo::holders_of(path)
                        .into_iter()
                        .map(|h| h.pid)
                        .collect();
                    eprintln!("{}", why(&pids));
                }
            },
            &mut |waited| {
                if tty {
                    ticked = true;
                    eprint!("\r  waiting for {}s", waited.as_secs());
                    let _ = std::io::stderr().flush();
                }
            },
        );
        if ticked {
            eprintln!();
        }
        result
    }

    /// Takes the lock in `mode`, waiting until `deadline` (forever if `None`). `on_busy`
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
        let start = Instant::now();
        let Some(timeout) = timeout else {
            loop {
                let result = match mode {
                    Mode::Shared => self.file.lock_shared(),
                    Mode::Exclusive => self.file.lock(),
                };
                match result {
                    Ok(()) => break,
                    // A signal handler installed without SA_RESTART interrupted the
                    // wait (EINTR): nothing is held, wait again.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("lock", &self.path, e)),
                }
            }
            self.held = Some(mode);
            return Ok(());
        };
        let mut pause = Duration::from_millis(2);
        let mut last_tick = start;
        loop {
            if self.try_lock(mode)? == TryLock::Acquired {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                let holders = procinfo::describe_holders(&self.path);
                return Err(Error::LockTimeout {
                    path: self.path.clone(),
                    mode,
                    waited,
                    holders,
                });
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                on_tick(waited);
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
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
fn create_lock_file(path: &Path) -> Result<File, Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir).ctx("create a lock file in", dir)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o666))
        .ctx("set the permissions of", temp.path())?;
    match temp.persist_noclobber(path) {
        Ok(file) => Ok(file),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx("open the lock file", path),
        Err(e) => Err(Error::io("create the lock file", path, e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn ignore(_: libc::c_int) {}

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
