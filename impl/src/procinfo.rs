//! Who holds or waits for a lock: read from `/proc/locks` (Linux).
//!
//! `/proc/locks` names a lock's file by `major:minor:inode` and its owner by the pid that
//! took it. Files are matched by inode number alone: on overlay file systems the device
//! printed there is not the one `stat` reports. For a descriptor inherited by a child the
//! pid is still the one that locked it, which may have exited; [`pid_alive`] tells.
//! On other systems every function here returns nothing.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use cachelock_model::Mode;

/// One line of `/proc/locks` that concerns a flock(2) lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLine {
    /// The pid that took (or waits for) the lock.
    pub pid: u32,
    /// Shared (READ) or exclusive (WRITE).
    pub mode: Mode,
    /// True for a request still waiting (`->` lines).
    pub waiting: bool,
    /// The inode of the locked file.
    pub inode: u64,
}

/// Parses `/proc/locks`, keeping the FLOCK lines (uv and cachelock use flock only).
pub fn lock_lines() -> Vec<LockLine> {
    fs::read_to_string("/proc/locks")
        .map(|text| parse_locks(&text))
        .unwrap_or_default()
}

/// Parses the text of `/proc/locks`.
pub fn parse_locks(text: &str) -> Vec<LockLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        fields.remove(0); // "12:"
        let waiting = fields.first() == Some(&"->");
        if waiting {
            fields.remove(0);
        }
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
        let Some(inode) = fields[4].rsplit(':').next().and_then(|s| s.parse().ok()) else {
            continue;
        };
        out.push(LockLine {
            pid,
            mode,
            waiting,
            inode,
        });
    }
    out
}

/// The inode number of a path (not following a final symlink).
pub fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The locks held (not waited for) on `path` by processes other than this one.
pub fn holders_of(path: &Path) -> Vec<LockLine> {
    let Some(ino) = inode_of(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut seen = HashSet::new();
    lock_lines()
        .into_iter()
        .filter(|l| l.inode == ino && !l.waiting && l.pid != me && seen.insert(l.pid))
        .collect()
}

/// The processes (other than this one) with a descriptor on one of `inodes` that shares
/// a locked open file description: `/proc/PID/fdinfo/FD` lists a `lock:` line only for
/// those. A lock taken by a process that has since exited is held by whoever still has
/// an inherited descriptor: this finds them; a descriptor merely open is not counted.
pub fn openers(inodes: &HashSet<u64>) -> Vec<(u64, u32)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue; // gone, or not ours to look at
        };
        let mut seen = HashSet::new();
        for fd in fds.flatten() {
            use std::os::unix::fs::MetadataExt;
            if let Ok(meta) = fs::metadata(fd.path())
                && meta.is_file()
                && inodes.contains(&meta.ino())
                && !seen.contains(&meta.ino())
                && fs::read_to_string(entry.path().join("fdinfo").join(fd.file_name()))
                    .is_ok_and(|info| info.lines().any(|l| l.starts_with("lock:")))
            {
                seen.insert(meta.ino());
                out.push((meta.ino(), pid));
            }
        }
    }
    out
}

/// The arguments of a process (empty ones kept), or `None` if it is gone. Kernel threads
/// and zombies have none: their name in brackets stands for them.
pub fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        return Some(vec![format!("[{}]", comm.trim())]);
    }
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    Some(
        raw.split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
    )
}

/// The command line of a process quoted as a shell would need it, or `None` if it is
/// gone.
pub fn cmdline(pid: u32) -> Option<String> {
    argv(pid).map(|args| shell_join(&args))
}

/// Arguments joined by spaces, each quoted for a POSIX shell where it needs it.
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One argument as a POSIX shell reads it back: bare when it is made of safe characters
/// only, else in single quotes (a `'` becomes `'\''`).
pub fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Every process's parent: (pid, ppid), from `/proc/PID/stat`.
pub fn parents() -> Vec<(u32, u32)> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect()
}

/// A process's parent pid.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// How long the process has been running (from `/proc/PID/stat` and the boot time).
pub fn running_for(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th field after the name.
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_sec <= 0 {
        return None;
    }
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = start_ticks as f64 / ticks_per_sec as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

/// "pid 4121 (sh -c sleep 9)" for messages.
pub fn describe(pid: u32) -> String {
    match cmdline(pid) {
        Some(cmd) => format!("pid {pid} ({cmd})"),
        None => format!("pid {pid} (exited; a process that inherited the lock holds it)"),
    }
}

/// Describes who holds a lock on `path`, for a timeout message: the processes that
/// locked it, and those that hold it through an inherited descriptor.
pub fn describe_holders(path: &Path) -> Vec<String> {
    let holders = holders_of(path);
    let mut out: Vec<String> = holders.iter().map(|h| describe(h.pid)).collect();
    if let Some(ino) = inode_of(path)
        && !holders.is_empty()
    {
        let lockers: HashSet<u32> = holders.iter().map(|h| h.pid).collect();
        for (_, pid) in openers(&HashSet::from([ino])) {
            if !lockers.contains(&pid) {
                out.push(format!("{} through an inherited descriptor", describe(pid)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_as_a_shell_reads_them() {
        let args: Vec<String> = ["sh", "-c", "sleep 3; echo 'hi'", "", "a/b.c=d"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            shell_join(&args),
            r#"sh -c 'sleep 3; echo '\''hi'\''' '' a/b.c=d"#
        );
    }

    #[test]
    fn parses_held_and_waiting_flock_lines() {
        let text = "1: FLOCK  ADVISORY  READ  4121 00:2f:123 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4188 00:2f:123 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 08:01:77 0 EOF\n";
        let lines = parse_locks(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            LockLine {
                pid: 4121,
                mode: Mode::Shared,
                waiting: false,
                inode: 123
            }
        );
        assert!(lines[1].waiting && lines[1].mode == Mode::Exclusive && lines[1].pid == 4188);
    }
}
