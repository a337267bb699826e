//! Changes to a cache that a link cannot redirect: every deletion, rename and creation
//! under a cache root goes through open directory descriptors.
//!
//! Anyone who may write into a cache may plant links in it or swap a directory for a link
//! at any moment (see the README's trust model). So:
//! - A root (a cache directory, `$TMPDIR`) is opened once, `open(O_DIRECTORY | O_NOFOLLOW |
//!   O_CLOEXEC)`. Its path is the user's: if its last component is a link, the path is
//!   resolved once and the resolved path opened the same way.
//! - Below a root, a directory is reached one component at a time, `openat(parent, name,
//!   O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)`, from its parent's descriptor; a name is a
//!   single component (never `/`, `.` or `..`). Paths are kept only to name things in
//!   errors and logs.
//! - An entry is removed with `unlinkat(parent, name)`. A recursive removal walks
//!   descriptors, never paths: a child that does not open as a directory with
//!   `O_NOFOLLOW` (`ENOTDIR`, `ELOOP`) is unlinked as a file or link, never followed.
//!   Files are never opened for writing or truncated: a hard link is unlinked, and the
//!   file it shares an inode with keeps its content.
//! - Renames are `renameat` between two open parent descriptors; they move the entry
//!   itself, a link as a link.
//! - Files and directories are created with `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` or
//!   `mkdirat` relative to the parent's descriptor; an existing file (a lock file) is
//!   opened with `O_NOFOLLOW | O_NONBLOCK` and used only if it is a regular file.
//! - The walk is iterative (no recursion a deep tree could overflow) and holds one
//!   descriptor per level; a tree too deep for the descriptor limit fails with an error,
//!   nothing else.
//!
//! # Parallel removal
//!
//! [`DirFd::remove_entries_parallel`] removes trees with several threads, under the same
//! rules: each thread walks descriptors exactly as above. The threads share a stack of
//! jobs, each a subdirectory to remove given by its parent's open descriptor and its
//! name; whoever takes a job opens it, pushes its subdirectories as new jobs and unlinks
//! its other entries, and the thread that finishes a directory's last job removes the
//! directory from its parent (or, if something was added meanwhile, makes it a job
//! again, a bounded number of times). Descriptors stay bounded: a directory is shared
//! only while fewer than [`SHARED_DIRS`] shared directories are open, and is otherwise
//! walked by one thread, one descriptor per level; the stack is last in, first out, so
//! the threads go deep before they go wide.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode as FileMode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use crate::error::Error;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How many times an entry that changes kind or gains entries while it is being removed
/// is tried again before the removal gives up with an error.
const RETRIES: u32 = 16;

/// A hook for tests only: called with the path of each directory [`DirFd::open_dir`]
/// has just opened, before anything is done with it, so that a test can swap a path
/// component for a link at that exact point. Never set outside tests.
#[doc(hidden)]
pub static AFTER_OPEN_DIR: std::sync::RwLock<Option<fn(&Path)>> = std::sync::RwLock::new(None);

/// What a removal removed: files and links (not directories), and their sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Files and links unlinked.
    pub files: u64,
    /// Their sizes (as `lstat` gave them just before the unlink).
    pub bytes: u64,
}

/// An open directory: every operation is relative to its descriptor.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

/// True for the errors of `openat(O_DIRECTORY | O_NOFOLLOW)` on something that is not a
/// directory (a file, or a link, whatever it points to).
pub fn is_not_dir(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP))
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn checked(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a single file name", name.to_string_lossy()),
        ));
    }
    Ok(name)
}

