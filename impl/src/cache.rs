//! The cache directory: its layout, its scaffold, and what a clean may delete.
//!
//! Layout of a cache root:
//! - `.lock`: the root lock file. Never deleted by a clean that runs under a lock
//!   (uv up to 0.12 unlinks it afterwards, see `Step::UnlinkLockFile`).
//! - `.cleans/<pid>-<random>`: announcements of running cleans (cachelock policies), each
//!   locked exclusive by its clean. Names starting with `.tmp` are not yet announced.
//! - `CACHEDIR.TAG`, `.gitignore`: the scaffold. A directory with neither a tag nor only
//!   the names a cache leaves behind is refused by clean.
//! - `environments/<name>`: an environment; `environments/<name>.lock` its lock file,
//!   never unlinked (a lock is on an inode, a new file would be a new lock).
//! - `builds/.tmpX`: environments being built, renamed into `environments/` when done.
//!
//! Deleting never follows a symbolic link: a link is removed, not what it points to.
//! Every deletion, rename and creation below the root goes through directory
//! descriptors ([`safe_fs`], whose documentation gives the rules).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cachelock_model::Mode;

use crate::error::{Error, IoContext};
use crate::lockfile::{LockFile, TryLock};
use crate::safe_fs::{self, DirFd, Removed};

/// The root lock file's name.
pub const LOCK_FILE: &str = ".lock";
/// The cache directory tag (<https://bford.info/cachedir/>).
pub const TAG_FILE: &str = "CACHEDIR.TAG";
/// Directory of clean announcements.
pub const CLEANS_DIR: &str = ".cleans";
/// Directory of environments.
pub const ENVIRONMENTS_DIR: &str = "environments";
/// Directory of environments being built.
pub const BUILDS_DIR: &str = "builds";
/// The marker file inside every environment; a child can check that its environment is
/// intact by testing `$CACHELOCK_ENV/cachelock-env`.
pub const ENV_MARKER: &str = "cachelock-env";
/// Separates an environment's name from the random part in the name of its build
/// directory (`builds/<env>.build-XXXXXX`).
pub const BUILD_INFIX: &str = ".build-";
/// Separates an environment's name from the random part in the name of a run's overlay
/// (`builds/<env>.overlay-XXXXXX`, uv policies only).
pub const OVERLAY_INFIX: &str = ".overlay-";

const TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by cachelock.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Names that a cache leaves behind after a clean (or a clean killed after it moved the
/// tag into its trash): a directory holding only these is still taken for a cache.
const LEFTOVER_NAMES: [&str; 6] = [
    LOCK_FILE,
    CLEANS_DIR,
    TRASH_DIR,
    ENVIRONMENTS_DIR,
    BUILDS_DIR,
    ".gitignore",
];

/// Which cache a session uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheDir {
    /// A cache directory shared with other processes.
    Persistent(PathBuf),
    /// A private temporary cache (`--no-cache`), removed when the run ends.
    Temporary,
}

/// The default cache root: `$CACHELOCK_CACHE_DIR`, else `$XDG_CACHE_HOME/cachelock`,
/// else `~/.cache/cachelock`.
pub fn default_cache_dir() -> Result<PathBuf, Error> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("CACHELOCK_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("cachelock"));
    }
    var("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("cachelock"))
        .ok_or(Error::NoCacheDir)
}

/// Creates the root and its scaffold; what exists already is kept. Below the root,
/// everything is created through descriptors ([`safe_fs`]): a link planted in the
/// cache is never written through.
pub fn create_scaffold(root: &Path) -> Result<(), Error> {
    fs::create_dir_all(root).ctx("create the directory", root)?;
    let dir = DirFd::open_root(root).ctx("open the cache directory", root)?;
    for name in [ENVIRONMENTS_DIR, BUILDS_DIR] {
        dir.open_or_create_dir(name)
            .map_err(|e| Error::io("create the directory", dir.child_path(name.as_ref()), e))?;
    }
    for (name, text) in [(TAG_FILE, TAG_TEXT), (".gitignore", "*\n")] {
        let path = || dir.child_path(name.as_ref());
        match dir.stat_entry(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", path(), e)),
            Ok(_) => continue,
        }
        match dir.create_file(name, 0o644) {
            Ok(mut file) => file.write_all(text.as_bytes()).ctx("write", &path())?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("write", path(), e)),
        }
    }
    Ok(())
}

