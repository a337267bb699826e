//! `cachelock status`: who holds the locks of a cache, who waits for them and for whom,
//! which processes keep each lock alive, and what to do about a hang; plus the cache's
//! size and free space. Works on any cache that uses flock(2), a uv cache included.
//!
//! Locks come from `/proc/locks` (through `cachelock_inspect`), matched to the cache's files by
//! inode; a waiter is a `->` line there (cachelock's waits block in flock(2), as uv's do).
//! A waiter waits for every holder of the same file whose mode conflicts with its own.
//! The kernel does not record when a lock was taken: a holder has held it for at most
//! its process's age, which is what is shown.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cachelock::Mode;
use cachelock::error::Error;

use cachelock_inspect::{locks, process, wait};

/// One process holding or waiting for a lock on a file of the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    /// The pid that took (or waits for) the lock, or holds it through a descriptor.
    pub pid: u32,
    /// Its arguments, `None` if it has exited.
    pub argv: Option<Vec<String>>,
    /// The lock mode.
    pub mode: Mode,
    /// True if the process is still waiting for the lock.
    pub waiting: bool,
    /// The locked file, relative to the cache root.
    pub file: PathBuf,
    /// How long the process has been running (an upper bound on how long it has held).
    pub running_for: Option<Duration>,
    /// True if this process did not take the lock but holds it through a descriptor it
    /// inherited (a run's child holding its environment lock, say).
    pub inherited: bool,
    /// For a waiter: the pids it waits for (holders of the file in a conflicting mode).
    pub waits_for: Vec<u32>,
    /// For a holder: its descendants, which keep it running (and so holding), as
    /// (depth, pid, arguments).
    pub children: Vec<(usize, u32, Vec<String>)>,
}

impl LockHolder {
    fn command(&self) -> String {
        self.argv.as_deref().map_or_else(
            || "(exited; the lock is held by a process that inherited it)".to_string(),
            process::shell_join,
        )
    }
}

/// What the root path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// A directory: the cache.
    Directory,
    /// Nothing there.
    Missing,
    /// Something else (a file, say).
    NotADirectory,
}

/// The state of a cache.
#[derive(Clone, Debug)]
pub struct Status {
    /// The cache root.
    pub root: PathBuf,
    /// Where the root came from (`--cache-dir`, `UV_CACHE_DIR`, …).
    pub source: String,
    /// What is at the root (nothing else is filled in unless it is a directory).
    pub found: Found,
    /// Total size of the cache's files and links, each name counted (as `clean` counts
    /// what it removes).
    pub size_bytes: u64,
    /// Number of files and links, each name counted (as `clean` counts them).
    pub files: u64,
    /// Free space for unprivileged users on the cache's file system.
    pub available_bytes: Option<u64>,
    /// Lock holders and waiters, holders first.
    pub locks: Vec<LockHolder>,
    /// Temporary caches (`--no-cache`) in `$TMPDIR` whose run was killed before removing
    /// them (see `cache::leaked_temp_caches`); `cachelock prune` removes them.
    pub leaked_temp_caches: Vec<PathBuf>,
    /// One line per waiter: which process to stop, and whether cachelock's policy would
    /// have waited.
    pub remedies: Vec<String>,
    /// The `/proc/locks` entries on the cache's files, as read (shown with `-v`).
    pub raw: Vec<String>,
    /// How many flock(2) entries `/proc/locks` had in all (shown with `-v`).
    pub flock_lines: usize,
}

