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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cachelock_model::Mode;

use crate::error::{Error, IoContext};
use crate::lockfile::{LockFile, TryLock};

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

/// Names that a cache leaves behind after a clean: a directory holding only these is
/// still taken for a cache.
const LEFTOVER_NAMES: [&str; 5] = [
    LOCK_FILE,
    CLEANS_DIR,
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

/// Creates the root and its scaffold; what exists already is kept.
pub fn create_scaffold(root: &Path) -> Result<(), Error> {
    for dir in [
        root.to_path_buf(),
        root.join(ENVIRONMENTS_DIR),
        root.join(BUILDS_DIR),
    ] {
        fs::create_dir_all(&dir).ctx("create the directory", &dir)?;
    }
    for (name, text) in [(TAG_FILE, TAG_TEXT), (".gitignore", "*\n")] {
        let path = root.join(name);
        if fs::symlink_metadata(&path).is_err() {
            fs::write(&path, text).ctx("write", &path)?;
        }
    }
    Ok(())
}

/// Locks a temporary cache as its run's own: `<temp>/.lock` is created already locked
/// shared (locked under a temporary name, then renamed into place), so that it is never
/// seen unlocked while the run lives. The run holds the returned descriptor until its
/// temporary cache is removed; if the run is killed, the lock goes with it and the cache
/// is recognisably leaked ([`leaked_temp_caches`]).
pub fn lock_temp_cache(temp: &Path) -> Result<LockFile, Error> {
    let file = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(temp)
        .ctx("create the lock file of the temporary cache in", temp)?;
    file.as_file()
        .try_lock_shared()
        .map_err(|e| Error::io("lock", file.path(), e.into()))?;
    let path = temp.join(LOCK_FILE);
    let file = file
        .persist_noclobber(&path)
        .map_err(|e| Error::io("create the lock file", &path, e.error))?;
    Ok(LockFile::from_locked(file, path, Mode::Shared))
}

/// The temporary caches in `tmp` (`$TMPDIR`) whose run has gone without removing them:
/// a directory (not a link) named `.tmp*`, owned by this user, holding a `CACHEDIR.TAG`
/// written by cachelock and a `.lock` that nobody holds. A temporary cache without
/// `.lock` is never reported: nothing tells a live one from a leaked one.
pub fn leaked_temp_caches(tmp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.path())
        .filter(|p| is_ours_and_unlocked(p).is_some())
        .collect();
    found.sort();
    found
}

/// If `dir` is a leaked temporary cache of ours, the exclusive lock that proves nobody
/// uses it (held as long as the value lives).
fn is_ours_and_unlocked(dir: &Path) -> Option<LockFile> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir).ok()?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return None;
    }
    let tag = dir.join(TAG_FILE);
    let tag_meta = fs::symlink_metadata(&tag).ok()?;
    if !tag_meta.is_file() || tag_meta.len() > 4096 || fs::read_to_string(&tag).ok()? != TAG_TEXT {
        return None;
    }
    let lock_path = dir.join(LOCK_FILE);
    if !fs::symlink_metadata(&lock_path).ok()?.is_file() {
        return None;
    }
    let mut lock = LockFile::open_existing(&lock_path).ok()??;
    (lock.try_lock(Mode::Exclusive).ok()? == TryLock::Acquired).then_some(lock)
}

/// Removes the leaked temporary caches in `tmp` ([`leaked_temp_caches`]), each while
/// holding its lock exclusive; returns what was removed.
pub fn remove_leaked_temp_caches(tmp: &Path) -> Result<Vec<(PathBuf, DeleteReport)>, Error> {
    let mut removed = Vec::new();
    for dir in leaked_temp_caches(tmp) {
        // Checked again under the lock that is held while deleting.
        let Some(lock) = is_ours_and_unlocked(&dir) else {
            continue;
        };
        let mut report = DeleteReport::default();
        remove_tree(&dir, &mut report)?;
        drop(lock);
        removed.push((dir, report));
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
    /// Environments kept because they are in use (their lock was busy).
    pub skipped: Vec<String>,
}

/// Deletes the cache's entries: environments and builds, and with `scaffold` (clean, not
/// prune) everything else except `.lock` and `.cleans/`. With `env_locks`, an environment
/// is deleted only while its lock is held exclusive, taken without waiting; a busy one
/// is skipped and reported, and environment lock files are kept.
pub fn delete_entries(root: &Path, scaffold: bool, env_locks: bool) -> Result<DeleteReport, Error> {
    let mut report = DeleteReport::default();
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io("list the cache directory", root, e)),
    };
    for entry in entries {
        let entry = entry.ctx("list the cache directory", root)?;
        let name = entry.file_name();
        let path = entry.path();
        let is_real_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if name == LOCK_FILE || name == CLEANS_DIR {
            continue;
        }
        if name == ENVIRONMENTS_DIR && is_real_dir {
            delete_environments(&path, env_locks, &mut report)?;
            if scaffold && !env_locks {
                remove_tree(&path, &mut report)?;
            }
        } else if name == BUILDS_DIR && is_real_dir {
            delete_builds(root, &path, env_locks, &mut report)?;
            if scaffold && !env_locks {
                remove_tree(&path, &mut report)?;
            }
        } else if scaffold {
            remove_tree(&path, &mut report)?;
        }
    }
    Ok(report)
}