/// Opens the lock file `name` in `dir` through the directory's descriptor, never
/// following a link: read-write, or read-only where it may not be written (flock needs
/// no write access). With `create`, a missing one is created as
/// [`LockFile::open_or_create`] does (mode 0o666 under a temporary name, moved into
/// place without replacing anything); without, a missing one is `Ok(None)`. A link or
/// anything but a regular file is an error of kind `InvalidInput`: whoever planted it
/// gets no lock honoured or followed.
pub fn open_lock_at(dir: &DirFd, name: &str, create: bool) -> io::Result<Option<LockFile>> {
    let wrap = |file| Some(LockFile::from_file(file, dir.child_path(name.as_ref())));
    loop {
        match dir.open_file(name, true) {
            Ok(Some(file)) => return Ok(wrap(file)),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return dir.open_file(name, false).map(|f| f.and_then(wrap));
            }
            Err(e) => return Err(e),
        }
        if !create {
            return Ok(None);
        }
        let (file, temp) = dir.create_unique_file(".tmp", 0o666)?;
        match dir.rename_noreplace(&temp, dir, name) {
            Ok(()) => return Ok(wrap(file)),
            Err(e) => {
                let _ = dir.remove_file(&temp);
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
                // Another process created it first: open theirs.
            }
        }
    }
}

/// Locks a temporary cache as its run's own: `<temp>/.lock` is created already locked
/// shared (locked under a temporary name, then renamed into place), so that it is never
/// seen unlocked while the run lives. The run holds the returned descriptor until its
/// temporary cache is removed; if the run is killed, the lock goes with it and the cache
/// is recognisably leaked ([`leaked_temp_caches`]).
pub fn lock_temp_cache(temp: &Path) -> Result<LockFile, Error> {
    let dir = DirFd::open_root(temp).ctx("open the temporary cache", temp)?;
    let (file, name) = dir
        .create_unique_file(".tmp", 0o600)
        .ctx("create the lock file of the temporary cache in", temp)?;
    file.try_lock_shared()
        .map_err(|e| Error::io("lock", dir.child_path(&name), e.into()))?;
    let path = temp.join(LOCK_FILE);
    dir.rename_noreplace(&name, &dir, LOCK_FILE)
        .ctx("create the lock file", &path)?;
    Ok(LockFile::from_locked(file, path, Mode::Shared))
}

/// The temporary caches in `tmp` (`$TMPDIR`) whose run has gone without removing them:
/// a directory (not a link) named `.tmp*`, owned by this user, holding a `CACHEDIR.TAG`
/// written by cachelock and a `.lock` that nobody holds. A temporary cache without
/// `.lock` is never reported: nothing tells a live one from a leaked one.
pub fn leaked_temp_caches(tmp: &Path) -> Vec<PathBuf> {
    let Ok(tmp_dir) = DirFd::open_root(tmp) else {
        return Vec::new();
    };
    leaked_names(&tmp_dir)
        .into_iter()
        .map(|name| tmp.join(name))
        .collect()
}

fn leaked_names(tmp: &DirFd) -> Vec<OsString> {
    let Ok(names) = tmp.entries() else {
        return Vec::new();
    };
    let mut found: Vec<OsString> = names
        .into_iter()
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .filter(|n| is_ours_and_unlocked(tmp, n).is_some())
        .collect();
    found.sort();
    found
}

/// If `name` in `tmp` is a leaked temporary cache of ours: the directory, opened, and
/// the exclusive lock that proves nobody uses it (held as long as the value lives).
/// Everything is looked at through the directory's descriptor.
fn is_ours_and_unlocked(tmp: &DirFd, name: &OsStr) -> Option<(DirFd, LockFile)> {
    let dir = is_ours(tmp, name)?;
    let mut lock = open_lock_at(&dir, LOCK_FILE, false).ok()??;
    (lock.try_lock(Mode::Exclusive).ok()? == TryLock::Acquired).then_some((dir, lock))
}

/// If `name` in `tmp` is a temporary cache of ours, in use or not: the directory,
/// opened (owned by this user, with cachelock's `CACHEDIR.TAG`).
fn is_ours(tmp: &DirFd, name: &OsStr) -> Option<DirFd> {
    let dir = tmp.open_dir(name).ok()?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if dir.stat().ok()?.st_uid != uid {
        return None;
    }
    let tag = dir.open_file(TAG_FILE, false).ok()??;
    let mut text = String::new();
    tag.take(4097).read_to_string(&mut text).ok()?;
    (text == TAG_TEXT).then_some(dir)
}

/// Removes the leaked temporary caches in `tmp` ([`leaked_temp_caches`]), each while
/// holding its lock exclusive; returns what was removed. What is removed is what was
/// checked: the contents through the checked directory's descriptor, then its name.
pub fn remove_leaked_temp_caches(tmp: &Path) -> Result<Vec<(PathBuf, DeleteReport)>, Error> {
    let mut removed = Vec::new();
    let tmp_dir = match DirFd::open_root(tmp) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io("open the temporary directory", tmp, e)),
    };
    for name in leaked_names(&tmp_dir) {
        // Checked again under the lock that is held while deleting.
        let Some((dir, lock)) = is_ours_and_unlocked(&tmp_dir, &name) else {
            continue;
        };
        let mut report = DeleteReport::default();
        let mut counts = Removed::default();
        dir.remove_contents(&mut counts)?;
        drop(dir);
        tmp_dir.remove_tree(&name, &mut counts)?;
        drop(lock);
        report.add(counts);
        removed.push((tmp.join(name), report));
    }
    Ok(removed)
}