/// Inspects the cache at `root`; never takes a lock and never blocks.
pub fn status(root: &Path, source: &str) -> Result<Status, Error> {
    let root = std::path::absolute(root).map_err(|e| Error::io("resolve", root, e))?;
    let found = match fs::metadata(&root) {
        Ok(m) if m.is_dir() => Found::Directory,
        Ok(_) => Found::NotADirectory,
        Err(_) => Found::Missing,
    };
    let mut st = Status {
        root: root.clone(),
        source: source.to_string(),
        found,
        size_bytes: 0,
        files: 0,
        available_bytes: None,
        locks: Vec::new(),
        leaked_temp_caches: cachelock::cache::leaked_temp_caches(&std::env::temp_dir()),
        remedies: Vec::new(),
        raw: Vec::new(),
        flock_lines: 0,
    };
    if found != Found::Directory {
        return Ok(st);
    }
    st.available_bytes = fs4::available_space(&root).ok();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    walk(&root, &root, &mut inodes, &mut st);
    let lines = locks::flocks();
    st.flock_lines = lines.len();
    for line in &lines {
        if let Some(file) = inodes.get(&line.inode) {
            st.raw.push(format!(
                "{}FLOCK {} pid {} inode {} = {}",
                if line.waiting { "-> " } else { "" },
                if line.mode == Mode::Shared {
                    "READ"
                } else {
                    "WRITE"
                },
                line.pid,
                line.inode,
                file.display()
            ));
        }
    }
    for line in &lines {
        if let Some(file) = inodes.get(&line.inode)
            && !st
                .locks
                .iter()
                .any(|l| l.pid == line.pid && &l.file == file && l.waiting == line.waiting)
        {
            st.locks
                .push(entry(line.pid, line.mode, line.waiting, file, false));
        }
    }
    // Processes holding a lock through an inherited descriptor: /proc/locks names only
    // the process that took it.
    let held: HashMap<u64, Mode> = lines
        .iter()
        .filter(|l| !l.waiting && inodes.contains_key(&l.inode))
        .map(|l| (l.inode, l.mode))
        .collect();
    let locked: HashSet<u64> = held.keys().copied().collect();
    for (inode, pid) in wait::lockers_through_descriptors(&locked) {
        let file = &inodes[&inode];
        if st
            .locks
            .iter()
            .any(|l| l.pid == pid && &l.file == file && !l.waiting)
        {
            continue;
        }
        st.locks.push(entry(pid, held[&inode], false, file, true));
    }
    link_waiters(&mut st.locks);
    add_children(&mut st.locks);
    st.locks
        .sort_by(|a, b| (a.waiting, &a.file, a.pid).cmp(&(b.waiting, &b.file, b.pid)));
    st.remedies = remedies(&st.locks);
    Ok(st)
}

fn entry(pid: u32, mode: Mode, waiting: bool, file: &Path, inherited: bool) -> LockHolder {
    LockHolder {
        pid,
        argv: process::argv(pid),
        mode,
        waiting,
        file: file.to_path_buf(),
        running_for: process::running_for(pid),
        inherited,
        waits_for: Vec::new(),
        children: Vec::new(),
    }
}

/// A waiter waits for the holders of its file whose mode conflicts with its own.
fn link_waiters(locks: &mut [LockHolder]) {
    let holders: Vec<(PathBuf, Mode, u32)> = locks
        .iter()
        .filter(|l| !l.waiting)
        .map(|l| (l.file.clone(), l.mode, l.pid))
        .collect();
    for w in locks.iter_mut().filter(|l| l.waiting) {
        let mut pids: BTreeSet<u32> = BTreeSet::new();
        for (file, mode, pid) in &holders {
            if *file == w.file
                && *pid != w.pid
                && (w.mode == Mode::Exclusive || *mode == Mode::Exclusive)
            {
                pids.insert(*pid);
            }
        }
        w.waits_for = pids.into_iter().collect();
    }
}

/// Each holder's descendants: a `uv run` holds the cache lock until its `python3` child
/// exits, so the child is what keeps the lock alive.
fn add_children(locks: &mut [LockHolder]) {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid) in process::parents() {
        kids.entry(ppid).or_default().push(pid);
    }
    for l in locks.iter_mut().filter(|l| !l.waiting) {
        let mut out = Vec::new();
        let mut stack: Vec<(usize, u32)> = vec![(0, l.pid)];
        let mut seen = HashSet::from([l.pid]);
        while let Some((depth, pid)) = stack.pop() {
            let mut children = kids.get(&pid).cloned().unwrap_or_default();
            children.sort_unstable_by(|a, b| b.cmp(a));
            for child in children {
                if seen.insert(child)
                    && let Some(args) = process::argv(child)
                {
                    out.push((depth + 1, child, args));
                    stack.push((depth + 1, child));
                }
            }
        }
        l.children = out;
    }
}

fn is_uv(argv: Option<&Vec<String>>) -> bool {
    argv.and_then(|a| a.first())
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|n| n == "uv" || n == "uvx")
}

