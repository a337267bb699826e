//! `cachelock status`: who holds or waits for the locks of a cache, its size and the free
//! space on its file system. Works on any cache that uses flock(2), a uv cache included.
//!
//! Locks come from `/proc/locks`, matched to the cache's files by inode. "Since" is how
//! long the holding process has been running: `/proc/locks` does not record when a lock
//! was taken.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cachelock_model::Mode;

use crate::procinfo;
use cachelock::error::Error;

/// One process holding or waiting for a lock on a file of the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    /// The pid that took (or waits for) the lock.
    pub pid: u32,
    /// Its command line, `None` if it has exited (a child that inherited the descriptor
    /// holds the lock then).
    pub cmdline: Option<String>,
    /// The lock mode.
    pub mode: Mode,
    /// True if the process is still waiting for the lock.
    pub waiting: bool,
    /// The locked file, relative to the cache root.
    pub file: PathBuf,
    /// How long the process has been running.
    pub running_for: Option<Duration>,
    /// True if this process did not take the lock but holds it through a descriptor it
    /// inherited (a run's child holding its environment lock, say).
    pub inherited: bool,
}

/// The state of a cache.
#[derive(Clone, Debug)]
pub struct Status {
    /// The cache root.
    pub root: PathBuf,
    /// False if the root does not exist (nothing else is filled in then).
    pub exists: bool,
    /// Total size of the cache's files (hard links counted once).
    pub size_bytes: u64,
    /// Number of files.
    pub files: u64,
    /// Free space for unprivileged users on the cache's file system.
    pub available_bytes: Option<u64>,
    /// Lock holders and waiters, holders first.
    pub locks: Vec<LockHolder>,
    /// Temporary caches (`--no-cache`) in `$TMPDIR` whose run was killed before removing
    /// them (see `cache::leaked_temp_caches`); `cachelock prune` removes them.
    pub leaked_temp_caches: Vec<PathBuf>,
}

/// Inspects the cache at `root`; never takes a lock and never blocks.
pub fn status(root: &Path) -> Result<Status, Error> {
    let root = std::path::absolute(root).map_err(|e| Error::io("resolve", root, e))?;
    let mut st = Status {
        root: root.clone(),
        exists: root.is_dir(),
        size_bytes: 0,
        files: 0,
        available_bytes: None,
        locks: Vec::new(),
        leaked_temp_caches: cachelock::cache::leaked_temp_caches(&std::env::temp_dir()),
    };
    if !st.exists {
        return Ok(st);
    }
    st.available_bytes = fs4::available_space(&root).ok();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    walk(&root, &root, &mut inodes, &mut st);
    for line in procinfo::lock_lines() {
        if let Some(file) = inodes.get(&line.inode) {
            st.locks.push(LockHolder {
                pid: line.pid,
                cmdline: procinfo::cmdline(line.pid),
                mode: line.mode,
                waiting: line.waiting,
                file: file.clone(),
                running_for: procinfo::running_for(line.pid),
                inherited: false,
            });
        }
    }
    // Processes holding a lock through an inherited descriptor: /proc/locks names only
    // the process that took it.
    let held: HashMap<u64, Mode> = procinfo::lock_lines()
        .into_iter()
        .filter(|l| !l.waiting && inodes.contains_key(&l.inode))
        .map(|l| (l.inode, l.mode))
        .collect();
    let locked: std::collections::HashSet<u64> = held.keys().copied().collect();
    for (inode, pid) in procinfo::openers(&locked) {
        let file = &inodes[&inode];
        if st.locks.iter().any(|l| l.pid == pid && &l.file == file) {
            continue;
        }
        st.locks.push(LockHolder {
            pid,
            cmdline: procinfo::cmdline(pid),
            mode: held[&inode],
            waiting: false,
            file: file.clone(),
            running_for: procinfo::running_for(pid),
            inherited: true,
        });
    }
    st.locks
        .sort_by(|a, b| (a.waiting, &a.file, a.pid).cmp(&(b.waiting, &b.file, b.pid)));
    Ok(st)
}

fn walk(root: &Path, dir: &Path, inodes: &mut HashMap<u64, PathBuf>, st: &mut Status) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, inodes, st);
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if inodes.insert(meta.ino(), rel).is_none() {
                st.files += 1;
                st.size_bytes += meta.len();
            }
        }
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cache: {}", self.root.display())?;
        if !self.leaked_temp_caches.is_empty() {
            writeln!(
                f,
                "leaked temporary caches: {} (their run was killed; `cachelock prune` removes them)",
                self.leaked_temp_caches.len()
            )?;
            for dir in &self.leaked_temp_caches {
                writeln!(f, "  {}", dir.display())?;
            }
        }
        if !self.exists {
            return writeln!(f, "No cache found at: {}", self.root.display());
        }
        write!(
            f,
            "size: {} in {} files",
            human(self.size_bytes),
            self.files
        )?;
        match self.available_bytes {
            Some(free) => writeln!(f, "; free space: {}", human(free))?,
            None => writeln!(f)?,
        }
        if self.locks.is_empty() {
            return writeln!(f, "locks: none (nobody is using the cache)");
        }
        writeln!(f, "locks:")?;
        for l in &self.locks {
            let mode = match l.mode {
                Mode::Shared => "shared",
                Mode::Exclusive => "exclusive",
            };
            let state = match (l.waiting, l.inherited) {
                (true, _) => "waits for",
                (false, false) => "holds",
                (false, true) => "holds (inherited descriptor)",
            };
            let since = l
                .running_for
                .map(|d| format!(", running for {}s", d.as_secs()))
                .unwrap_or_default();
            let cmd = l
                .cmdline
                .as_deref()
                .unwrap_or("(exited; the lock is held by a child that inherited it)");
            writeln!(
                f,
                "  pid {} {state} {mode} lock on {}{since}: {cmd}",
                l.pid,
                l.file.display()
            )?;
        }
        Ok(())
    }
}