/// Removes every temporary cache of ours in `tmp`, its lock held or not: what a prune
/// under a design built to break the protocol does (`PruneTemp::Any`, policy
/// `cachelock-prune-any-temp`), taking a running `--no-cache` child's environment.
pub fn remove_every_temp_cache(tmp: &Path) -> Result<Vec<(PathBuf, DeleteReport)>, Error> {
    let mut removed = Vec::new();
    let tmp_dir = match DirFd::open_root(tmp) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io("open the temporary directory", tmp, e)),
    };
    let Ok(names) = tmp_dir.entries() else {
        return Ok(removed);
    };
    for name in names {
        if !name.to_string_lossy().starts_with(".tmp") {
            continue;
        }
        let Some(dir) = is_ours(&tmp_dir, &name) else {
            continue;
        };
        let mut report = DeleteReport::default();
        let mut counts = Removed::default();
        dir.remove_contents(&mut counts)?;
        drop(dir);
        tmp_dir.remove_tree(&name, &mut counts)?;
        report.add(counts);
        removed.push((tmp.join(name), report));
    }
    Ok(removed)
}

/// Refuses to clean `/`, the home directory, and directories that are not caches.
pub fn check_cleanable(root: &Path) -> Result<(), Error> {
    let refuse = |reason| Error::NotACache {
        path: root.to_path_buf(),
        reason,
    };
    let canonical = fs::canonicalize(root).ctx("resolve the cache directory", root)?;
    if canonical.parent().is_none() {
        return Err(refuse("it is the root directory"));
    }
    if let Some(home) = std::env::var_os("HOME").and_then(|h| fs::canonicalize(h).ok())
        && home == canonical
    {
        return Err(refuse("it is the home directory"));
    }
    if canonical.join(TAG_FILE).is_file() {
        return Ok(());
    }
    let entries = fs::read_dir(&canonical).ctx("list the cache directory", &canonical)?;
    for entry in entries {
        let entry = entry.ctx("list the cache directory", &canonical)?;
        let name = entry.file_name();
        // A run may recreate the tag between the test above and this listing (the tag
        // counts then), and a run creating `.lock` leaves an empty `.tmpXXXXXX` for a
        // moment: neither makes a cache something else.
        let creating_lock = name.to_string_lossy().starts_with(".tmp")
            && entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
        if name != TAG_FILE && !creating_lock && !LEFTOVER_NAMES.iter().any(|n| name == *n) {
            return Err(refuse(
                "it has no CACHEDIR.TAG and holds files a cache does not have",
            ));
        }
    }
    Ok(())
}

/// What [`delete_entries`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Files (and links) removed.
    pub removed_files: u64,
    /// Their total size.
    pub removed_bytes: u64,
    /// Environments kept because they are in use (their lock was busy, or is not a
    /// regular file).
    pub skipped: Vec<String>,
}

impl DeleteReport {
    fn add(&mut self, removed: Removed) {
        self.removed_files += removed.files;
        self.removed_bytes += removed.bytes;
    }
}

/// Removes `name` in `dir` (a tree, a file or a link) through descriptors.
fn remove_tree(dir: &DirFd, name: &OsStr, report: &mut DeleteReport) -> Result<(), Error> {
    let mut removed = Removed::default();
    let result = dir.remove_tree(name, &mut removed);
    report.add(removed);
    result
}

/// Where a clean puts what it deletes: gone at once, or into its own trash directory.
#[derive(Clone, Copy)]
enum Bin<'a> {
    Delete,
    Trash(&'a DirFd),
}

impl Bin<'_> {
    /// Moves `name` in `dir`, link or tree as it is, into the trash under a fresh name
    /// with one `renameat` (never following a link): `true` if it is out of the cache's
    /// namespace (moved, or gone already), `false` if it is still there and must be
    /// deleted in place (deleting, an entry that cannot be renamed: a mount point).
    fn moved(self, dir: &DirFd, name: &OsStr) -> bool {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let Bin::Trash(trash) = self else {
            return false;
        };
        let to = format!("{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        match dir.rename_noreplace(name, trash, &to) {
            Ok(()) => true,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && dir
                        .stat_entry(name)
                        .is_err_and(|e| e.kind() == io::ErrorKind::NotFound) =>
            {
                true
            }
            Err(e) => {
                tracing::debug!(path = %dir.child_path(name).display(), "could not move to the trash: {e}");
                false
            }
        }
    }

    /// Removes `name` in `dir`: moves it into the trash ([`Bin::moved`]), or deletes it.
    fn discard(self, dir: &DirFd, name: &OsStr, report: &mut DeleteReport) -> Result<(), Error> {
        if self.moved(dir, name) {
            return Ok(());
        }
        remove_tree(dir, name, report)
    }
}

