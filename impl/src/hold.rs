//! `cachelock hold`: hold a cache's root lock while a command runs, e.g. to archive a uv
//! cache while no uv process can clean it (`--shared`), or to keep every uv process out
//! of it (`--exclusive`).
//!
//! The lock is taken on `<root>/.lock` (created like uv creates it) before the command
//! starts and released only after it has exited; the command does not inherit it.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use cachelock_model::Mode;

use crate::cache::LOCK_FILE;
use crate::child;
use crate::error::{Error, IoContext};
use crate::lockfile::{LockFile, Observer, process_list};

/// Holds the root lock of `root` in `mode` while `command` runs; returns its exit code.
pub fn hold(
    root: &Path,
    mode: Mode,
    command: &[OsString],
    timeout: Option<Duration>,
    observer: &dyn Observer,
) -> Result<i32, Error> {
    std::fs::create_dir_all(root).ctx("create the cache directory", root)?;
    // Field order of the two locals below does not matter: `child` is waited for
    // explicitly before `lock` goes out of scope, and its guard waits on any early exit.
    let mut lock = LockFile::open_or_create(&root.join(LOCK_FILE))?;
    lock.lock_observed(
        mode,
        timeout,
        &|pids| format!("cache is in use by {}; waiting…", process_list(pids)),
        observer,
    )?;
    tracing::info!(?mode, "holding the cache lock");
    let mut child = child::spawn(command, &[], &[], true)?;
    let code = child.wait()?;
    drop(child);
    drop(lock);
    Ok(code)
}