/// Deletes the builds under `builds/`. With `env_locks`, a build is deleted only while
/// the lock of the environment it is for is held exclusive (taken without waiting): a
/// run builds under that lock, so a busy one means the build is in progress.
fn delete_builds(
    root: &Path,
    builds: &Path,
    env_locks: bool,
    report: &mut DeleteReport,
) -> Result<(), Error> {
    for build in fs::read_dir(builds).ctx("list the builds in", builds)? {
        let build = build.ctx("list the builds in", builds)?;
        let name = build.file_name().to_string_lossy().into_owned();
        let owner = name.split_once(BUILD_INFIX).map(|(env, _)| env.to_string());
        match owner {
            Some(env) if env_locks && !env.is_empty() => {
                let lock_path = root.join(ENVIRONMENTS_DIR).join(format!("{env}.lock"));
                let Some(mut lock) = LockFile::open_existing(&lock_path)? else {
                    remove_tree(&build.path(), report)?;
                    continue;
                };
                if lock.try_lock(Mode::Exclusive)? == TryLock::Acquired {
                    remove_tree(&build.path(), report)?;
                }
            }
            _ => remove_tree(&build.path(), report)?,
        }
    }
    Ok(())
}

fn delete_environments(
    dir: &Path,
    env_locks: bool,
    report: &mut DeleteReport,
) -> Result<(), Error> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .ctx("list the environments in", dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let text = name.to_string_lossy().into_owned();
        if text.ends_with(".lock") {
            if !env_locks {
                remove_tree(&path, report)?;
            }
            continue;
        }
        if !env_locks {
            remove_env(dir, &path, &text, report)?;
            continue;
        }
        let lock_path = dir.join(format!("{text}.lock"));
        let mut lock = LockFile::open_or_create(&lock_path)?;
        match lock.try_lock(Mode::Exclusive)? {
            TryLock::Acquired => {
                tracing::debug!(env = %text, "deleting environment under its exclusive lock");
                remove_env(dir, &path, &text, report)?;
                crate::faults::pause("env-deleted");
                // Closing the descriptor releases the lock after the deletion.
                drop(lock);
            }
            TryLock::Busy => report.skipped.push(text),
        }
    }
    Ok(())
}

/// Removes the environment `path` (named `name`, in the environments directory `dir`)
/// so that nobody ever finds it half deleted: it is first renamed, in one step, to a
/// build of its environment (`builds/<name>.build-trash-…`), then deleted there. A run
/// sees the environment whole or not at all; a clean killed meanwhile leaves a build
/// that the next clean or prune deletes (under the environment's lock, like any build).
/// If the rename is impossible, the marker goes first, so that what is left is never
/// reused as an environment.
fn remove_env(dir: &Path, path: &Path, name: &str, report: &mut DeleteReport) -> Result<(), Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let builds = dir.parent().map(|root| root.join(BUILDS_DIR));
    if let Some(builds) = builds
        && fs::symlink_metadata(&builds).is_ok_and(|m| m.is_dir())
    {
        let trash = builds.join(format!(
            "{name}{BUILD_INFIX}trash-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(path, &trash) {
            Ok(()) => return remove_tree(&trash, report),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !path.exists() => return Ok(()),
            Err(e) => {
                tracing::debug!(path = %path.display(), "could not move to the trash: {e}");
            }
        }
    }
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        remove_tree(&path.join(ENV_MARKER), report)?;
    }
    remove_tree(path, report)
}

/// Removes a file, a link or a directory tree; never follows links; tolerates entries
/// that vanish meanwhile.
pub fn remove_tree(path: &Path, report: &mut DeleteReport) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    if meta.is_dir() {
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list", path, e)),
        };
        for entry in entries {
            let entry = entry.ctx("list", path)?;
            remove_tree(&entry.path(), report)?;
        }
        match fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove the directory", path, e)),
        }
    } else {
        match fs::remove_file(path) {
            Ok(()) => {
                report.removed_files += 1;
                report.removed_bytes += meta.len();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }
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
    fn refuses_to_clean_a_directory_that_is_not_a_cache() -> Result<(), Error> {
        let dir = tempfile::tempdir().ctx("tempdir", Path::new("/tmp"))?;
        fs::write(dir.path().join("thesis.tex"), "x").ctx("write", dir.path())?;
        let err = check_cleanable(dir.path()).unwrap_err();
        assert!(err.to_string().contains("CACHEDIR.TAG"), "{err}");
        assert!(check_cleanable(Path::new("/")).is_err());
        Ok(())
    }
}