/// Deletes the cache's entries: environments and builds, and with `scaffold` (clean, not
/// prune) everything else except `.lock` and `.cleans/`. With `env_locks`, an environment
/// is deleted only while its lock is held exclusive, taken without waiting; a busy one
/// is skipped and reported, and environment lock files are kept.
///
/// The root is opened once; everything below it is reached and removed through
/// descriptors ([`safe_fs`]): a link in the cache, planted or swapped in at any moment,
/// is removed, never followed.
pub fn delete_entries(root: &Path, scaffold: bool, env_locks: bool) -> Result<DeleteReport, Error> {
    let root = match DirFd::open_root(root) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DeleteReport::default()),
        Err(e) => return Err(Error::io("open the cache directory", root, e)),
    };
    discard_entries(&root, scaffold, env_locks, Bin::Delete)
}

/// The trash: `<cache>/.trash/`, one directory per clean in it.
pub const TRASH_DIR: &str = ".trash";

/// A clean's trash directory, filled by [`move_entries_to_trash`] and deleted by
/// [`delete_trash`]. Its descriptor holds `flock(LOCK_EX)` on the directory itself as
/// long as it lives, so no other clean deletes it while it is being filled.
#[derive(Debug)]
pub struct OwnTrash {
    /// Held for its lock on the directory, released when it closes.
    _dir: DirFd,
}

/// `move-to-trash`: removes from the cache exactly what [`delete_entries`] would delete
/// (with the same environment locks taken the same way), but by one `renameat` per entry
/// into a trash directory of this clean's own, `<cache>/.trash/<unique>/`, made and
/// locked first. The time this takes does not grow with the size of what it removes.
/// Returns the trash (none if there is no cache) and what was kept.
pub fn move_entries_to_trash(
    root: &Path,
    scaffold: bool,
    env_locks: bool,
) -> Result<(Option<OwnTrash>, DeleteReport), Error> {
    let root = match DirFd::open_root(root) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((None, DeleteReport::default()));
        }
        Err(e) => return Err(Error::io("open the cache directory", root, e)),
    };
    let dir = own_trash_dir(&root)?;
    let report = discard_entries(&root, scaffold, env_locks, Bin::Trash(&dir))?;
    Ok((Some(OwnTrash { _dir: dir }), report))
}

/// Makes, locks and opens a trash directory of this clean's own,
/// `<cache>/.trash/clean-<random>`. Another clean's `delete-trash` removes `.trash` once
/// it is empty, and a trash directory it can lock: one made but not locked yet (still
/// empty). Either race makes this fail with "not found" or leaves it a directory no name
/// leads to; then a new one is made. A `.trash` that is not a directory (a link planted
/// there) is removed, never followed, and made again.
fn own_trash_dir(root: &DirFd) -> Result<DirFd, Error> {
    let trash_path = root.child_path(TRASH_DIR.as_ref());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let retry = attempts < 100;
        let trash_root = match root.open_or_create_dir(TRASH_DIR) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry => continue,
            Err(e) if safe_fs::is_not_dir(&e) && retry => {
                tracing::debug!(path = %trash_path.display(), "not a directory, removed: {e}");
                root.remove_tree(TRASH_DIR, &mut Removed::default())?;
                continue;
            }
            Err(e) => return Err(Error::io("create the trash directory", &trash_path, e)),
        };
        let dir = match trash_root.create_unique_dir("clean-") {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry => continue,
            Err(e) => {
                return Err(Error::io(
                    "create a trash directory in",
                    trash_root.path(),
                    e,
                ));
            }
        };
        if !dir
            .try_lock_exclusive()
            .ctx("lock the trash directory", dir.path())?
        {
            // Another clean's `delete-trash` holds it, about to remove it.
            continue;
        }
        // Locked: nobody removes it now. Still the one its name leads to?
        let name = dir.path().file_name().unwrap_or_default().to_os_string();
        let here = dir.stat().ctx("look at the trash directory", dir.path())?;
        match trash_root.stat_entry(&name) {
            Ok(st) if (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino) => return Ok(dir),
            _ if retry => continue,
            _ => {
                return Err(Error::io(
                    "keep the trash directory",
                    dir.path(),
                    io::Error::from(io::ErrorKind::NotFound),
                ));
            }
        }
    }
}

/// `delete-trash`: deletes `own` (if any), then every trash directory in the cache whose
/// lock it can take without waiting: those a killed clean left. Each trash directory is
/// removed by as many threads as there are cores ([`DirFd::remove_entries_parallel`]),
/// which nothing else waits for: this runs after the clean released the cache. One being filled by a
/// live clean is locked and stays (that clean deletes it). What is in the trash is never
/// used by anyone (nothing opens a path under `.trash/`), so deleting it under no cache
/// lock is safe; a link planted there is removed, never followed.
pub fn delete_trash(root: &Path, own: Option<OwnTrash>) -> Result<DeleteReport, Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    delete_trash_with(root, own, threads)
}

