//! Every `/proc` read of the gate, in one place.
//!
//! The gate needs a handful of facts the ptrace interface does not give: what a
//! descriptor or a directory descriptor names, a thread's process and parent, whether a
//! thread sleeps in the kernel's flock wait. They are read here and nowhere else, so that
//! this file can be replaced as a whole by the workspace's `/proc` reader crate
//! (`cachelock-inspect`) once it exists; the functions below are the interface the gate
//! needs from it.
//!
//! A process that is gone (or a descriptor that was closed) gives `None`: the caller
//! decides what that means.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The path descriptor `fd` of thread `tid` names (`/proc/TID/fd/FD`), without the
/// ` (deleted)` mark the kernel appends to an unlinked file.
pub fn fd_path(tid: i32, fd: i32) -> Option<PathBuf> {
    let target = fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok()?;
    let text = target.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(live) => Some(PathBuf::from(live)),
        None => Some(target),
    }
}

/// The inode of the file descriptor `fd` of thread `tid` is open on (also when the file
/// was unlinked since).
pub fn fd_inode(tid: i32, fd: i32) -> Option<u64> {
    fs::metadata(format!("/proc/{tid}/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// The working directory of thread `tid` (`/proc/TID/cwd`).
pub fn cwd(tid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{tid}/cwd")).ok()
}

/// The executable thread `tid` runs (`/proc/TID/exe`).
pub fn exe(tid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{tid}/exe")).ok()
}

/// The process (thread group) and the parent process of thread `tid`
/// (`Tgid:` and `PPid:` of `/proc/TID/status`).
pub fn tgid_ppid(tid: i32) -> Option<(i32, i32)> {
    let text = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |name: &str| -> Option<i32> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("Tgid:")?, field("PPid:")?))
}

/// True while `/proc/TID` exists (a zombie not yet reaped included).
pub fn exists(tid: i32) -> bool {
    fs::metadata(format!("/proc/{tid}")).is_ok()
}

/// True if thread `tid` of process `pid` sleeps in the kernel's flock wait on `inode`:
/// it is inside `flock(2)` (`/proc/TID/syscall`), asleep (state `S`), and either its
/// wait channel is the lock wait (`/proc/TID/wchan`: `locks_lock_inode_wait`, or a
/// name with `flock`) or `/proc/locks` has a `->` line (a blocked request) of `pid` on
/// `inode`. Each of these is a fact read from the kernel, never an inference from time.
pub fn blocked_in_flock(pid: i32, tid: i32, inode: Option<u64>) -> bool {
    let in_flock = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
        .is_some_and(|n| n == libc::SYS_flock);
    if !in_flock || thread_state(pid, tid) != Some('S') {
        return false;
    }
    let wchan = fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
    if wchan.contains("flock") || wchan.contains("lock_inode_wait") {
        return true;
    }
    flock_waiters()
        .into_iter()
        .any(|(p, ino)| p == pid && inode.is_none_or(|i| i == ino))
}

/// The one-letter scheduler state of a thread (`/proc/PID/task/TID/stat`, the field
/// after the parenthesised command name).
fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// The blocked flock requests of `/proc/locks` (its `->` lines): process and inode.
pub fn flock_waiters() -> Vec<(i32, u64)> {
    let text = fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 7 || f[1] != "->" || f[2] != "FLOCK" {
                return None;
            }
            Some((f[5].parse().ok()?, f[6].rsplit(':').next()?.parse().ok()?))
        })
        .collect()
}
