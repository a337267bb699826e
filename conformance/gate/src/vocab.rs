//! What a stopped system call means for the protocol: the one table from
//! (system call, path, lock operation) to the model's [`Step`].
//!
//! `<cache>` is the cache root the gate was given; paths are compared as the process
//! named them, made absolute (and also with the cache root canonicalized, since uv
//! canonicalizes it before deleting).
//!
//! | system call | path | lock op | step |
//! |---|---|---|---|
//! | `open`/`openat` for writing or creating | `<cache>/.lock` | | `open-lock-file` |
//! | `open`/`openat` for writing or creating | `<tmp>/.tmp*/.lock` outside `<cache>` | | `create-temp-cache` |
//! | `flock` | `<cache>/.lock` | `LOCK_SH` | `lock-shared` |
//! | `flock` | `<cache>/.lock` | `LOCK_EX` | `lock-exclusive` |
//! | `flock` | `<cache>/.lock` | `LOCK_UN` | `release-root-lock` |
//! | `flock` | `<cache>/environments/*.lock` | `LOCK_SH` | `lock-env` |
//! | `flock` | `<cache>/environments/*.lock` | `LOCK_UN` | `unlock-env-lock` |
//! | `flock` | `<cache>/.cleans/*` (announced) | `LOCK_SH` | `await-announced-cleans` |
//! | `rename*` | to `<cache>/.cleans/*` | | `announce-clean` |
//! | `unlink*` | `<cache>/.cleans/*` (announced) | | `withdraw-announcement` |
//! | `rmdir` | `<cache>/.cleans`, by a process that announced a clean | | `withdraw-announcement` |
//! | `rename*` | to `<cache>/.trash/*/*` (into a clean's trash directory) | | `move-to-trash` |
//! | `unlink*`, `rmdir` | `<cache>/.trash` and anything under it | | `delete-trash` |
//! | `open`/`openat` for writing or creating | `<cache>/CACHEDIR.TAG` | | `create-scaffold` |
//! | `mkdir*` | `<cache>/builds*/.tmp*` | | `build-env` |
//! | `rename*` | to `<cache>/archive-v*/*`, `<cache>/environments*/*` (not `*.lock`) | | `persist-env` |
//! | `unlink*` | `<cache>/.lock` | | `unlink-lock-file` |
//! | `rmdir`, `unlinkat(AT_REMOVEDIR)` | `<cache>` | | `remove-root` |
//! | `unlink*`, `rmdir` | anything else under `<cache>`, by a process that did not lock `.lock` shared (not a `<cache>/.tmp*` file the process itself opened for writing: a lock file's temporary name) | | `delete-entries` |
//! | `rmdir` | a temporary cache root seen by `create-temp-cache` | | `drop-temp-cache` |
//! | `execve` (seen after it succeeded) | by a process whose parent took a step | | `spawn-child` |
//! | `exit_group` | of a process that took a step | | none: reported as the process's exit |
//!
//! Creating the root directory alone is not `create-scaffold` (uv 0.13 makes the root,
//! then locks, then writes the scaffold). Anything else is not a protocol step (`None`): the gate lets it go at once. Known
//! imprecisions, all on the side of reporting too much rather than too little:
//! - every removal under the cache is its own `delete-entries` event, every rename into
//!   a trash its own `move-to-trash`, every removal in the trash its own `delete-trash`
//!   (a checker counts a run of them as one step);
//! - a process that has no trash of its own (uv) removing a trash another clean left is
//!   named `delete-trash` too: the checker takes it as that process's `delete-entries`;
//! - uv's own helper processes (an interpreter query) started after the lock are
//!   `spawn-child` too: the child the model means is the last one;
//! - the temporary cache is recognised when its `.lock` is opened, not when its
//!   directory is created (the directory of an empty `.tmp*` looks the same);
//! - an `open` of `.lock` read-only without `O_CREAT` is not stopped by the filter
//!   (uv opens it read-write); its `flock` still is.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use cachelock_model::protocol::Step;

/// The operation of a `flock(2)` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockOp {
    /// `LOCK_SH`.
    Shared,
    /// `LOCK_EX`.
    Exclusive,
    /// `LOCK_UN`.
    Unlock,
}