/// [`delete_trash`] with `threads` threads removing the trash
/// ([`DirFd::remove_entries_parallel`]); [`delete_trash`] uses as many as there are cores.
pub fn delete_trash_with(
    root: &Path,
    own: Option<OwnTrash>,
    threads: usize,
) -> Result<DeleteReport, Error> {
    let mut report = DeleteReport::default();
    // Its lock goes with its descriptor; the directory is deleted below like any
    // other (a clean deleting at the same moment takes it first, and this one skips it).
    drop(own);
    let root = match DirFd::open_root(root) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io("open the cache directory", root, e)),
    };
    let trash_root = match root.open_dir(TRASH_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        // A link or a file in its place: remove that entry itself.
        Err(e) if safe_fs::is_not_dir(&e) => {
            remove_tree(&root, TRASH_DIR.as_ref(), &mut report)?;
            return Ok(report);
        }
        Err(e) => {
            return Err(Error::io(
                "open the directory",
                root.child_path(TRASH_DIR.as_ref()),
                e,
            ));
        }
    };
    let names = trash_root
        .entries()
        .ctx("list the trash", trash_root.path())?;
    for name in names {
        let dir = match trash_root.open_dir(&name) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if safe_fs::is_not_dir(&e) => {
                remove_tree(&trash_root, &name, &mut report)?;
                continue;
            }
            Err(e) => {
                return Err(Error::io(
                    "open the directory",
                    trash_root.child_path(&name),
                    e,
                ));
            }
        };
        if !dir
            .try_lock_exclusive()
            .ctx("lock the trash directory", dir.path())?
        {
            continue;
        }
        let mut removed = Removed::default();
        let mut entries = dir.entries().ctx("list the trash directory", dir.path())?;
        let rest = entries.split_off(entries.len().min(1));
        let result = dir
            .remove_entries_parallel(entries, threads, &mut removed)
            .and_then(|()| {
                crate::faults::pause("trash-deleting");
                dir.remove_entries_parallel(rest, threads, &mut removed)
            });
        report.add(removed);
        result?;
        trash_root
            .remove_empty_dir(&name)
            .ctx("remove the trash directory", &trash_root.child_path(&name))?;
    }
    // A clean leaves nothing of its own behind: `.trash` goes once it is empty. One that
    // a live clean is filling is not empty and stays.
    match root.remove_empty_dir(TRASH_DIR) {
        Ok(_) => {}
        // Not empty; or replaced meanwhile by something not a directory, which the next
        // `delete-trash` removes.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR)
            ) => {}
        Err(e) => return Err(Error::io("remove the trash directory", root.path(), e)),
    }
    Ok(report)
}

fn discard_entries(
    root: &DirFd,
    scaffold: bool,
    env_locks: bool,
    bin: Bin<'_>,
) -> Result<DeleteReport, Error> {
    let mut report = DeleteReport::default();
    let mut names = root
        .entries()
        .ctx("list the cache directory", root.path())?;
    names.sort();
    for name in names {
        if name == LOCK_FILE || name == CLEANS_DIR || name == TRASH_DIR {
            continue;
        }
        let sub = if name == ENVIRONMENTS_DIR || name == BUILDS_DIR {
            match root.open_dir(&name) {
                Ok(dir) => Some(dir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // A link or a file in its place: not the cache's directory.
                Err(e) if safe_fs::is_not_dir(&e) => None,
                Err(e) => return Err(Error::io("open the directory", root.child_path(&name), e)),
            }
        } else {
            None
        };
        match sub {
            Some(envs) if name == ENVIRONMENTS_DIR => {
                delete_environments(root, &envs, env_locks, bin, &mut report)?;
                drop(envs);
                if scaffold && !env_locks {
                    bin.discard(root, &name, &mut report)?;
                }
            }
            Some(builds) => {
                delete_builds(root, &builds, env_locks, bin, &mut report)?;
                drop(builds);
                if scaffold && !env_locks {
                    bin.discard(root, &name, &mut report)?;
                }
            }
            None if scaffold => bin.discard(root, &name, &mut report)?,
            None => {}
        }
    }
    Ok(report)
}

/// Deletes the builds under `builds/`. With `env_locks`, a build is deleted only while
/// the lock of the environment it is for is held exclusive (taken without waiting): a
/// run builds under that lock, so a busy one means the build is in progress. A build
/// whose environment lock is a link (or not a regular file) is kept.
fn delete_builds(
    root: &DirFd,
    builds: &DirFd,
    env_locks: bool,
    bin: Bin<'_>,
    report: &mut DeleteReport,
) -> Result<(), Error> {
    let mut names = builds.entries().ctx("list the builds in", builds.path())?;
    names.sort();
    for name in names {
        let text = name.to_string_lossy().into_owned();
        let owner = text.split_once(BUILD_INFIX).map(|(env, _)| env.to_string());
        match owner {
            Some(env) if env_locks && !env.is_empty() => {
                let envs = match root.open_dir(ENVIRONMENTS_DIR) {
                    Ok(envs) => Some(envs),
                    Err(e) if e.kind() == io::ErrorKind::NotFound || safe_fs::is_not_dir(&e) => {
                        None
                    }
                    Err(e) => {
                        return Err(Error::io(
                            "open the directory",
                            root.child_path(ENVIRONMENTS_DIR.as_ref()),
                            e,
                        ));
                    }
                };
                let lock_name = format!("{env}.lock");
                let lock = match &envs {
                    None => None,
                    Some(envs) => match open_lock_at(envs, &lock_name, false) {
                        Ok(lock) => lock,
                        Err(e) if e.kind() == io::ErrorKind::InvalidInput => continue,
                        Err(e) => {
                            return Err(Error::io(
                                "open the lock file",
                                envs.child_path(lock_name.as_ref()),
                                e,
                            ));
                        }
                    },
                };
                let Some(mut lock) = lock else {
                    bin.discard(builds, &name, report)?;
                    continue;
                };
                if lock.try_lock(Mode::Exclusive)? == TryLock::Acquired {
                    bin.discard(builds, &name, report)?;
                }
            }
            _ => bin.discard(builds, &name, report)?,
        }
    }
    Ok(())
}

fn delete_environments(
    root: &DirFd,
    envs: &DirFd,
    env_locks: bool,
    bin: Bin<'_>,
    report: &mut DeleteReport,
) -> Result<(), Error> {
    let mut names = envs
        .entries()
        .ctx("list the environments in", envs.path())?;
    names.sort();
    for name in names {
        let text = name.to_string_lossy().into_owned();
        if text.ends_with(".lock") {
            if !env_locks {
                bin.discard(envs, &name, report)?;
            }
            continue;
        }
        if !env_locks {
            remove_env(root, envs, &name, bin, report)?;
            continue;
        }
        let lock_name = format!("{text}.lock");
        let mut lock = match open_lock_at(envs, &lock_name, true) {
            Ok(Some(lock)) => lock,
            // Not a regular file (a link): no lock can be honoured, so the environment
            // is treated as in use and kept.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                report.skipped.push(text);
                continue;
            }
            Ok(None) => continue,
            Err(e) => {
                return Err(Error::io(
                    "open the lock file",
                    envs.child_path(lock_name.as_ref()),
                    e,
                ));
            }
        };
        match lock.try_lock(Mode::Exclusive)? {
            TryLock::Acquired => {
                tracing::debug!(env = %text, "deleting environment under its exclusive lock");
                remove_env(root, envs, &name, bin, report)?;
                crate::faults::pause("env-deleted");
                // Closing the descriptor releases the lock after the deletion.
                drop(lock);
            }
            TryLock::Busy => report.skipped.push(text),
        }
    }
    Ok(())
}

