//! cachelock-inspect: who holds or waits for a flock(2) lock, and which processes are
//! behind it, as Linux's `/proc` tells. The one reader of `/proc` in the cachelock
//! workspace: the `cachelock status` command, the gate (`cachelock-gate`), the
//! conformance harnesses and the tests all ask here.
//!
//! What it reads, and nothing else:
//! - `/proc/locks`, the kernel's lock table ([`locks`]): the flock(2) locks granted and the
//!   requests waiting (`->` lines), by pid and inode.
//! - `/proc/PID/{stat,status,cmdline,comm,wchan,cwd,exe}` and
//!   `/proc/PID/task/*/{stat,syscall,wchan}` ([`process`]): a process's state, parent,
//!   process group, start time, command line, directory and program, and whether (and
//!   where, thread by thread) it sleeps.
//! - `/proc/PID/fd` and `/proc/PID/fdinfo` ([`process::fds`], one by one
//!   [`process::fd_target`]): the files a process has open and whether it holds a lock
//!   through each descriptor.
//! - [`wait`] puts these together: is a process waiting for a lock, on which file, and
//!   who holds a lock through an inherited descriptor.
//!
//! It never takes a lock, never signals a process and never writes: looking cannot change
//! what is looked at (a lock probe would, for the moment it holds the lock). Every
//! answer is a snapshot that may be stale when it is returned. A process that is gone,
//! or not ours to look at, gives an empty answer (`None`, `false`, an empty list), never
//! an error. On a system without `/proc` every function returns nothing.
//!
//! Files are matched by inode number: on overlay file systems the device `/proc/locks`
//! prints is not the one `stat(2)` reports ([`locks::FlockEntry::device`] is there for
//! callers that know their file system).

pub mod locks;
pub mod process;
pub mod wait;