fn remedies(locks: &[LockHolder]) -> Vec<String> {
    let by_pid = |pid: u32| locks.iter().find(|l| l.pid == pid && !l.waiting);
    let mut out = Vec::new();
    for w in locks.iter().filter(|l| l.waiting) {
        let who = format!("pid {} ({})", w.pid, short(&w.command()));
        if w.waits_for.is_empty() {
            out.push(format!(
                "{who} waits for {}, which nobody holds any more: it gets it at once",
                w.file.display()
            ));
            continue;
        }
        let mut stop = Vec::new();
        for pid in &w.waits_for {
            let Some(h) = by_pid(*pid) else { continue };
            // Stopping the deepest descendant lets the holder's command end on its own.
            match h.children.iter().max_by_key(|(d, _, _)| *d) {
                Some((_, cpid, args)) if !h.inherited => stop.push(format!(
                    "pid {cpid} ({}), which keeps pid {pid} ({}) holding it",
                    short(&process::shell_join(args)),
                    short(&h.command())
                )),
                _ => stop.push(format!("pid {pid} ({})", short(&h.command()))),
            }
        }
        let uv_run_holds_root = w.file == Path::new(".lock")
            && w.mode == Mode::Exclusive
            && w.waits_for.iter().all(|p| {
                by_pid(*p).is_some_and(|h| h.mode == Mode::Shared && is_uv(h.argv.as_ref()))
            });
        let mut line = format!(
            "{who} waits for {}: stop {} (or wait for it to end)",
            w.file.display(),
            stop.join(" and ")
        );
        if uv_run_holds_root {
            line.push_str(
                "; uv holds the cache lock for as long as a run's child lives, while under \
                 cachelock's policy a run holds it only while it prepares its environment, so a \
                 clean would not wait here",
            );
        }
        out.push(line);
    }
    out
}

/// A command shortened for a one-line remedy.
fn short(cmd: &str) -> String {
    const MAX: usize = 60;
    if cmd.chars().count() <= MAX {
        cmd.to_string()
    } else {
        format!("{}…", cmd.chars().take(MAX).collect::<String>())
    }
}

/// Counts every file and link by name, as `clean` counts what it removes; records each
/// file's inode for matching `/proc/locks`.
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
        } else {
            st.files += 1;
            st.size_bytes += meta.len();
            if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                inodes.entry(meta.ino()).or_insert(rel);
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

impl Status {
    /// The report as JSON (like `lslocks -J`: one object per lock).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let locks: Vec<_> = self
            .locks
            .iter()
            .map(|l| {
                json!({
                    "pid": l.pid,
                    "command": l.argv,
                    "mode": l.mode.name(),
                    "waiting": l.waiting,
                    "inherited": l.inherited,
                    "file": l.file,
                    "running_secs": l.running_for.map(|d| d.as_secs()),
                    "waits_for": l.waits_for,
                    "children": l.children.iter().map(|(depth, pid, args)| json!({
                        "depth": depth, "pid": pid, "command": args,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "cache": self.root,
            "source": self.source,
            "found": match self.found {
                Found::Directory => "directory",
                Found::Missing => "missing",
                Found::NotADirectory => "not-a-directory",
            },
            "files": self.files,
            "bytes": self.size_bytes,
            "available_bytes": self.available_bytes,
            "locks": locks,
            "remedies": self.remedies,
            "leaked_temp_caches": self.leaked_temp_caches,
        })
    }

    /// The details `-v` adds: what was read from `/proc/locks`.
    pub fn verbose(&self) -> String {
        let mut out = format!(
            "/proc/locks: {} flock entries, {} on this cache's files ({} files and links walked)\n",
            self.flock_lines,
            self.raw.len(),
            self.files
        );
        for line in &self.raw {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cache: {} (from {})", self.root.display(), self.source)?;
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
        match self.found {
            Found::Missing => return writeln!(f, "No cache found at: {}", self.root.display()),
            Found::NotADirectory => {
                return writeln!(
                    f,
                    "`{}` is not a directory, so it is not a cache; point --cache-dir at the cache directory",
                    self.root.display()
                );
            }
            Found::Directory => {}
        }
        write!(
            f,
            "size: {} in {} files and links",
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
            let state = match (l.waiting, l.inherited) {
                (true, _) => "waits for",
                (false, false) => "holds",
                (false, true) => "holds (inherited descriptor)",
            };
            let since = l
                .running_for
                .map(|d| {
                    if l.waiting {
                        format!(", running for {}s", d.as_secs())
                    } else {
                        format!(", running for {}s (held at most that long)", d.as_secs())
                    }
                })
                .unwrap_or_default();
            writeln!(
                f,
                "  pid {} {state} {} lock on {}{since}: {}",
                l.pid,
                l.mode.name(),
                l.file.display(),
                l.command()
            )?;
            if l.waiting {
                let on = if l.waits_for.is_empty() {
                    "nobody (it gets the lock at once)".to_string()
                } else {
                    l.waits_for
                        .iter()
                        .map(|p| format!("pid {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                writeln!(f, "    blocked by {on}")?;
            }
            for (depth, pid, args) in &l.children {
                let age = process::running_for(*pid)
                    .map(|d| format!(" running for {}s", d.as_secs()))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  {}└ pid {pid}{age}: {}",
                    "  ".repeat(*depth),
                    process::shell_join(args)
                )?;
            }
        }
        for r in &self.remedies {
            writeln!(f, "remedy: {r}")?;
        }
        Ok(())
    }
}