/// Removes the environment `name` (in the environments directory `envs` of the cache
/// `root`) so that nobody ever finds it half deleted: it is first renamed, in one step
/// (`renameat` between the two directories' descriptors), to a build of its environment
/// (`builds/<name>.build-trash-…`), then deleted there. A run sees the environment whole
/// or not at all; a clean killed meanwhile leaves a build that the next clean or prune
/// deletes (under the environment's lock, like any build). If the rename is impossible,
/// the marker goes first, so that what is left is never reused as an environment.
fn remove_env(
    root: &DirFd,
    envs: &DirFd,
    name: &OsStr,
    bin: Bin<'_>,
    report: &mut DeleteReport,
) -> Result<(), Error> {
    // Into the trash: one rename, whole or not at all, as below (failing that, deleted
    // in place, marker first, as below).
    if bin.moved(envs, name) {
        return Ok(());
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if let Ok(builds) = root.open_dir(BUILDS_DIR) {
        let trash = format!(
            "{}{BUILD_INFIX}trash-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        match envs.rename(name, &builds, &trash) {
            Ok(()) => return remove_tree(&builds, trash.as_ref(), report),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && envs
                        .stat_entry(name)
                        .is_err_and(|e| e.kind() == io::ErrorKind::NotFound) =>
            {
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(path = %envs.child_path(name).display(), "could not move to the trash: {e}");
            }
        }
    }
    if let Ok(env) = envs.open_dir(name) {
        remove_tree(&env, ENV_MARKER.as_ref(), report)?;
    }
    remove_tree(envs, name, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_never_follows_links_out_of_the_cache() -> Result<(), Error> {
        let outside = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        fs::write(outside.path().join("precious"), "x").ctx("write", outside.path())?;
        let cache = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        create_scaffold(cache.path())?;
        let env = cache.path().join(ENVIRONMENTS_DIR).join("e");
        fs::create_dir_all(&env).ctx("mkdir", &env)?;
        std::os::unix::fs::symlink(outside.path(), env.join("link")).ctx("link", &env)?;
        let report = delete_entries(cache.path(), true, false)?;
        assert!(report.skipped.is_empty());
        assert!(outside.path().join("precious").exists());
        assert!(!env.exists());
        Ok(())
    }

    #[test]
    fn a_wide_tree_with_links_is_deleted_and_counted_exactly() -> Result<(), Error> {
        let cache = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        create_scaffold(cache.path())?;
        let data = cache.path().join("data");
        let (dirs, per_dir, size) = (9u64, 7u64, 5u64);
        for d in 0..dirs {
            let sub = data.join(format!("d{d}")).join("deeper");
            fs::create_dir_all(&sub).ctx("mkdir", &sub)?;
            for f in 0..per_dir {
                fs::write(sub.join(format!("f{f}")), [0u8; 5]).ctx("write", &sub)?;
            }
            std::os::unix::fs::symlink("/", data.join(format!("d{d}/root-link")))
                .ctx("link", &data)?;
        }
        let dir = DirFd::open_root(cache.path()).ctx("open", cache.path())?;
        let mut removed = Removed::default();
        dir.remove_tree("data", &mut removed)?;
        assert!(!data.exists());
        assert_eq!(removed.files, dirs * (per_dir + 1), "files and links");
        assert!(removed.bytes >= dirs * per_dir * size);
        assert!(
            Path::new("/etc").exists(),
            "links are removed, not followed"
        );
        Ok(())
    }

    #[test]
    fn refuses_to_clean_a_directory_that_is_not_a_cache() -> Result<(), Error> {
        let dir = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        fs::write(dir.path().join("thesis.tex"), "x").ctx("write", dir.path())?;
        let err = check_cleanable(dir.path()).unwrap_err();
        assert!(err.to_string().contains("CACHEDIR.TAG"), "{err}");
        assert!(check_cleanable(Path::new("/")).is_err());
        // What a clean killed after `move-to-trash` leaves is still a cache.
        let left = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        fs::write(left.path().join(LOCK_FILE), "").ctx("write", left.path())?;
        fs::create_dir_all(left.path().join(TRASH_DIR).join("clean-x"))
            .ctx("mkdir", left.path())?;
        check_cleanable(left.path())?;
        Ok(())
    }

    /// A cache with an environment, a build and scaffold entries, one of them a link to
    /// `outside`.
    fn filled_cache(outside: &Path) -> Result<tempfile::TempDir, Error> {
        let cache = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        create_scaffold(cache.path())?;
        let env = cache.path().join(ENVIRONMENTS_DIR).join("e");
        fs::create_dir_all(&env).ctx("mkdir", &env)?;
        fs::write(env.join("payload"), "12345").ctx("write", &env)?;
        std::os::unix::fs::symlink(outside, env.join("link")).ctx("link", &env)?;
        let wheels = cache.path().join("wheels-v5").join("w");
        fs::create_dir_all(&wheels).ctx("mkdir", &wheels)?;
        fs::write(wheels.join("x.whl"), "abc").ctx("write", &wheels)?;
        std::os::unix::fs::symlink(outside, cache.path().join("archive-link"))
            .ctx("link", cache.path())?;
        Ok(cache)
    }

    fn outside_dir() -> Result<tempfile::TempDir, Error> {
        let outside = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        fs::write(outside.path().join("precious"), "x").ctx("write", outside.path())?;
        Ok(outside)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn move_to_trash_empties_the_cache_and_delete_trash_removes_the_trash() -> Result<(), Error> {
        let outside = outside_dir()?;
        let cache = filled_cache(outside.path())?;
        let (own, report) = move_entries_to_trash(cache.path(), true, false)?;
        assert!(report.skipped.is_empty());
        assert_eq!(report.removed_files, 0, "nothing is deleted yet");
        // Only `.lock`-less scaffold is gone: the cache holds the trash and nothing else.
        assert_eq!(names(cache.path()), [TRASH_DIR]);
        let trash = cache.path().join(TRASH_DIR);
        let dirs = names(&trash);
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        assert!(dirs[0].starts_with("clean-"), "{dirs:?}");
        assert!(!names(&trash.join(&dirs[0])).is_empty());
        let report = delete_trash(cache.path(), own)?;
        assert!(!trash.exists(), "a clean leaves no trash of its own behind");
        // payload, env link, x.whl, archive-link, CACHEDIR.TAG, .gitignore at least.
        assert!(report.removed_files >= 6, "{report:?}");
        assert!(report.removed_bytes >= 8, "{report:?}");
        assert!(
            outside.path().join("precious").is_file(),
            "links not followed"
        );
        Ok(())
    }

    #[test]
    fn move_to_trash_keeps_a_locked_environment_and_its_lock() -> Result<(), Error> {
        let outside = outside_dir()?;
        let cache = filled_cache(outside.path())?;
        let envs = cache.path().join(ENVIRONMENTS_DIR);
        fs::create_dir_all(envs.join("busy")).ctx("mkdir", &envs)?;
        let mut lock = LockFile::open_or_create(&envs.join("busy.lock"))?;
        assert_eq!(lock.try_lock(Mode::Shared)?, TryLock::Acquired);
        let (own, report) = move_entries_to_trash(cache.path(), false, true)?;
        assert_eq!(report.skipped, ["busy"]);
        assert!(envs.join("busy").is_dir() && envs.join("busy.lock").is_file());
        assert!(!envs.join("e").exists(), "the unused one is moved");
        assert!(
            cache.path().join("wheels-v5").is_dir(),
            "a prune keeps the scaffold"
        );
        delete_trash(cache.path(), own)?;
        assert!(!cache.path().join(TRASH_DIR).exists());
        assert!(envs.join("busy").is_dir());
        Ok(())
    }

    #[test]
    fn links_planted_in_the_trash_are_removed_never_followed() -> Result<(), Error> {
        let outside = outside_dir()?;
        let cache = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        create_scaffold(cache.path())?;
        let trash = cache.path().join(TRASH_DIR);
        // A killed clean's trash directory holding a link, a link where a trash directory
        // would be, and a link into a directory's place inside one.
        let left = trash.join("clean-killed");
        fs::create_dir_all(left.join("sub")).ctx("mkdir", &left)?;
        std::os::unix::fs::symlink(outside.path(), left.join("link")).ctx("link", &left)?;
        std::os::unix::fs::symlink(outside.path(), left.join("sub").join("deeper"))
            .ctx("link", &left)?;
        std::os::unix::fs::symlink(outside.path(), trash.join("clean-link")).ctx("link", &trash)?;
        std::os::unix::fs::symlink(outside.path().join("precious"), trash.join("file-link"))
            .ctx("link", &trash)?;
        let report = delete_trash(cache.path(), None)?;
        assert!(!trash.exists(), "{:?}", names(&trash));
        assert_eq!(
            report.removed_files, 4,
            "every link is removed (and counted), none followed"
        );
        assert_eq!(names(outside.path()), ["precious"]);
        assert_eq!(
            fs::read_to_string(outside.path().join("precious"))
                .ok()
                .as_deref(),
            Some("x")
        );
        assert!(
            cache.path().join(TAG_FILE).is_file(),
            "the cache itself stays"
        );
        Ok(())
    }

    #[test]
    fn a_trash_that_is_a_link_is_never_followed() -> Result<(), Error> {
        let outside = outside_dir()?;
        // `delete-trash` removes the link itself.
        let cache = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        create_scaffold(cache.path())?;
        let trash = cache.path().join(TRASH_DIR);
        std::os::unix::fs::symlink(outside.path(), &trash).ctx("link", cache.path())?;
        delete_trash(cache.path(), None)?;
        assert!(trash.symlink_metadata().is_err(), "the link is gone");
        assert_eq!(names(outside.path()), ["precious"]);

        // `move-to-trash` moves nothing through it: it removes the link and makes a
        // trash directory of its own.
        let cache = filled_cache(outside.path())?;
        let trash = cache.path().join(TRASH_DIR);
        std::os::unix::fs::symlink(outside.path(), &trash).ctx("link", cache.path())?;
        let (own, _) = move_entries_to_trash(cache.path(), true, false)?;
        assert_eq!(names(outside.path()), ["precious"], "nothing moved outside");
        assert!(trash.symlink_metadata().is_ok_and(|m| m.is_dir()));
        delete_trash(cache.path(), own)?;
        assert!(trash.symlink_metadata().is_err());
        assert_eq!(names(outside.path()), ["precious"]);

        // A file in its place goes the same way.
        let cache = filled_cache(outside.path())?;
        let trash = cache.path().join(TRASH_DIR);
        fs::write(&trash, "not a directory").ctx("write", &trash)?;
        let (own, _) = move_entries_to_trash(cache.path(), true, false)?;
        assert!(trash.is_dir());
        delete_trash(cache.path(), own)?;
        assert!(!trash.exists());
        Ok(())
    }

    #[test]
    fn a_trash_being_filled_is_left_to_its_clean_and_a_killed_ones_is_removed() -> Result<(), Error>
    {
        let outside = outside_dir()?;
        let cache = filled_cache(outside.path())?;
        let trash = cache.path().join(TRASH_DIR);
        // A live clean between its two steps: its trash is locked.
        let (live, _) = move_entries_to_trash(cache.path(), true, false)?;
        let live_dir = names(&trash);
        // Another clean (on a cache refilled meanwhile) deletes only its own.
        fs::write(cache.path().join("more"), "more").ctx("write", cache.path())?;
        let (other, _) = move_entries_to_trash(cache.path(), true, false)?;
        let report = delete_trash(cache.path(), other)?;
        assert_eq!(report.removed_files, 1, "{report:?}");
        assert_eq!(names(&trash), live_dir, "the live clean's trash stays");
        // The live clean is killed: its lock goes with its descriptor. The next
        // `delete-trash` (of a clean with nothing to move) removes what it left.
        drop(live);
        let report = delete_trash(cache.path(), None)?;
        assert!(report.removed_files >= 4, "{report:?}");
        assert!(!trash.exists());
        assert_eq!(names(outside.path()), ["precious"]);
        Ok(())
    }

    #[test]
    fn no_cache_no_trash() -> Result<(), Error> {
        let dir = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        let missing = dir.path().join("cache");
        let (own, report) = move_entries_to_trash(&missing, true, false)?;
        assert!(own.is_none() && report.removed_files == 0);
        assert_eq!(delete_trash(&missing, None)?.removed_files, 0);
        assert!(!missing.exists());
        Ok(())
    }
}
