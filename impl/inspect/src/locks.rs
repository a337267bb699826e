//! The kernel's lock table, `/proc/locks`, restricted to flock(2) locks (uv and
//! cachelock use flock only; POSIX and OFD locks are left out).
//!
//! A line names a lock's file by `major:minor:inode` and its owner by the pid that took
//! it. For a descriptor inherited by a child that pid is still the one that locked, which
//! may have exited: [`crate::wait::lockers_through_descriptors`] finds who holds it now.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use cachelock_model::Mode;

/// One flock(2) entry of `/proc/locks`: a lock granted, or a request still waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlockEntry {
    /// The pid that took (or waits for) the lock.
    pub pid: u32,
    /// Shared (`READ`) or exclusive (`WRITE`).
    pub mode: Mode,
    /// True for a request still waiting (a `->` line).
    pub waiting: bool,
    /// The device as printed (major, minor), which on overlay file systems is not the one
    /// `stat(2)` reports.
    pub device: (u32, u32),
    /// The inode of the locked file.
    pub inode: u64,
}

impl FlockEntry {
    /// True if this entry is on the file with `stat(2)`'s device `dev` and inode `ino`.
    pub fn is_on(&self, dev: u64, ino: u64) -> bool {
        self.inode == ino && self.device == (libc::major(dev), libc::minor(dev))
    }
}

/// Every flock(2) entry of the machine, granted and waiting, in the table's order.
pub fn flocks() -> Vec<FlockEntry> {
    fs::read_to_string("/proc/locks")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// Parses the text of `/proc/locks`, keeping the flock(2) entries
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; a waiter has `->` after the
/// number).
pub fn parse(text: &str) -> Vec<FlockEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace().skip(1).peekable(); // "12:"
        let waiting = fields.next_if_eq(&"->").is_some();
        let fields: Vec<&str> = fields.collect();
        // FLOCK ADVISORY READ|WRITE PID MAJ:MIN:INODE START END
        if fields.len() < 5 || fields[0] != "FLOCK" {
            continue;
        }
        let mode = match fields[2] {
            "READ" => Mode::Shared,
            "WRITE" => Mode::Exclusive,
            _ => continue,
        };
        let Ok(pid) = fields[3].parse::<u32>() else {
            continue;
        };
        let mut id = fields[4].split(':');
        let (Some(major), Some(minor), Some(inode)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(inode)) = (
            u32::from_str_radix(major, 16),
            u32::from_str_radix(minor, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        out.push(FlockEntry {
            pid,
            mode,
            waiting,
            device: (major, minor),
            inode,
        });
    }
    out
}

/// The locks granted (not waited for) to `pid`.
pub fn held_by(pid: u32) -> Vec<FlockEntry> {
    flocks()
        .into_iter()
        .filter(|l| l.pid == pid && !l.waiting)
        .collect()
}

/// The requests waiting for a lock (the `->` entries).
pub fn waiters() -> Vec<FlockEntry> {
    flocks().into_iter().filter(|l| l.waiting).collect()
}

/// True while `pid` is blocked in flock(2): it has a waiting (`->`) entry.
pub fn blocked_in_flock(pid: u32) -> bool {
    flocks().iter().any(|l| l.waiting && l.pid == pid)
}

/// The inode number of a path, not following a final symlink.
pub fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The locks granted on `path` to processes other than this one, one per pid.
pub fn holders_of(path: &Path) -> Vec<FlockEntry> {
    let Some(ino) = inode_of(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut seen = HashSet::new();
    flocks()
        .into_iter()
        .filter(|l| l.inode == ino && !l.waiting && l.pid != me && seen.insert(l.pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_held_and_waiting_flock_lines() {
        let text = "1: FLOCK  ADVISORY  READ  4121 00:2f:123 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4188 00:2f:123 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 08:01:77 0 EOF\n";
        let lines = parse(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            FlockEntry {
                pid: 4121,
                mode: Mode::Shared,
                waiting: false,
                device: (0, 0x2f),
                inode: 123
            }
        );
        assert!(lines[1].waiting && lines[1].mode == Mode::Exclusive && lines[1].pid == 4188);
    }

    #[test]
    fn a_lock_this_process_holds_is_in_the_table() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let file = tempfile_in_target();
        // SAFETY: flock(2) on a descriptor we own.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) }, 0);
        let meta = file.metadata().expect("metadata");
        let mine: Vec<FlockEntry> = held_by(std::process::id())
            .into_iter()
            .filter(|l| l.inode == meta.ino())
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0].mode, Mode::Shared);
        assert!(!blocked_in_flock(std::process::id()));
    }

    /// A fresh file in the system's temporary directory, unlinked once open.
    fn tempfile_in_target() -> fs::File {
        let path = std::env::temp_dir().join(format!(
            "cachelock-inspect-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = fs::File::create(&path).expect("create a test file");
        let _ = fs::remove_file(&path);
        file
    }
}
