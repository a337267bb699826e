//! Lock waits and holders, from the lock table and the processes' descriptors together.
//!
//! A process waits for a flock(2) lock in one of two ways: blocked in the call (a `->`
//! entry of the lock table), or polling with non-blocking attempts, as a wait with a
//! timeout does (a descriptor on a lock file through which it holds no lock, while
//! another holds one on that file, and a thread asleep between attempts). And a lock
//! taken by a process that has since exited is held by whoever still has an inherited
//! descriptor on its open file description.

use std::collections::HashSet;
use std::path::Path;

use crate::locks::{self, FlockEntry};
use crate::process::{self, OpenFd};

/// The processes (other than this one) holding a lock through a descriptor on one of
/// `inodes`: (inode, pid). The lock table names only the pid that took a lock; this
/// finds every process sharing the locked open file description (an inherited copy
/// counts; a descriptor merely open does not).
pub fn lockers_through_descriptors(inodes: &HashSet<u64>) -> Vec<(u64, u32)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for pid in process::pids().into_iter().filter(|p| *p != me) {
        let mut seen = HashSet::new();
        for fd in process::fds(pid) {
            if fd.is_file && fd.holds_lock && inodes.contains(&fd.inode) && seen.insert(fd.inode) {
                out.push((fd.inode, pid));
            }
        }
    }
    out
}

/// Who holds a lock on `path`, for a message: the processes that took it (per the lock
/// table) and those that hold it through an inherited descriptor, each
/// [`process::describe`]d.
pub fn describe_holders(path: &Path) -> Vec<String> {
    let holders = locks::holders_of(path);
    let mut out: Vec<String> = holders.iter().map(|h| process::describe(h.pid)).collect();
    if let Some(ino) = locks::inode_of(path)
        && !holders.is_empty()
    {
        let lockers: HashSet<u32> = holders.iter().map(|h| h.pid).collect();
        for (_, pid) in lockers_through_descriptors(&HashSet::from([ino])) {
            if !lockers.contains(&pid) {
                out.push(format!(
                    "{} through an inherited descriptor",
                    process::describe(pid)
                ));
            }
        }
    }
    out
}

/// How a process waits for a lock ([`lock_wait`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockWait {
    /// How it waits, in a stable text: blocked in flock(2), or polling.
    pub how: &'static str,
    /// The details: pids, inodes, paths.
    pub details: String,
}

/// The text of [`LockWait::how`] for a process blocked in flock(2).
pub const BLOCKED: &str = "in a blocking flock (/proc/locks `->`)";
/// The text of [`LockWait::how`] for a process polling a lock file.
pub const POLLING: &str = "polling a lock file another process holds (open, unlocked through its descriptor, asleep between attempts)";

/// Whether `pid` waits for a lock, and how: blocked in flock(2) (a `->` entry), or
/// polling a lock file (a `*.lock` file, or one under a `.cleans/` directory) that it
/// has open without holding a lock through the descriptor while another process holds
/// one on that inode, with a thread asleep between attempts ([`process::asleep`]).
/// Having such a file open unlocked is also what a process does between its open and its
/// flock: only one asleep between attempts is taken to wait.
pub fn lock_wait(pid: u32) -> Option<LockWait> {
    let table = locks::flocks();
    if let Some(w) = table.iter().find(|l| l.waiting && l.pid == pid) {
        return Some(LockWait {
            how: BLOCKED,
            details: format!("pid {pid} blocks in flock on inode {}", w.inode),
        });
    }
    for fd in lock_fds(pid) {
        let others: Vec<u32> = table
            .iter()
            .filter(|l: &&FlockEntry| !l.waiting && l.inode == fd.inode)
            .map(|l| l.pid)
            .collect();
        if !fd.holds_lock && !others.is_empty() && process::asleep(pid) {
            return Some(LockWait {
                how: POLLING,
                details: format!(
                    "pid {pid} has {} open without a lock on it while pid(s) {others:?} hold one",
                    fd.target.display()
                ),
            });
        }
    }
    None
}

/// The inodes `pids` wait for a lock on: those of their waiting (`->`) entries, and those
/// of the lock files they have open without a lock through the descriptor while asleep
/// between attempts (a polling wait; see [`lock_wait`]).
pub fn waited_inodes(pids: &[u32]) -> Vec<u64> {
    let mut out: Vec<u64> = locks::waiters()
        .into_iter()
        .filter(|l| pids.contains(&l.pid))
        .map(|l| l.inode)
        .collect();
    for pid in pids {
        if process::asleep(*pid) {
            out.extend(
                lock_fds(*pid)
                    .into_iter()
                    .filter(|fd| !fd.holds_lock)
                    .map(|fd| fd.inode),
            );
        }
    }
    out
}

/// The descriptors `pid` has open on lock files (`*.lock`, or under `.cleans/`).
fn lock_fds(pid: u32) -> Vec<OpenFd> {
    process::fds(pid)
        .into_iter()
        .filter(|fd| {
            let name = fd.target.to_string_lossy();
            name.ends_with(".lock") || name.contains("/.cleans/")
        })
        .collect()
}

/// True if thread `tid` of process `pid` sleeps in the kernel's flock wait (on `inode`,
/// if given): it is inside `flock(2)` ([`process::thread_syscall`]), asleep (state `S`),
/// and either its wait channel is the lock wait (`locks_lock_inode_wait`, or a name with
/// `flock`) or the lock table has a waiting (`->`) entry of `pid` on the inode. Each of
/// these is read from the kernel: a thread that merely takes long is not blocked.
pub fn thread_blocked_in_flock(pid: u32, tid: u32, inode: Option<u64>) -> bool {
    if process::thread_syscall(pid, tid) != Some(libc::SYS_flock)
        || process::thread_stat(pid, tid).map(|s| s.state) != Some('S')
    {
        return false;
    }
    let wchan = process::thread_wchan(pid, tid).unwrap_or_default();
    if wchan.contains("flock") || wchan.contains("lock_inode_wait") {
        return true;
    }
    locks::waiters()
        .iter()
        .any(|w| w.pid == pid && inode.is_none_or(|i| i == w.inode))
}
