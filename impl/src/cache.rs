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
        if !LEFTOVER_NAMES.iter().any(|n| name == *n) {
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
            remove_tree(&path, report)?;
            continue;
        }
        let lock_path = dir.join(format!("{text}.lock"));
        let mut lock = LockFile::open_or_create(&lock_path)?;
        match lock.try_lock(Mode::Exclusive)? {
            TryLock::Acquired => {
                tracing::debug!(env = %text, "deleting environment under its exclusive lock");
                remove_tree(&path, report)?;
                // Closing the descriptor releases the lock after the deletion.
                drop(lock);
            }
            TryLock::Busy => report.skipped.push(text),
        }
    }
    Ok(())
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