/// A system call the gate stops at (or a process event it reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `open`/`openat` with write access or `O_CREAT`.
    Open,
    /// `flock(fd, op)`; `nonblocking` is `LOCK_NB`.
    Flock {
        /// The operation.
        op: LockOp,
        /// `LOCK_NB` was given.
        nonblocking: bool,
    },
    /// `rename`/`renameat`/`renameat2`; the event's path is the new name.
    Rename,
    /// `unlink`/`unlinkat` of a file.
    Unlink,
    /// `rmdir`, or `unlinkat` with `AT_REMOVEDIR`.
    Rmdir,
    /// `mkdir`/`mkdirat`.
    Mkdir,
    /// An `execve` that succeeded (reported by ptrace after the new program is loaded,
    /// before it runs its first instruction).
    Exec,
    /// `exit_group(code)`.
    ExitGroup {
        /// The exit code given.
        code: i32,
    },
}

impl Syscall {
    /// Decodes a `flock` operation word.
    pub fn flock(op: u64) -> Syscall {
        let op = op as i32;
        let lock = if op & libc::LOCK_UN != 0 {
            LockOp::Unlock
        } else if op & libc::LOCK_EX != 0 {
            LockOp::Exclusive
        } else {
            LockOp::Shared
        };
        Syscall::Flock {
            op: lock,
            nonblocking: op & libc::LOCK_NB != 0,
        }
    }
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Syscall::Open => f.write_str("open"),
            Syscall::Flock { op, nonblocking } => {
                let op = match op {
                    LockOp::Shared => "LOCK_SH",
                    LockOp::Exclusive => "LOCK_EX",
                    LockOp::Unlock => "LOCK_UN",
                };
                let nb = if *nonblocking { "|LOCK_NB" } else { "" };
                write!(f, "flock({op}{nb})")
            }
            Syscall::Rename => f.write_str("rename"),
            Syscall::Unlink => f.write_str("unlink"),
            Syscall::Rmdir => f.write_str("rmdir"),
            Syscall::Mkdir => f.write_str("mkdir"),
            Syscall::Exec => f.write_str("execve"),
            Syscall::ExitGroup { code } => write!(f, "exit_group({code})"),
        }
    }
}

/// What the gate knows about the process making a call, beyond the call itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// For an exec: the parent process took a protocol step.
    pub parent_took_step: bool,
    /// The process locked `<cache>/.lock` shared: it uses the cache, and what it removes
    /// is its own temporary files, not the cache's entries.
    pub locked_shared: bool,
    /// The process (thread group) making the call.
    pub pid: i32,
}

/// The cache root, as given and canonicalized, and the temporary caches seen so far.
#[derive(Debug, Clone)]
pub struct Places {
    roots: Vec<PathBuf>,
    /// Each temporary cache seen, with the process that created it.
    temp_caches: Vec<(PathBuf, i32)>,
    /// Files `<cache>/.tmp*` opened for writing, with the process that did: the
    /// temporary name a lock file is created under before it is renamed into place.
    own_temps: Vec<(PathBuf, i32)>,
    /// The processes that announced a clean.
    announcers: Vec<i32>,
    /// Directories `.tmp*` outside the cache, with the process that made them: a
    /// temporary cache is created by the process that made its directory.
    made_temp_dirs: Vec<(PathBuf, i32)>,
}

impl Places {
    /// The places of a gate watching the cache at `cache`.
    pub fn new(cache: &Path) -> Places {
        // The processes' paths are made absolute: so is the root (a relative one is taken
        // against this process's working directory).
        let absolute = std::path::absolute(cache).unwrap_or_else(|_| cache.to_path_buf());
        let cache = absolute.as_path();
        let mut roots = vec![normalize(cache)];
        let canonical = cache.canonicalize().ok().or_else(|| {
            let parent = cache.parent()?.canonicalize().ok()?;
            Some(parent.join(cache.file_name()?))
        });
        if let Some(c) = canonical
            && !roots.contains(&c)
        {
            roots.push(c);
        }
        Places {
            roots,
            temp_caches: Vec::new(),
            own_temps: Vec::new(),
            announcers: Vec::new(),
            made_temp_dirs: Vec::new(),
        }
    }

    /// The cache root as given.
    pub fn cache(&self) -> &Path {
        &self.roots[0]
    }