/// A fresh name `<prefix><12 random letters or digits>`.
fn random_name(prefix: &str) -> OsString {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let mut bits = hasher.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut name = prefix.to_string();
    for _ in 0..10 {
        name.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    OsString::from(name)
}

impl DirFd {
    /// Opens a root directory (see the module documentation).
    pub fn open_root(path: &Path) -> io::Result<DirFd> {
        match rustix::fs::open(path, DIR_FLAGS, FileMode::empty()) {
            Ok(fd) => Ok(DirFd {
                fd,
                path: path.to_path_buf(),
            }),
            Err(Errno::LOOP) => {
                let resolved = std::fs::canonicalize(path)?;
                let fd = rustix::fs::open(&resolved, DIR_FLAGS, FileMode::empty())?;
                Ok(DirFd {
                    fd,
                    path: path.to_path_buf(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The path this directory was reached by (for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the entry `name` (for messages only).
    pub fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the subdirectory `name`; a link or a file fails ([`is_not_dir`]).
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<DirFd> {
        let name = checked(name.as_ref())?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, FileMode::empty())?;
        let dir = DirFd {
            fd,
            path: self.path.join(name),
        };
        if let Ok(hook) = AFTER_OPEN_DIR.read()
            && let Some(hook) = *hook
        {
            hook(&dir.path);
        }
        Ok(dir)
    }

    /// Opens the subdirectory `name`, creating it (mode 0o777 less the umask) if it
    /// does not exist; a link or a file there fails ([`is_not_dir`]).
    pub fn open_or_create_dir(&self, name: impl AsRef<OsStr>) -> io::Result<DirFd> {
        let name = checked(name.as_ref())?;
        match rustix::fs::mkdirat(&self.fd, name, FileMode::from_raw_mode(0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.open_dir(name)
    }

    /// Creates a directory `<prefix><random>` (mode 0o777 less the umask, as a
    /// `tempfile` directory) and opens it.
    pub fn create_unique_dir(&self, prefix: &str) -> io::Result<DirFd> {
        loop {
            let name = random_name(prefix);
            match rustix::fs::mkdirat(&self.fd, &name, FileMode::from_raw_mode(0o777)) {
                Ok(()) => return self.open_dir(&name),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The names in this directory (without `.` and `..`), in no particular order.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    /// The names in this directory, each with whether `readdir` says it is a directory.
    /// That is a hint for scheduling only: the entry may change kind at any moment.
    fn entries_with_kind(&self) -> io::Result<Vec<(OsString, bool)>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                let is_dir = entry.file_type() == FileType::Directory;
                names.push((OsStr::from_bytes(name).to_os_string(), is_dir));
            }
        }
        Ok(names)
    }

    /// `lstat` of the entry `name`: a link is described, not followed.
    pub fn stat_entry(&self, name: impl AsRef<OsStr>) -> io::Result<Stat> {
        let name = checked(name.as_ref())?;
        Ok(rustix::fs::statat(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// `fstat` of this directory.
    pub fn stat(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Opens the regular file `name` (read-only, or read-write with `write`) without
    /// following a link; `Ok(None)` if it does not exist. Anything but a regular file
    /// (a link, a FIFO, a directory) fails with `InvalidInput`.
    pub fn open_file(&self, name: impl AsRef<OsStr>, write: bool) -> io::Result<Option<File>> {
        let name = checked(name.as_ref())?;
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, FileMode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(not_regular(name)),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
            return Err(not_regular(name));
        }
        Ok(Some(File::from(fd)))
    }

    /// Creates the file `name` (mode `mode`, exactly: the umask is undone by `fchmod`);
    /// fails if anything (a link too) is there already.
    pub fn create_file(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = checked(name.as_ref())?;
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, FileMode::from_raw_mode(mode))?;
        rustix::fs::fchmod(&fd, FileMode::from_raw_mode(mode))?;
        Ok(File::from(fd))
    }

    /// Creates a file under a fresh name `<prefix><random>` (see [`DirFd::create_file`]);
    /// returns it and its name.
    pub fn create_unique_file(&self, prefix: &str, mode: u32) -> io::Result<(File, OsString)> {
        loop {
            let name = random_name(prefix);
            match self.create_file(&name, mode) {
                Ok(file) => return Ok((file, name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the symbolic link `name` pointing to `target`.
    pub fn symlink(&self, target: &Path, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = checked(name.as_ref())?;
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    /// `renameat(self, from, to_dir, to)`: moves the entry itself (a link as a link),
    /// replacing an empty directory or a file at `to` as rename(2) does.
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &DirFd,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        self.rename_with(from.as_ref(), to_dir, to.as_ref(), RenameFlags::empty())
    }

    /// Like [`DirFd::rename`], but fails with `AlreadyExists` rather than replace anything.
    pub fn rename_noreplace(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &DirFd,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        self.rename_with(from.as_ref(), to_dir, to.as_ref(), RenameFlags::NOREPLACE)
    }

    fn rename_with(
        &self,
        from: &OsStr,
        to_dir: &DirFd,
        to: &OsStr,
        flags: RenameFlags,
    ) -> io::Result<()> {
        let (from, to) = (checked(from)?, checked(to)?);
        Ok(rustix::fs::renameat_with(
            &self.fd, from, &to_dir.fd, to, flags,
        )?)
    }

    /// Unlinks the file or link `name` (never a directory); `Ok(false)` if it is gone.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        let name = checked(name.as_ref())?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the empty directory `name`; `Ok(false)` if it is gone.
    pub fn remove_empty_dir(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        let name = checked(name.as_ref())?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the entry `name` and, if it is a directory, everything in it, through
    /// descriptors (see the module documentation). An entry that vanishes meanwhile is
    /// fine; one that keeps changing under the removal is an error.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>, removed: &mut Removed) -> Result<(), Error> {
        let name = checked(name.as_ref()).map_err(|e| Error::io("remove", self.path(), e))?;
        remove_tree_at(self, name, removed)
    }

    /// Takes `flock(LOCK_EX | LOCK_NB)` on this directory's own descriptor: `Ok(true)` if
    /// granted (held until the descriptor closes), `Ok(false)` if another holds it.
    pub fn try_lock_exclusive(&self) -> io::Result<bool> {
        match rustix::fs::flock(
            &self.fd,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the entries `names` of this directory and everything in them, as
    /// [`DirFd::remove_tree`] does one by one, with up to `threads` threads sharing the
    /// subdirectories (see the module documentation, "Parallel removal"); one thread is the
    /// sequential walk. On an error the other threads stop at their next directory and
    /// the first error is returned; `removed` counts everything removed, error or not.
    pub fn remove_entries_parallel(
        &self,
        names: Vec<OsString>,
        threads: usize,
        removed: &mut Removed,
    ) -> Result<(), Error> {
        let names = names
            .into_iter()
            .map(|n| match checked(&n) {
                Ok(_) => Ok(n),
                Err(e) => Err(Error::io("remove", self.path(), e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if threads <= 1 {
            for name in names {
                remove_tree_at(self, &name, removed)?;
            }
            return Ok(());
        }
        parallel::remove(self, names, threads, removed)
    }

    /// Removes everything inside this directory, which stays (see [`DirFd::remove_tree`]).
    pub fn remove_contents(&self, removed: &mut Removed) -> Result<(), Error> {
        let names = self
            .entries()
            .map_err(|e| Error::io("list", self.path(), e))?;
        for name in names {
            remove_tree_at(self, &name, removed)?;
        }
        Ok(())
    }
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn not_regular(name: &OsStr) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "`{}` is not a regular file (a link, a directory or a device); it is not followed",
            name.to_string_lossy()
        ),
    )
}

/// What became of one attempt on an entry.
enum Step {
    /// Unlinked or gone: nothing left to do.
    Done,
    /// A directory, opened: its entries go first.
    Dir(DirFd),
}

/// Unlinks `name` in `parent` if it is not a directory, or opens it if it is.
fn unlink_or_open(parent: &DirFd, name: &OsStr, removed: &mut Removed) -> Result<Step, Error> {
    unlink_or_open_from(parent, name, true, removed)
}

/// [`unlink_or_open`]; without `open_first` (`readdir` said it is no directory) the
/// unlink is tried first, and the entry is opened only if it turns out a directory.
fn unlink_or_open_from(
    parent: &DirFd,
    name: &OsStr,
    open_first: bool,
    removed: &mut Removed,
) -> Result<Step, Error> {
    let io = |action, e: io::Error| Error::io(action, parent.child_path(name), e);
    let mut open = open_first;
    for _ in 0..RETRIES {
        if open {
            match parent.open_dir(name) {
                Ok(dir) => return Ok(Step::Dir(dir)),
                Err(e) if is_not_found(&e) => return Ok(Step::Done),
                Err(e) if is_not_dir(&e) => {}
                Err(e) => return Err(io("open the directory", e)),
            }
        }
        open = true;
        // A file, a link (never followed), a FIFO…: unlinked. Its size is only counted.
        let size = match parent.stat_entry(name) {
            Ok(stat) => u64::try_from(stat.st_size).unwrap_or(0),
            Err(e) if is_not_found(&e) => return Ok(Step::Done),
            Err(e) => return Err(io("inspect", e)),
        };
        match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) => {
                removed.files += 1;
                removed.bytes += size;
                return Ok(Step::Done);
            }
            Err(Errno::NOENT) => return Ok(Step::Done),
            // A directory after all (replaced since the open, or one `readdir` did not
            // call one): try again, opening it.
            Err(Errno::ISDIR) | Err(Errno::PERM) if is_dir_now(parent, name) => continue,
            Err(e) => return Err(io("remove", e.into())),
        }
    }
    Err(io("remove", changing()))
}

fn is_dir_now(parent: &DirFd, name: &OsStr) -> bool {
    parent
        .stat_entry(name)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
}

fn changing() -> io::Error {
    io::Error::other("it kept changing while it was being removed")
}

struct Frame {
    dir: DirFd,
    name: OsString,
    pending: Vec<OsString>,
    tries: u32,
}

fn frame(dir: DirFd, name: &OsStr, tries: u32) -> Result<Frame, Error> {
    let pending = dir
        .entries()
        .map_err(|e| Error::io("list", dir.path(), e))?;
    Ok(Frame {
        dir,
        name: name.to_os_string(),
        pending,
        tries,
    })
}

fn remove_tree_at(top: &DirFd, name: &OsStr, removed: &mut Removed) -> Result<(), Error> {
    let mut stack: Vec<Frame> = Vec::new();
    match unlink_or_open(top, name, removed)? {
        Step::Done => return Ok(()),
        Step::Dir(dir) => stack.push(frame(dir, name, 0)?),
    }
    while let Some(current) = stack.last_mut() {
        if let Some(child) = current.pending.pop() {
            if let Step::Dir(dir) = unlink_or_open(&current.dir, &child, removed)? {
                stack.push(frame(dir, &child, 0)?);
            }
            continue;
        }
        let Some(done) = stack.pop() else { break };
        let parent = stack.last().map_or(top, |f| &f.dir);
        if remove_emptied_dir(parent, &done.name, done.tries)? == Emptied::Again {
            // That entry is removed in turn.
            drop(done.dir);
            if let Step::Dir(dir) = unlink_or_open(parent, &done.name, removed)? {
                let again = frame(dir, &done.name, done.tries + 1)?;
                stack.push(again);
            }
        }
    }
    Ok(())
}

/// What became of a directory a walk had emptied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Emptied {
    /// It is gone.
    Gone,
    /// Something was added meanwhile, or the name now holds another entry (a link,
    /// another directory): the walk takes the name again.
    Again,
}

/// Removes the directory `name` of `parent`, which a walk has emptied on its
/// `tries + 1`-th try; a name that keeps changing is an error after [`RETRIES`] tries.
fn remove_emptied_dir(parent: &DirFd, name: &OsStr, tries: u32) -> Result<Emptied, Error> {
    let path = || parent.child_path(name);
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(Emptied::Gone),
        Err(Errno::NOTEMPTY) | Err(Errno::EXIST) | Err(Errno::NOTDIR) => {
            if tries + 1 >= RETRIES {
                Err(Error::io("remove the directory", path(), changing()))
            } else {
                Ok(Emptied::Again)
            }
        }
        Err(e) => Err(Error::io("remove the directory", path(), e.into())),
    }
}

/// A directory of this process's own (a temporary cache, a build, a run's overlay),
/// removed through descriptors when dropped, unless kept.
#[derive(Debug)]
pub struct OwnedTree {
    parent: DirFd,
    name: OsString,
    dir: DirFd,
    path: PathBuf,
    remove_on_drop: bool,
}

impl OwnedTree {
    /// Creates `<prefix><random>` in `parent` ([`DirFd::create_unique_dir`]).
    pub fn create_in(parent: DirFd, prefix: &str) -> io::Result<OwnedTree> {
        let dir = parent.create_unique_dir(prefix)?;
        let name = dir
            .path()
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        Ok(OwnedTree {
            path: dir.path().to_path_buf(),
            parent,
            name,
            dir,
            remove_on_drop: true,
        })
    }

    /// Its path (for messages, and to hand to a child).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its name in its parent.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The directory it was created in.
    pub fn parent(&self) -> &DirFd {
        &self.parent
    }

    /// The directory itself.
    pub fn dir(&self) -> &DirFd {
        &self.dir
    }

    /// With `keep`, dropping it leaves the directory in place.
    pub fn disable_cleanup(&mut self, keep: bool) {
        self.remove_on_drop = !keep;
    }

    /// Removes it now, reporting what failed.
    pub fn close(mut self) -> Result<Removed, Error> {
        self.remove_on_drop = false;
        let mut removed = Removed::default();
        self.parent.remove_tree(&self.name, &mut removed)?;
        Ok(removed)
    }
}

impl Drop for OwnedTree {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = self.parent.remove_tree(&self.name, &mut Removed::default());
        }
    }
}

/// At most this many directories are open for sharing between the threads of a
/// parallel removal (each thread's own walk adds one per level).
pub const SHARED_DIRS: usize = 256;

mod parallel {
    use std::ffi::OsString;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};

    use super::{
        DirFd, Emptied, Removed, SHARED_DIRS, Step, remove_emptied_dir, remove_tree_at,
        unlink_or_open, unlink_or_open_from,
    };
    use crate::error::Error;

    /// A shared directory, open, whose entries are being removed.
    struct Node {
        dir: DirFd,
        name: OsString,
        /// None: a direct entry of the top directory.
        parent: Option<Arc<Node>>,
        /// Its jobs not finished yet, plus one while its own job lists it.
        pending: AtomicUsize,
        tries: u32,
    }

    /// Remove `name` in `parent` (the top directory if none).
    struct Job {
        parent: Option<Arc<Node>>,
        name: OsString,
        tries: u32,
    }

    struct Queue {
        jobs: Vec<Job>,
        /// Threads running a job.
        busy: usize,
        failed: Option<Error>,
    }

    struct Pool<'a> {
        top: &'a DirFd,
        queue: Mutex<Queue>,
        wake: Condvar,
        /// Shared directories open, or about to be (a [`Node`] each).
        shared: AtomicUsize,
    }

    pub(super) fn remove(
        top: &DirFd,
        names: Vec<OsString>,
        threads: usize,
        removed: &mut Removed,
    ) -> Result<(), Error> {
        let pool = Pool {
            top,
            queue: Mutex::new(Queue {
                jobs: names
                    .into_iter()
                    .rev()
                    .map(|name| Job {
                        parent: None,
                        name,
                        tries: 0,
                    })
                    .collect(),
                busy: 0,
                failed: None,
            }),
            wake: Condvar::new(),
            shared: AtomicUsize::new(0),
        };
        let counts = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(|| pool.work())).collect();
            let mut counts = vec![pool.work()];
            for helper in helpers {
                match helper.join() {
                    Ok(c) => counts.push(c),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            counts
        });
        for c in counts {
            removed.files += c.files;
            removed.bytes += c.bytes;
        }
        let queue = pool.queue.into_inner().unwrap_or_else(|e| e.into_inner());
        match queue.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    impl Pool<'_> {
        fn lock(&self) -> MutexGuard<'_, Queue> {
            // A panicking worker panics the whole removal (the scope resumes it); the
            // queue itself is never left half changed.
            self.queue.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn push(&self, job: Job) {
            self.lock().jobs.push(job);
            self.wake.notify_one();
        }

        /// Runs jobs until there are none and no thread can make more, or one failed.
        fn work(&self) -> Removed {
            let mut removed = Removed::default();
            loop {
                let job = {
                    let mut queue = self.lock();
                    loop {
                        if queue.failed.is_some() {
                            return removed;
                        }
                        if let Some(job) = queue.jobs.pop() {
                            queue.busy += 1;
                            break job;
                        }
                        if queue.busy == 0 {
                            self.wake.notify_all();
                            return removed;
                        }
                        queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let result = self.run(job, &mut removed);
                let mut queue = self.lock();
                queue.busy -= 1;
                if let Err(e) = result {
                    match &queue.failed {
                        None => queue.failed = Some(e),
                        Some(_) => tracing::warn!("removal failed after an earlier failure: {e}"),
                    }
                }
                if queue.busy == 0 || queue.failed.is_some() {
                    self.wake.notify_all();
                }
            }
        }

        fn parent_dir<'n>(&'n self, parent: &'n Option<Arc<Node>>) -> &'n DirFd {
            parent.as_ref().map_or(self.top, |p| &p.dir)
        }

        fn run(&self, job: Job, removed: &mut Removed) -> Result<(), Error> {
            let parent = self.parent_dir(&job.parent);
            let room = self
                .shared
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                    (open < SHARED_DIRS).then_some(open + 1)
                });
            if room.is_err() {
                // Enough open already: this subtree is walked here alone.
                remove_tree_at(parent, &job.name, removed)?;
                return self.finish(job.parent);
            }
            let dir = match unlink_or_open(parent, &job.name, removed)? {
                Step::Done => {
                    self.shared.fetch_sub(1, Ordering::Relaxed);
                    return self.finish(job.parent);
                }
                Step::Dir(dir) => dir,
            };
            let entries = dir
                .entries_with_kind()
                .map_err(|e| Error::io("list", dir.path(), e))?;
            let node = Arc::new(Node {
                dir,
                name: job.name,
                parent: job.parent,
                pending: AtomicUsize::new(1),
                tries: job.tries,
            });
            let share = |name: OsString| {
                node.pending.fetch_add(1, Ordering::AcqRel);
                self.push(Job {
                    parent: Some(node.clone()),
                    name,
                    tries: 0,
                });
            };
            let mut others = Vec::with_capacity(entries.len());
            for (name, is_dir) in entries {
                if is_dir {
                    share(name);
                } else {
                    others.push(name);
                }
            }
            for name in others {
                if let Step::Dir(dir) = unlink_or_open_from(&node.dir, &name, false, removed)? {
                    // A directory now: shared like the others (opened again by its job).
                    drop(dir);
                    share(name);
                }
            }
            self.finish(Some(node))
        }

        /// One job of `node` is done; the last removes the directory, then counts as a
        /// job done of its parent, and so on up.
        fn finish(&self, mut node: Option<Arc<Node>>) -> Result<(), Error> {
            while let Some(done) = node {
                if done.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                    return Ok(());
                }
                let parent = self.parent_dir(&done.parent);
                if remove_emptied_dir(parent, &done.name, done.tries)? == Emptied::Again {
                    // The name becomes a job again (its parent still counts it).
                    self.shared.fetch_sub(1, Ordering::Relaxed);
                    self.push(Job {
                        parent: done.parent.clone(),
                        name: done.name.clone(),
                        tries: done.tries + 1,
                    });
                    return Ok(());
                }
                self.shared.fetch_sub(1, Ordering::Relaxed);
                node = done.parent.clone();
            }
            Ok(())
        }
    }
}
