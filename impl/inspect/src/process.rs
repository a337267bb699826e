//! One process as `/proc/PID` shows it: its state, parent, process group and start time
//! (`stat`), its command line (`cmdline`, `comm`), where it sleeps (`wchan`, its threads'
//! `syscall`), its `status` fields, and its open descriptors (`fd`, `fdinfo`).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// The pids of every process visible now.
pub fn pids() -> Vec<u32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The fields of `/proc/PID/stat` that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The state letter: `R` running, `S` sleeping, `D` in an uninterruptible wait, `T`
    /// stopped, `Z` zombie, `X` dead, …
    pub state: char,
    /// The parent's pid.
    pub ppid: u32,
    /// The process group.
    pub pgrp: u32,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses the text of a `stat` file (of a process or of one of its threads).
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        // Field 22 (starttime) is the 20th field after the name.
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/stat`, or `None` if the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True while `pid` runs: it exists and is neither a zombie nor dead.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// A process's parent pid.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat(pid).map(|s| s.ppid)
}

/// Every process's parent: (pid, ppid).
pub fn parents() -> Vec<(u32, u32)> {
    pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect()
}

/// `pid` and all its descendants, parents before children.
pub fn tree(pid: u32) -> Vec<u32> {
    let parents = parents();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(p, pp)| *pp == parent && *p != parent && !out.contains(p))
                .map(|(p, _)| *p)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

/// The live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| stat(*pid).is_some_and(|s| s.state != 'Z' && s.pgrp == pgid))
        .collect()
}

/// How long the process has been running (its start time and the boot time).
pub fn running_for(pid: u32) -> Option<Duration> {
    let start_ticks = stat(pid)?.start_ticks;
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

/// True once every thread of the process is stopped (`T` in each thread's `stat`).
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for t in tasks.flatten() {
        let Some(st) = fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        any = true;
        if st.state != 'T' {
            return false;
        }
    }
    any
}

/// True if a thread of `pid` is in `nanosleep`/`clock_nanosleep` now (its `syscall`
/// file): a wait that polls sleeps there between attempts.
pub fn asleep(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("syscall"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
            .is_some_and(|n| n == libc::SYS_nanosleep || n == libc::SYS_clock_nanosleep)
    })
}

/// The kernel function the process sleeps in (`/proc/PID/wchan`), if it sleeps and the
/// kernel tells (`0` or empty means it does not).
pub fn wchan(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    let text = text.trim();
    (!text.is_empty() && text != "0").then(|| text.to_string())
}

/// One field of `/proc/PID/status` (`"State"`, `"PPid"`, `"Uid"`, …), its value trimmed.
pub fn status_field(pid: u32, name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_string())
    })
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

/// "pid 4121 (sh -c 'sleep 9')", for messages.
pub fn describe(pid: u32) -> String {
    match cmdline(pid) {
        Some(cmd) => format!("pid {pid} ({cmd})"),
        None => format!("pid {pid} (exited; a process that inherited the lock holds it)"),
    }
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

/// True while `/proc/PID` exists: the process (or thread: `/proc/TID` works for any
/// thread id) runs, is stopped, or is a zombie not yet reaped.
pub fn exists(pid: u32) -> bool {
    fs::symlink_metadata(format!("/proc/{pid}")).is_ok()
}

/// The process (thread group) thread `tid` belongs to (`Tgid:` of its `status`).
pub fn tgid(tid: u32) -> Option<u32> {
    status_field(tid, "Tgid")?.parse().ok()
}

/// The working directory of a process (`/proc/PID/cwd`).
pub fn cwd(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// The executable a process runs (`/proc/PID/exe`).
pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// What descriptor `fd` of a process names (`/proc/PID/fd/FD`), without the
/// ` (deleted)` the kernel appends once the path is unlinked. [`fds`] reads them all.
pub fn fd_target(pid: u32, fd: i32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    match link.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(b) => Some(PathBuf::from(std::ffi::OsStr::from_bytes(b))),
        None => Some(link),
    }
}

/// The inode of the file descriptor `fd` of a process is open on (also when the file
/// was unlinked since).
pub fn fd_inode(pid: u32, fd: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// One thread's `stat` (`/proc/PID/task/TID/stat`): its own state letter.
pub fn thread_stat(pid: u32, tid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

/// The system call a thread is in (`/proc/PID/task/TID/syscall`, its first field), or
/// `None` if it runs in user space, is gone, or is not ours to look at.
pub fn thread_syscall(pid: u32, tid: u32) -> Option<i64> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The kernel function one thread sleeps in (`/proc/PID/task/TID/wchan`), as [`wchan`].
pub fn thread_wchan(pid: u32, tid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).ok()?;
    let text = text.trim();
    (!text.is_empty() && text != "0").then(|| text.to_string())
}

/// One open descriptor of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFd {
    /// The descriptor number.
    pub fd: u32,
    /// What it names (the link's target), without the ` (deleted)` the kernel appends
    /// once the path is unlinked.
    pub target: PathBuf,
    /// The path was unlinked since it was opened.
    pub deleted: bool,
    /// `stat(2)` of the open file: device, inode, and whether it is a regular file.
    pub dev: u64,
    /// See `dev`.
    pub inode: u64,
    /// See `dev`.
    pub is_file: bool,
    /// The process holds a lock through this descriptor's open file description (its
    /// `fdinfo` has a `lock:` line; a descriptor merely open, or waiting, has none).
    pub holds_lock: bool,
}

/// The open descriptors of `pid` (empty if it is gone or not ours to look at).
pub fn fds(pid: u32) -> Vec<OpenFd> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let fd: u32 = entry.file_name().to_str()?.parse().ok()?;
            let link = fs::read_link(entry.path()).ok()?;
            let bytes = link.as_os_str().as_bytes();
            let (target, deleted) = match bytes.strip_suffix(b" (deleted)") {
                Some(b) => (PathBuf::from(std::ffi::OsStr::from_bytes(b)), true),
                None => (link, false),
            };
            let meta = fs::metadata(entry.path()).ok()?;
            let holds_lock = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .is_ok_and(|info| info.lines().any(|l| l.starts_with("lock:")));
            Some(OpenFd {
                fd,
                target,
                deleted,
                dev: meta.dev(),
                inode: meta.ino(),
                is_file: meta.is_file(),
                holds_lock,
            })
        })
        .collect()
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
    fn stat_fields_are_read_after_a_name_with_parentheses() {
        let text = "4121 (a) b (c) S 1 4121 4121 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 \
                    777 0 0";
        let st = parse_stat(text).expect("parses");
        assert_eq!(
            st,
            Stat {
                state: 'S',
                ppid: 1,
                pgrp: 4121,
                start_ticks: 777
            }
        );
    }

    #[test]
    fn this_process_is_alive_and_in_its_parents_tree() {
        let me = std::process::id();
        assert!(alive(me));
        let parent = parent_of(me).expect("a parent");
        assert!(tree(parent).contains(&me));
        assert!(argv(me).is_some_and(|a| !a.is_empty()));
        assert!(
            fds(me).iter().any(|f| f.fd <= 2),
            "stdin, stdout or stderr is open"
        );
    }

    #[test]
    fn this_thread_and_its_descriptors_are_read_one_by_one() {
        let me = std::process::id();
        assert!(exists(me));
        assert_eq!(tgid(me), Some(me));
        assert_eq!(cwd(me), std::env::current_dir().ok());
        assert_eq!(exe(me), std::env::current_exe().ok());
        let file = std::fs::File::open("/proc/self/stat").expect("open a file");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let listed = fds(me)
            .into_iter()
            .find(|f| f.fd == fd as u32)
            .expect("listed");
        assert_eq!(fd_target(me, fd), Some(listed.target));
        assert_eq!(fd_inode(me, fd), Some(listed.inode));
        // SAFETY: gettid(2) has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        // This thread is running this test, not asleep in a system call.
        assert_eq!(thread_stat(me, tid).map(|s| s.state), Some('R'));
        assert_eq!(tgid(tid), Some(me));
        assert!(!exists(u32::MAX));
    }
}