    /// `path` relative to the cache root, if it is under it (`Some("")` for the root).
    fn in_cache<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        self.roots.iter().find_map(|r| path.strip_prefix(r).ok())
    }

    /// The step a stopped call is, and remembers the temporary caches it sees.
    pub fn classify(&mut self, call: Syscall, path: Option<&Path>, ctx: Context) -> Option<Step> {
        if call == Syscall::Exec {
            return ctx.parent_took_step.then_some(Step::SpawnChild);
        }
        let path = path?;
        let Some(rel) = self.in_cache(path) else {
            return self.classify_outside(call, path, ctx.pid);
        };
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let is_lock_file = parts == [".lock"];
        let env_lock =
            parts.len() == 2 && parts[0] == "environments" && parts[1].ends_with(".lock");
        let announcement =
            parts.len() == 2 && parts[0] == ".cleans" && !parts[1].starts_with(".tmp");
        // A process's own temporary file at the top of the cache (`.lock` is created
        // under such a name, then renamed into place; the loser of that race removes
        // its file): removing it deletes no entry.
        if parts.len() == 1 && parts[0].starts_with(".tmp") {
            let own = (path.to_path_buf(), ctx.pid);
            match call {
                Syscall::Open => {
                    if !self.own_temps.contains(&own) {
                        self.own_temps.push(own);
                    }
                    return None;
                }
                Syscall::Unlink if self.own_temps.contains(&own) => return None,
                _ => {}
            }
        }
        let in_trash = parts.first() == Some(&".trash");
        match call {
            Syscall::Open if is_lock_file => Some(Step::OpenLockFile),
            Syscall::Flock { op, .. } if is_lock_file => Some(match op {
                LockOp::Shared => Step::LockShared,
                LockOp::Exclusive => Step::LockExclusive,
                LockOp::Unlock => Step::ReleaseRootLock,
            }),
            Syscall::Flock { op, .. } if env_lock => match op {
                LockOp::Shared => Some(Step::LockEnv),
                LockOp::Unlock => Some(Step::UnlockEnvLock),
                LockOp::Exclusive => None,
            },
            Syscall::Flock {
                op: LockOp::Shared, ..
            } if announcement => Some(Step::AwaitAnnouncedCleans),
            Syscall::Rename if announcement => {
                if !self.announcers.contains(&ctx.pid) {
                    self.announcers.push(ctx.pid);
                }
                Some(Step::AnnounceClean)
            }
            // Withdrawing the last announcement removes the emptied `.cleans` too.
            Syscall::Rmdir if parts == [".cleans"] && self.announcers.contains(&ctx.pid) => {
                Some(Step::WithdrawAnnouncement)
            }
            Syscall::Unlink if announcement => Some(Step::WithdrawAnnouncement),
            Syscall::Rename if in_trash && parts.len() >= 3 => Some(Step::MoveToTrash),
            Syscall::Unlink | Syscall::Rmdir if in_trash => Some(Step::DeleteTrash),
            Syscall::Open if parts == ["CACHEDIR.TAG"] => Some(Step::CreateScaffold),
            Syscall::Mkdir
                if parts.len() == 2
                    && parts[0].starts_with("builds")
                    && parts[1].starts_with(".tmp") =>
            {
                Some(Step::BuildEnv)
            }
            Syscall::Rename
                if parts.len() >= 2
                    && (parts[0].starts_with("archive-v")
                        || parts[0].starts_with("environments"))
                    && !parts[parts.len() - 1].ends_with(".lock") =>
            {
                Some(Step::PersistEnv)
            }
            Syscall::Unlink | Syscall::Rmdir if is_lock_file => Some(Step::UnlinkLockFile),
            Syscall::Rmdir if parts.is_empty() => Some(Step::RemoveRoot),
            Syscall::Unlink | Syscall::Rmdir if !parts.is_empty() && !ctx.locked_shared => {
                Some(Step::DeleteEntries)
            }
            _ => None,
        }
    }

    fn classify_outside(&mut self, call: Syscall, path: &Path, pid: i32) -> Option<Step> {
        match call {
            Syscall::Open | Syscall::Rename if path.file_name().is_some_and(|n| n == ".lock") => {
                let dir = path.parent()?;
                let made_here = self
                    .made_temp_dirs
                    .iter()
                    .any(|(d, by)| d == dir && *by == pid);
                if made_here && !self.temp_caches.iter().any(|(t, _)| t == dir) {
                    self.temp_caches.push((dir.to_path_buf(), pid));
                    return Some(Step::CreateTempCache);
                }
                None
            }
            Syscall::Mkdir
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp")) =>
            {
                self.made_temp_dirs.push((path.to_path_buf(), pid));
                None
            }
            Syscall::Rmdir => {
                let (_, creator) = self.temp_caches.iter().find(|(t, _)| t == path)?;
                Some(if *creator == pid {
                    Step::DropTempCache
                } else {
                    Step::RemoveLeakedTemp
                })
            }
            _ => None,
        }
    }
}

