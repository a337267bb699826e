//! A clean's announcement (`<cache>/.cleans/<pid>-<suffix>`): published already locked
//! exclusive (`announce-clean`), so that runs starting from then on wait for the clean
//! (`await-announced-cleans`), and withdrawn when the clean ends
//! (`withdraw-announcement`, or the drop of [`Announcement`]).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use cachelock_model::Mode;

use crate::cache::{self, CLEANS_DIR};
use crate::error::{Error, IoContext};
use crate::faults;
use crate::lockfile::{LockFile, TryLock};
use crate::safe_fs::DirFd;

/// A clean's announcement: a file in `.cleans/`, locked exclusive before it was visible.
/// Dropping it withdraws it: unlink first (no new waiter can find it), then close. The
/// unlink is relative to the descriptor of the `.cleans/` it was created in.
#[derive(Debug)]
pub struct Announcement {
    dir: DirFd,
    name: OsString,
    path: PathBuf,
    lock: Option<LockFile>,
}

impl Announcement {
    /// Where it is published.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Withdraws it: unlinks the file, then unlocks and closes it (what the drop does,
    /// with the error told).
    pub(crate) fn withdraw(&mut self) -> Result<(), Error> {
        self.dir
            .remove_file(&self.name)
            .ctx("remove the clean announcement", &self.path)?;
        if let Some(mut lock) = self.lock.take() {
            lock.unlock()?;
        }
        // `.cleans/` is cachelock's, not uv's: leave none behind on a uv cache. Only an
        // empty one goes (another clean's announcement keeps it), and a clean announcing
        // itself meanwhile makes it again (`announce`).
        if let Some(root) = self.path.parent().and_then(Path::parent)
            && let Ok(root) = DirFd::open_root(root)
        {
            let _ = root.remove_empty_dir(CLEANS_DIR);
        }
        Ok(())
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = self.withdraw();
    }
}

/// Publishes an announcement: created and locked under a temporary name, then renamed, so
/// that it is never visible unlocked. Everything happens relative to the descriptor of
/// `.cleans/`, opened from the root's without following a link.
pub(crate) fn announce(root: &Path) -> Result<Announcement, Error> {
    // Another clean withdrawing its announcement removes `.cleans/` when it is empty, at
    // any moment until our own file is in it. An announcement made in a directory removed
    // meanwhile is visible to nobody, so it is made again in the one `.cleans` names now
    // (a bounded number of times: each retry means another clean finished in between).
    let mut tries = 0;
    loop {
        match announce_once(root)? {
            Some(announcement) => return Ok(announcement),
            None if tries < 100 => tries += 1,
            None => {
                return Err(Error::io(
                    "publish the clean announcement in",
                    root.join(CLEANS_DIR),
                    std::io::Error::other("the directory kept being removed by other cleans"),
                ));
            }
        }
    }
}

/// One try of [`announce`]; `None` if `.cleans/` was removed under it.
fn announce_once(root: &Path) -> Result<Option<Announcement>, Error> {
    fs::create_dir_all(root).ctx("create the cache directory", root)?;
    let top = DirFd::open_root(root).ctx("open the cache directory", root)?;
    let dir = match top.open_or_create_dir(CLEANS_DIR) {
        Ok(dir) => dir,
        // Made, then removed by a clean withdrawing its own announcement.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("create the directory", root.join(CLEANS_DIR), e)),
    };
    remove_stale_announcements(&dir)?;
    // Readable by all: other users' runs lock it shared to wait for this clean.
    let (file, temp) = match dir.create_unique_file(".tmp", 0o644) {
        Ok(made) => made,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("create a clean announcement in", dir.path(), e)),
    };
    file.try_lock().map_err(|e| {
        Error::io(
            "lock the clean announcement",
            dir.child_path(&temp),
            e.into(),
        )
    })?;
    let suffix = temp
        .to_string_lossy()
        .trim_start_matches(".tmp")
        .to_string();
    let name = OsString::from(format!("{}-{suffix}", std::process::id()));
    let path = dir.child_path(&name);
    if let Err(e) = dir.rename_noreplace(&temp, &dir, &name) {
        let _ = dir.remove_file(&temp);
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(Error::io("publish the clean announcement", &path, e));
    }
    faults::pause("announcement-published");
    // Published only if `.cleans` still names the directory it is in.
    let live = top
        .stat_entry(CLEANS_DIR)
        .ok()
        .zip(dir.stat().ok())
        .is_some_and(|(now, ours)| now.st_dev == ours.st_dev && now.st_ino == ours.st_ino);
    if !live {
        let _ = dir.remove_file(&name);
        return Ok(None);
    }
    Ok(Some(Announcement {
        lock: Some(LockFile::from_locked(file, path.clone(), Mode::Exclusive)),
        dir,
        name,
        path,
    }))
}

/// Removes announcements whose clean has gone without withdrawing them (killed): an
/// announcement is locked before it gets its name, so one that can be locked exclusive
/// now belongs to nobody. One that a run is waiting on is busy and stays.
fn remove_stale_announcements(dir: &DirFd) -> Result<(), Error> {
    let names = dir
        .entries()
        .ctx("list the clean announcements in", dir.path())?;
    for name in names {
        let text = name.to_string_lossy().into_owned();
        if text.starts_with(".tmp") {
            continue;
        }
        // Not a regular file (a link): not an announcement; left alone.
        let Ok(Some(mut lock)) = cache::open_lock_at(dir, &text, false) else {
            continue;
        };
        if lock.try_lock(Mode::Exclusive)? == TryLock::Acquired {
            tracing::debug!(path = %dir.child_path(&name).display(), "removing a stale clean announcement");
            let _ = dir.remove_file(&name);
        }
    }
    Ok(())
}