/// `path` with `.` components dropped and `..` applied lexically (the gate cannot
/// resolve links in another process's view without racing it).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p: &mut Places, call: Syscall, path: &str) -> Option<Step> {
        p.classify(call, Some(Path::new(path)), Context::default())
    }

    #[test]
    fn root_lock_operations_are_lock_steps() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let sh = Syscall::flock(libc::LOCK_SH as u64 | libc::LOCK_NB as u64);
        assert_eq!(
            step(&mut p, sh, "/nonexistent-x/cache/.lock"),
            Some(Step::LockShared)
        );
        let ex = Syscall::flock(libc::LOCK_EX as u64);
        assert_eq!(
            step(&mut p, ex, "/nonexistent-x/cache/.lock"),
            Some(Step::LockExclusive)
        );
        let un = Syscall::flock(libc::LOCK_UN as u64);
        assert_eq!(
            step(&mut p, un, "/nonexistent-x/cache/.lock"),
            Some(Step::ReleaseRootLock)
        );
        assert_eq!(step(&mut p, ex, "/nonexistent-x/other/.lock"), None);
        assert_eq!(
            step(&mut p, Syscall::Open, "/nonexistent-x/cache/.lock"),
            Some(Step::OpenLockFile)
        );
    }

    #[test]
    fn removals_name_what_they_remove() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let c = "/nonexistent-x/cache";
        assert_eq!(
            step(&mut p, Syscall::Unlink, &format!("{c}/.lock")),
            Some(Step::UnlinkLockFile)
        );
        assert_eq!(step(&mut p, Syscall::Rmdir, c), Some(Step::RemoveRoot));
        assert_eq!(
            step(&mut p, Syscall::Unlink, &format!("{c}/archive-v0/x/y")),
            Some(Step::DeleteEntries)
        );
        assert_eq!(
            step(&mut p, Syscall::Unlink, "/nonexistent-x/elsewhere"),
            None
        );
    }

    #[test]
    fn renames_into_the_trash_and_removals_in_it_are_the_trash_steps() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let c = "/nonexistent-x/cache";
        assert_eq!(
            step(&mut p, Syscall::Rename, &format!("{c}/.trash/clean-AbC/0")),
            Some(Step::MoveToTrash)
        );
        assert_eq!(
            step(&mut p, Syscall::Mkdir, &format!("{c}/.trash/clean-AbC")),
            None,
            "making the trash directory is no step"
        );
        assert_eq!(
            step(&mut p, Syscall::Rename, &format!("{c}/.trash")),
            None,
            "only a rename into a clean's trash directory moves an entry"
        );
        for path in [
            format!("{c}/.trash/clean-AbC/0/wheel/x.py"),
            format!("{c}/.trash/clean-AbC"),
            format!("{c}/.trash"),
        ] {
            assert_eq!(
                step(&mut p, Syscall::Unlink, &path),
                Some(Step::DeleteTrash),
                "{path}"
            );
            assert_eq!(
                step(&mut p, Syscall::Rmdir, &path),
                Some(Step::DeleteTrash),
                "{path}"
            );
        }
        // Deleting in the trash is that step whoever does it.
        let run = Context {
            parent_took_step: false,
            locked_shared: true,
            pid: 7,
        };
        assert_eq!(
            p.classify(
                Syscall::Unlink,
                Some(Path::new(&format!("{c}/.trash/clean-AbC/0"))),
                run
            ),
            Some(Step::DeleteTrash)
        );
        // The empty `.cleans` a withdrawing clean removes is part of its withdrawal.
        assert_eq!(
            step(&mut p, Syscall::Rename, &format!("{c}/.cleans/AbC")),
            Some(Step::AnnounceClean)
        );
        assert_eq!(
            step(&mut p, Syscall::Rmdir, &format!("{c}/.cleans")),
            Some(Step::WithdrawAnnouncement)
        );
        // A rename elsewhere in the cache is not a move to the trash.
        assert_eq!(
            step(&mut p, Syscall::Rename, &format!("{c}/wheels-v5/trash/x")),
            None
        );
    }

    #[test]
    fn a_temp_cache_is_created_once_and_dropped_by_its_rmdir() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let lock = "/nonexistent-x/tmp/.tmpAbC/.lock";
        assert_eq!(step(&mut p, Syscall::Open, lock), None, "no mkdir seen");
        assert_eq!(
            step(&mut p, Syscall::Mkdir, "/nonexistent-x/tmp/.tmpAbC"),
            None
        );
        assert_eq!(
            step(&mut p, Syscall::Open, lock),
            Some(Step::CreateTempCache)
        );
        assert_eq!(step(&mut p, Syscall::Open, lock), None);
        assert_eq!(
            step(&mut p, Syscall::Rmdir, "/nonexistent-x/tmp/.tmpAbC"),
            Some(Step::DropTempCache)
        );
        assert_eq!(
            step(&mut p, Syscall::Rmdir, "/nonexistent-x/tmp/.tmpOther"),
            None
        );
    }

    #[test]
    fn an_announcer_removing_the_emptied_cleans_directory_withdraws() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let at = |pid| Context {
            pid,
            ..Context::default()
        };
        let cleans = Path::new("/nonexistent-x/cache/.cleans");
        let ann = Path::new("/nonexistent-x/cache/.cleans/9-x");
        assert_eq!(
            p.classify(Syscall::Rmdir, Some(cleans), at(9)),
            Some(Step::DeleteEntries)
        );
        assert_eq!(
            p.classify(Syscall::Rename, Some(ann), at(9)),
            Some(Step::AnnounceClean)
        );
        assert_eq!(
            p.classify(Syscall::Rmdir, Some(cleans), at(9)),
            Some(Step::WithdrawAnnouncement)
        );
    }

    #[test]
    fn removing_its_own_temporary_lock_file_deletes_no_entry() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let at = |pid| Context {
            pid,
            ..Context::default()
        };
        let tmp = Path::new("/nonexistent-x/cache/.tmpAbC");
        assert_eq!(p.classify(Syscall::Open, Some(tmp), at(5)), None);
        assert_eq!(p.classify(Syscall::Unlink, Some(tmp), at(5)), None);
        assert_eq!(
            p.classify(Syscall::Unlink, Some(tmp), at(6)),
            Some(Step::DeleteEntries),
            "another process's is an entry"
        );
    }

    #[test]
    fn a_temp_cache_renamed_into_place_is_created_and_another_process_removing_it_prunes() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let at = |pid| Context {
            pid,
            ..Context::default()
        };
        let lock = Path::new("/nonexistent-x/tmp/.tmpQ/.lock");
        let dir = Path::new("/nonexistent-x/tmp/.tmpQ");
        assert_eq!(p.classify(Syscall::Mkdir, Some(dir), at(7)), None);
        assert_eq!(
            p.classify(Syscall::Open, Some(lock), at(8)),
            None,
            "a prune looking at another process's temporary cache creates none"
        );
        assert_eq!(
            p.classify(Syscall::Rename, Some(lock), at(7)),
            Some(Step::CreateTempCache)
        );
        assert_eq!(
            p.classify(Syscall::Rmdir, Some(dir), at(8)),
            Some(Step::RemoveLeakedTemp)
        );
        assert_eq!(
            p.classify(Syscall::Rmdir, Some(dir), at(7)),
            Some(Step::DropTempCache)
        );
    }

    #[test]
    fn builds_and_persists_are_env_steps() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let c = "/nonexistent-x/cache";
        assert_eq!(
            step(&mut p, Syscall::Mkdir, &format!("{c}/builds-v0/.tmpX")),
            Some(Step::BuildEnv)
        );
        assert_eq!(
            step(&mut p, Syscall::Rename, &format!("{c}/archive-v0/abc")),
            Some(Step::PersistEnv)
        );
        assert_eq!(
            step(&mut p, Syscall::Open, &format!("{c}/CACHEDIR.TAG")),
            Some(Step::CreateScaffold)
        );
        assert_eq!(
            step(&mut p, Syscall::Mkdir, c),
            None,
            "uv 0.13 makes the root before it locks"
        );
    }

    #[test]
    fn exec_is_spawn_child_only_below_a_process_that_took_a_step() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let spawned = Context {
            parent_took_step: true,
            ..Context::default()
        };
        assert_eq!(
            p.classify(Syscall::Exec, None, spawned),
            Some(Step::SpawnChild)
        );
        assert_eq!(p.classify(Syscall::Exec, None, Context::default()), None);
    }

    #[test]
    fn a_run_removing_its_own_temporary_files_deletes_no_entries() {
        let mut p = Places::new(Path::new("/nonexistent-x/cache"));
        let run = Context {
            locked_shared: true,
            ..Context::default()
        };
        let tmp = Path::new("/nonexistent-x/cache/.tmpA/python/x.py");
        assert_eq!(p.classify(Syscall::Unlink, Some(tmp), run), None);
        assert_eq!(
            p.classify(Syscall::Unlink, Some(tmp), Context::default()),
            Some(Step::DeleteEntries)
        );
    }
}
