//! The gate: real processes run under ptrace and a seccomp filter, and stop at the
//! protocol's steps until the harness lets them go.
//!
//! How a process tree comes under the gate:
//! - [`Gate::spawn`] forks the command with `PTRACE_TRACEME` and the seccomp filter
//!   ([`crate::filter`]) installed before its `execve`. The kernel stops it after the
//!   exec; the gate then sets `PTRACE_O_TRACESECCOMP | TRACEFORK | TRACEVFORK |
//!   TRACECLONE | TRACEEXEC | TRACEEXIT | TRACESYSGOOD | EXITKILL` and lets it run.
//!   Every thread and process it starts from then on is traced too (uv locks on worker
//!   threads), and inherits the filter.
//! - Only the filtered calls stop. Each stop is decoded (path arguments read from the
//!   tracee's memory, directory descriptors and lock descriptors resolved through
//!   `/proc`) and named by [`crate::vocab`]. A call that is not a protocol step is let go
//!   at once; a step is recorded as an [`Event`], and in a tree spawned with
//!   [`Hold::Steps`] it stays stopped until [`Gate::release`].
//! - A released step is resumed with `PTRACE_SYSCALL`, so its return is seen too
//!   ([`Gate::result`]). A released `flock` that blocks is seen blocked by
//!   [`Gate::settle`]: the thread sleeps in the kernel's flock wait (`/proc`), which is a
//!   fact, never a guess from time.
//!
//! The gate is used from one thread (ptrace requests must come from the tracer thread,
//! and `Gate` is not `Send`). It waits only for its own thread's children and tracees
//! (`__WNOTHREAD`), so other threads' child processes are not disturbed; a process the
//! same thread starts outside the gate should be started through it instead
//! ([`Hold::Nothing`]).
//!
//! Nothing is left behind: [`Gate::kill_all`] and `Drop` kill and reap the whole traced
//! tree, and `PTRACE_O_EXITKILL` kills it if the tracing thread dies anyway.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::IoSliceMut;
use std::marker::PhantomData;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use std::time::{Duration, Instant};

use cachelock_inspect::{process, wait};
use cachelock_model::protocol::Step;
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{self, Signal};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::filter;
use crate::vocab::{Context, Places, Syscall, normalize};

/// How often [`Gate::settle`] and the deadline-bounded waits look again. It decides
/// no order: each look reads a fact, and a deadline only bounds a failure.
const LOOK_AGAIN: Duration = Duration::from_millis(1);

/// The number of an event, in the order the gate saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub usize);

/// One stop of a traced thread, named in the model's vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its number.
    pub id: EventId,
    /// The process (thread group).
    pub pid: i32,
    /// The thread that made the call.
    pub tid: i32,
    /// The traced process that started this one, if any.
    pub parent: Option<i32>,
    /// The call.
    pub syscall: Syscall,
    /// The path it is about: the file opened, locked, created or removed, the new name
    /// of a rename, the program of an exec.
    pub path: Option<PathBuf>,
    /// The old name of a rename.
    pub from: Option<PathBuf>,
    /// The inode: of the locked descriptor (`flock`), of the file removed or renamed,
    /// of the file opened (known once the open returned, see [`Record`]).
    pub inode: Option<u64>,
    /// The protocol step, if the call is one.
    pub step: Option<Step>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(step) => write!(f, "{} {step}", self.pid)?,
            None => write!(f, "{} {}", self.pid, self.syscall)?,
        }
        if let Some(p) = &self.path {
            write!(f, " {}", p.display())?;
        }
        Ok(())
    }
}

/// An event and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The event.
    pub event: Event,
    /// The call's return value once it returned (a negative errno on failure); `None`
    /// while it is stopped, running or blocked, and for calls that do not return.
    pub result: Option<i64>,
    /// The inode of the file an `open` returned a descriptor on.
    pub opened_inode: Option<u64>,
}

/// One thing the gate saw happen, in the order it saw them: a step was taken (its call
/// entered), a released call returned, a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// Event `id` stopped at the gate (its call entered).
    Entered(EventId),
    /// The call of event `id` returned (see [`Record::result`]).
    Returned(EventId),
    /// Process `pid` ended (its exit status was reaped).
    Ended(i32),
}

/// Which stops of a spawned tree wait for the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Every protocol step and every `exit_group` stays stopped until released.
    Steps,
    /// Nothing is held: steps are recorded and let go at once (trace mode, helpers).
    Nothing,
}

/// How a traced process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// What a released step came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The call returned this value (negative: `-errno`).
    Returned(i64),
    /// The thread sleeps in the kernel's flock wait.
    Blocked,
    /// The thread is gone (killed, or its process exited) before the call returned.
    Gone,
}

/// A process started by [`Gate::spawn`], with the pipes the command asked for.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: i32,
    /// Its standard input, if piped.
    pub stdin: Option<ChildStdin>,
    /// Its standard output, if piped.
    pub stdout: Option<ChildStdout>,
    /// Its standard error, if piped.
    pub stderr: Option<ChildStderr>,
}

/// What went wrong.
#[derive(Debug)]
pub enum Error {
    /// ptrace (or the seccomp filter) cannot be used here.
    Unavailable(String),
    /// The command could not be started.
    Spawn(std::io::Error),
    /// A ptrace or wait request failed unexpectedly.
    Trace(String),
    /// A deadline passed before what was waited for was seen.
    Timeout(String),
    /// The event is not stopped (never held, or already released).
    NotHeld(EventId),
    /// Every traced thread is stopped at a held step: waiting for the next event would
    /// wait forever.
    AllHeld(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable(m) => write!(f, "the gate cannot trace processes here: {m}"),
            Error::Spawn(e) => write!(f, "cannot start the command: {e}"),
            Error::Trace(m) => write!(f, "tracing failed: {m}"),
            Error::Timeout(m) => write!(f, "not seen in time: {m}"),
            Error::NotHeld(id) => write!(f, "event {} is not stopped at the gate", id.0),
            Error::AllHeld(m) => write!(
                f,
                "every traced thread is stopped at a held step, nothing can happen until one is released: {m}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Called with every event as it is recorded.
type Observer = Box<dyn FnMut(&Event)>;

/// A decoded call: the call, its path, the old path of a rename, the inode.
type Decoded = (Syscall, Option<PathBuf>, Option<PathBuf>, Option<u64>);

/// A traced thread.
struct Tracee {
    tgid: i32,
    /// Attached but its first stop (the attach `SIGSTOP`) not seen yet.
    fresh: bool,
}

/// A traced process.
struct ProcInfo {
    hold: Hold,
    parent: Option<i32>,
    took_step: bool,
    /// It renamed a signal file into place (a probe's daemon, which takes no step).
    signalled: bool,
    /// It locked the cache's `.lock` shared: a user of the cache, not a cleaner.
    locked_shared: bool,
    /// Its arguments as of its last exec (a forked process that has not exec'd yet has
    /// its parent's), read from `/proc/PID/cmdline` when the exec stop was seen.
    argv: Vec<String>,
    /// The timeline's length when the gate first saw it, before it ran an instruction.
    started: usize,
}

/// A traced process as the gate saw it: who started it, what it runs, how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// The traced process that started it, if any.
    pub parent: Option<i32>,
    /// Its arguments at its last exec (`/proc/PID/cmdline`, read at the exec stop, before
    /// the new program ran an instruction); a process that never exec'd has its parent's.
    pub argv: Vec<String>,
    /// How it ended, once it has: an exit code, or the signal that killed it (the
    /// wait status the gate reaped).
    pub exit: Option<Exit>,
    /// How many moments the timeline had when the gate first saw it (it had not run an
    /// instruction yet): every call that returned before that moment was done before
    /// it started.
    pub started: usize,
}

/// The scheduler. See the module documentation.
pub struct Gate {
    places: Places,
    program: seccompiler::BpfProgram,
    tracees: HashMap<i32, Tracee>,
    procs: HashMap<i32, ProcInfo>,
    records: Vec<Record>,
    timeline: Vec<Moment>,
    /// Held events not handed out by [`Gate::next_event`] yet.
    queue: VecDeque<EventId>,
    /// Threads stopped at a held event.
    stopped: HashMap<i32, EventId>,
    /// Threads released from an event whose return is not seen yet.
    awaiting: HashMap<i32, EventId>,
    exits: HashMap<i32, Exit>,
    observer: Option<Observer>,
    /// Paths a rename onto which is reported (and held) though it is no protocol step:
    /// a harness's signal that a process got somewhere (the probe child runs).
    signals: Vec<PathBuf>,
    /// ptrace requests must come from the thread that traces.
    _one_thread: PhantomData<*const ()>,
}

impl Gate {
    /// A gate for processes using the cache at `cache`.
    pub fn new(cache: &Path) -> Result<Gate, Error> {
        let program = filter::program()
            .map_err(|e| Error::Unavailable(format!("cannot build the seccomp filter: {e}")))?;
        Ok(Gate {
            places: Places::new(cache),
            program,
            tracees: HashMap::new(),
            procs: HashMap::new(),
            records: Vec::new(),
            timeline: Vec::new(),
            queue: VecDeque::new(),
            stopped: HashMap::new(),
            awaiting: HashMap::new(),
            exits: HashMap::new(),
            observer: None,
            signals: Vec::new(),
            _one_thread: PhantomData,
        })
    }

    /// The cache root the gate names steps against.
    pub fn cache(&self) -> &Path {
        self.places.cache()
    }

    /// Calls `f` with every event as it is recorded (before it is held or let go).
    pub fn on_event(&mut self, f: impl FnMut(&Event) + 'static) {
        self.observer = Some(Box::new(f));
    }

    /// Starts `cmd` under the gate. Its whole tree is traced; `hold` says whether its
    /// steps wait for [`Gate::release`].
    pub fn spawn(&mut self, mut cmd: Command, hold: Hold) -> Result<Spawned, Error> {
        let program = self.program.clone();
        // SAFETY: between fork and exec the closure only makes system calls
        // (ptrace, prctl, seccomp) on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                ptrace::traceme().map_err(std::io::Error::from)?;
                seccompiler::apply_filter(&program).map_err(|e| match e {
                    seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                    _ => std::io::Error::from_raw_os_error(libc::EINVAL),
                })
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENOSYS) => {
                Error::Unavailable(format!(
                    "PTRACE_TRACEME or the seccomp filter was refused in the child ({e}); \
                 ptrace is forbidden in this environment (a container without CAP_SYS_PTRACE, \
                 a seccomp profile that blocks ptrace, or kernel.yama.ptrace_scope=3)"
                ))
            }
            _ => Error::Spawn(e),
        })?;
        let pid = child.id() as i32;
        // The first stop is the SIGTRAP of the traced exec.
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {}
            Ok(WaitStatus::Exited(_, code)) => {
                return Err(Error::Trace(format!(
                    "process {pid} exited ({code}) before it could be traced"
                )));
            }
            other => {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
                return Err(Error::Trace(format!(
                    "process {pid}: unexpected first stop {other:?}"
                )));
            }
        }
        let options = ptrace::Options::PTRACE_O_TRACESECCOMP
            | ptrace::Options::PTRACE_O_TRACEFORK
            | ptrace::Options::PTRACE_O_TRACEVFORK
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEEXEC
            | ptrace::Options::PTRACE_O_TRACEEXIT
            | ptrace::Options::PTRACE_O_TRACESYSGOOD
            | ptrace::Options::PTRACE_O_EXITKILL;
        if let Err(e) = ptrace::setoptions(Pid::from_raw(pid), options) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
            return Err(Error::Unavailable(format!("PTRACE_SETOPTIONS: {e}")));
        }
        self.tracees.insert(
            pid,
            Tracee {
                tgid: pid,
                fresh: false,
            },
        );
        self.procs.insert(
            pid,
            ProcInfo {
                hold,
                parent: None,
                took_step: false,
                signalled: false,
                locked_shared: false,
                argv: process::argv(pid as u32).unwrap_or_default(),
                started: self.timeline.len(),
            },
        );
        let spawned = Spawned {
            pid,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        self.resume(pid, None);
        Ok(spawned)
    }

    /// Every event so far, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// What happened, in order.
    pub fn timeline(&self) -> &[Moment] {
        &self.timeline
    }

    /// The event `id`.
    pub fn event(&self, id: EventId) -> &Event {
        &self.records[id.0].event
    }

    /// The return value of event `id`, once seen.
    pub fn result(&self, id: EventId) -> Option<i64> {
        self.records.get(id.0).and_then(|r| r.result)
    }

    /// How process `pid` ended, once it has.
    pub fn exit_of(&self, pid: i32) -> Option<Exit> {
        self.exits.get(&pid).copied()
    }

    /// Every process the gate traced, in pid order, with its parent, its arguments and
    /// (once it ended) its exit.
    pub fn processes(&self) -> Vec<Process> {
        let mut v: Vec<Process> = self
            .procs
            .iter()
            .map(|(pid, info)| Process {
                pid: *pid,
                parent: info.parent,
                argv: info.argv.clone(),
                exit: self.exits.get(pid).copied(),
                started: info.started,
            })
            .collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    /// True while any traced thread is alive.
    pub fn alive(&self) -> bool {
        !self.tracees.is_empty()
    }

    /// The pids of the traced processes still alive.
    pub fn live_pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.tracees.values().map(|t| t.tgid).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Reports a rename onto `path` as an event (no step; held like a step), so that a
    /// harness can wait for a signal file without looking for it again and again.
    pub fn signal_on_rename_to(&mut self, path: &Path) {
        self.signals.push(path.to_path_buf());
    }

    /// Takes in whatever the traced threads did meanwhile, without waiting: their exits
    /// ([`Gate::exit_of`]) and their stops (queued for [`Gate::next_event`]).
    pub fn take_in(&mut self) -> Result<(), Error> {
        self.pump_ready()
    }

    /// The next held event, waiting (in `waitpid`) as long as it takes. `None` once no
    /// traced process is left.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(id) = self.queue.pop_front() {
                return Ok(Some(self.event(id).clone()));
            }
            if self.tracees.is_empty() {
                return Ok(None);
            }
            self.check_not_all_held()?;
            match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD)) {
                Ok(status) => self.handle(status),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    self.tracees.clear();
                }
                Err(e) => return Err(Error::Trace(format!("waitpid: {e}"))),
            }
        }
    }

    /// [`Gate::next_event`], but failing once `deadline` has passed.
    pub fn next_event_before(&mut self, deadline: Instant) -> Result<Option<Event>, Error> {
        loop {
            self.pump_ready()?;
            if let Some(id) = self.queue.pop_front() {
                return Ok(Some(self.event(id).clone()));
            }
            if self.tracees.is_empty() {
                return Ok(None);
            }
            self.check_not_all_held()?;
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "no next step; alive: {:?}, stopped: {}",
                    self.live_pids(),
                    self.describe_stopped()
                )));
            }
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    /// Waits for the next held event that `want` accepts, releasing every other one on
    /// the way. Fails at `deadline`, or if the traced processes are all gone first.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut want: impl FnMut(&Event) -> bool,
    ) -> Result<Event, Error> {
        loop {
            match self.next_event_before(deadline)? {
                Some(e) if want(&e) => return Ok(e),
                Some(e) => self.release(e.id)?,
                None => {
                    return Err(Error::Timeout(
                        "every traced process ended before the step was seen".into(),
                    ));
                }
            }
        }
    }

    /// Lets a held event go.
    pub fn release(&mut self, id: EventId) -> Result<(), Error> {
        let tid = self
            .stopped
            .iter()
            .find_map(|(t, e)| (*e == id).then_some(*t))
            .ok_or(Error::NotHeld(id))?;
        self.stopped.remove(&tid);
        self.queue.retain(|q| *q != id);
        self.let_go(tid, id);
        Ok(())
    }

    /// Stops holding process `pid` and every process below it: their held events are
    /// released, and their later steps are recorded and let go (a helper whose part in
    /// the interleaving is over).
    pub fn free(&mut self, pid: i32) -> Result<(), Error> {
        let below = |procs: &HashMap<i32, ProcInfo>, mut p: i32| {
            for _ in 0..64 {
                if p == pid {
                    return true;
                }
                match procs.get(&p).and_then(|i| i.parent) {
                    Some(parent) => p = parent,
                    None => return false,
                }
            }
            false
        };
        let freed: Vec<i32> = self
            .procs
            .keys()
            .copied()
            .filter(|p| below(&self.procs, *p))
            .collect();
        for p in &freed {
            if let Some(info) = self.procs.get_mut(p) {
                info.hold = Hold::Nothing;
            }
        }
        let held: Vec<EventId> = self
            .stopped
            .values()
            .copied()
            .filter(|id| freed.contains(&self.event(*id).pid))
            .collect();
        for id in held {
            self.release(id)?;
        }
        Ok(())
    }

    /// Releases every held event and waits until every traced process has ended.
    pub fn release_all_and_wait(&mut self) -> Result<(), Error> {
        loop {
            let held: Vec<EventId> = self.stopped.values().copied().collect();
            for id in held {
                self.release(id)?;
            }
            if self.next_event()?.is_none() {
                return Ok(());
            }
        }
    }

    /// After [`Gate::release`] of event `id`: waits until its call returned or its
    /// thread is seen sleeping in the kernel's flock wait.
    pub fn settle(&mut self, id: EventId, deadline: Instant) -> Result<Settled, Error> {
        self.settle_inner(id, deadline, true)
    }

    /// After [`Gate::release`] of event `id`: waits until its call returned (a blocked
    /// flock included).
    pub fn wait_return(&mut self, id: EventId, deadline: Instant) -> Result<Settled, Error> {
        self.settle_inner(id, deadline, false)
    }

    fn settle_inner(
        &mut self,
        id: EventId,
        deadline: Instant,
        blocked_counts: bool,
    ) -> Result<Settled, Error> {
        let (pid, tid, inode) = {
            let e = self.event(id);
            (e.pid, e.tid, e.inode)
        };
        loop {
            self.pump_ready()?;
            if let Some(r) = self.result(id) {
                return Ok(Settled::Returned(r));
            }
            if self.stopped.values().any(|e| *e == id) {
                return Err(Error::Trace(format!(
                    "event {} is still held: release it first",
                    id.0
                )));
            }
            if !self.awaiting.values().any(|e| *e == id) {
                return Ok(Settled::Gone);
            }
            if blocked_counts
                && matches!(self.event(id).syscall, Syscall::Flock { .. })
                && wait::thread_blocked_in_flock(pid as u32, tid as u32, inode)
            {
                return Ok(Settled::Blocked);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "event {} ({}) neither returned nor blocked",
                    id.0,
                    self.event(id)
                )));
            }
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    /// Waits until process `pid` has ended; held events of other processes are queued
    /// meanwhile, not released.
    pub fn wait_exit(&mut self, pid: i32, deadline: Instant) -> Result<Exit, Error> {
        loop {
            self.pump_ready()?;
            if let Some(e) = self.exit_of(pid) {
                return Ok(e);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("process {pid} did not exit")));
            }
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    /// Kills every traced process (SIGKILL) and reaps them all.
    pub fn kill_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for pid in self.live_pids() {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            loop {
                match waitpid(
                    None,
                    Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD),
                ) {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(status) => self.handle(status),
                    Err(Errno::EINTR) => {}
                    Err(_) => {
                        self.tracees.clear();
                        break;
                    }
                }
            }
            self.tracees.retain(|tid, _| process::exists(*tid as u32));
            if self.tracees.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(LOOK_AGAIN);
        }
        self.stopped.clear();
        self.awaiting.clear();
        self.queue.clear();
    }

    // ---- the tracer ----

    fn describe_stopped(&self) -> String {
        let mut v: Vec<String> = self
            .stopped
            .values()
            .map(|id| format!("[{}] {}", id.0, self.event(*id)))
            .collect();
        v.sort();
        v.join("; ")
    }

    /// Fails if every live thread is stopped at a held event (nothing can move).
    fn check_not_all_held(&self) -> Result<(), Error> {
        if !self.tracees.is_empty()
            && self.queue.is_empty()
            && self
                .tracees
                .iter()
                .all(|(tid, t)| !t.fresh && self.stopped.contains_key(tid))
        {
            return Err(Error::AllHeld(self.describe_stopped()));
        }
        Ok(())
    }

    /// Handles every wait status that is ready, without blocking.
    fn pump_ready(&mut self) -> Result<(), Error> {
        loop {
            match waitpid(
                None,
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD),
            ) {
                Ok(WaitStatus::StillAlive) => return Ok(()),
                Ok(status) => self.handle(status),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    self.tracees.clear();
                    return Ok(());
                }
                Err(e) => return Err(Error::Trace(format!("waitpid: {e}"))),
            }
        }
    }

    /// Resumes a thread; one released from a step is resumed so that its return stops
    /// it again. Errors mean the thread is gone, which its exit status will say.
    fn resume(&mut self, tid: i32, sig: Option<Signal>) {
        let p = Pid::from_raw(tid);
        let _ = if self.awaiting.contains_key(&tid) {
            ptrace::syscall(p, sig)
        } else {
            ptrace::cont(p, sig)
        };
    }

    fn let_go(&mut self, tid: i32, id: EventId) {
        let returns = !matches!(
            self.event(id).syscall,
            Syscall::ExitGroup { .. } | Syscall::Exec
        );
        if returns {
            self.awaiting.insert(tid, id);
        }
        self.resume(tid, None);
    }

    fn handle(&mut self, status: WaitStatus) {
        match status {
            WaitStatus::Exited(pid, code) => self.gone(pid.as_raw(), Exit::Code(code)),
            WaitStatus::Signaled(pid, sig, _) => self.gone(pid.as_raw(), Exit::Signal(sig as i32)),
            WaitStatus::PtraceEvent(pid, _, event) => {
                let tid = pid.as_raw();
                self.adopt(tid, None);
                match event {
                    libc::PTRACE_EVENT_SECCOMP => self.on_seccomp(tid),
                    libc::PTRACE_EVENT_FORK
                    | libc::PTRACE_EVENT_VFORK
                    | libc::PTRACE_EVENT_CLONE => {
                        if let Ok(new) = ptrace::getevent(pid) {
                            self.adopt(new as i32, Some(tid));
                        }
                        self.resume(tid, None);
                    }
                    libc::PTRACE_EVENT_EXEC => {
                        if let Ok(former) = ptrace::getevent(pid)
                            && former as i32 != tid
                        {
                            self.tracees.remove(&(former as i32));
                        }
                        self.on_exec(tid);
                    }
                    _ => self.resume(tid, None),
                }
            }
            WaitStatus::PtraceSyscall(pid) => self.on_syscall_exit(pid.as_raw()),
            WaitStatus::Stopped(pid, sig) => {
                let tid = pid.as_raw();
                self.adopt(tid, None);
                let fresh = self.tracees.get(&tid).is_some_and(|t| t.fresh);
                if fresh && sig == Signal::SIGSTOP {
                    if let Some(t) = self.tracees.get_mut(&tid) {
                        t.fresh = false;
                    }
                    self.resume(tid, None);
                } else if ptrace::getsiginfo(pid).is_err() {
                    // A group-stop: let it go on.
                    self.resume(tid, None);
                } else {
                    // A signal on its way to the tracee: deliver it.
                    self.resume(tid, Some(sig));
                }
            }
            _ => {}
        }
    }

    /// Registers a thread the gate has not seen yet (a new thread or process, seen by
    /// its creator's event or by its own first stop, whichever comes first).
    fn adopt(&mut self, tid: i32, creator: Option<i32>) {
        if self.tracees.contains_key(&tid) {
            return;
        }
        let creator_pid = creator.and_then(|c| self.tracees.get(&c).map(|t| t.tgid));
        let (tgid, ppid) = tgid_ppid(tid).unwrap_or_else(|| (tid, creator_pid.unwrap_or(0)));
        self.tracees.insert(tid, Tracee { tgid, fresh: true });
        if !self.procs.contains_key(&tgid) {
            let parent = if self.procs.contains_key(&ppid) {
                Some(ppid)
            } else {
                creator_pid
            };
            let (hold, argv) = parent
                .and_then(|p| self.procs.get(&p))
                .map_or((Hold::Nothing, Vec::new()), |p| (p.hold, p.argv.clone()));
            self.procs.insert(
                tgid,
                ProcInfo {
                    hold,
                    parent,
                    took_step: false,
                    signalled: false,
                    locked_shared: false,
                    argv,
                    started: self.timeline.len(),
                },
            );
        }
    }

    fn gone(&mut self, tid: i32, exit: Exit) {
        let tgid = self.tracees.remove(&tid).map_or(tid, |t| t.tgid);
        self.stopped.remove(&tid);
        self.awaiting.remove(&tid);
        if tid == tgid {
            self.exits.insert(tgid, exit);
            self.timeline.push(Moment::Ended(tgid));
        }
    }

    fn record(&mut self, mut event: Event) -> EventId {
        let id = EventId(self.records.len());
        event.id = id;
        if let Some(f) = self.observer.as_mut() {
            f(&event);
        }
        if let Some(step) = event.step
            && let Some(p) = self.procs.get_mut(&event.pid)
        {
            p.took_step = true;
            p.locked_shared |= step == Step::LockShared;
        }
        self.records.push(Record {
            event,
            result: None,
            opened_inode: None,
        });
        self.timeline.push(Moment::Entered(id));
        id
    }

    /// Holds the event or lets it go, by its process's [`Hold`].
    fn hold_or_go(&mut self, tid: i32, id: EventId) {
        let pid = self.event(id).pid;
        let hold = self.procs.get(&pid).map_or(Hold::Nothing, |p| p.hold);
        match hold {
            Hold::Steps => {
                self.stopped.insert(tid, id);
                self.queue.push_back(id);
            }
            Hold::Nothing => self.let_go(tid, id),
        }
    }

    fn on_exec(&mut self, tid: i32) {
        let pid = self.tracees.get(&tid).map_or(tid, |t| t.tgid);
        // The new program's arguments: it has not run an instruction yet.
        if let Some(argv) = process::argv(pid as u32)
            && let Some(info) = self.procs.get_mut(&pid)
        {
            info.argv = argv;
        }
        let parent_took_step = self
            .procs
            .get(&pid)
            .and_then(|p| p.parent)
            .and_then(|pp| self.procs.get(&pp))
            .is_some_and(|pp| pp.took_step);
        let step = self.places.classify(
            Syscall::Exec,
            None,
            Context {
                parent_took_step,
                locked_shared: false,
                pid,
            },
        );
        if step.is_none() {
            self.resume(tid, None);
            return;
        }
        let id = self.record(Event {
            id: EventId(0),
            pid,
            tid,
            parent: self.procs.get(&pid).and_then(|p| p.parent),
            syscall: Syscall::Exec,
            path: process::exe(tid as u32),
            from: None,
            inode: None,
            step,
        });
        self.hold_or_go(tid, id);
    }

    fn on_seccomp(&mut self, tid: i32) {
        let p = Pid::from_raw(tid);
        let info = match ptrace::syscall_info(p) {
            Ok(i) if i.op == libc::PTRACE_SYSCALL_INFO_SECCOMP => i,
            _ => {
                self.resume(tid, None);
                return;
            }
        };
        // SAFETY: `op` says the `seccomp` member of the union is the one filled in.
        let (nr, args) = unsafe { (info.u.seccomp.nr as i64, info.u.seccomp.args) };
        // A call restarted after a signal comes back through the filter.
        self.awaiting.remove(&tid);
        let Some((syscall, path, from, inode)) = decode(tid, nr, args) else {
            self.resume(tid, None);
            return;
        };
        let pid = self.tracees.get(&tid).map_or(tid, |t| t.tgid);
        let (took_step, locked_shared) = self
            .procs
            .get(&pid)
            .map_or((false, false), |p| (p.took_step, p.locked_shared));
        let step = self.places.classify(
            syscall,
            path.as_deref(),
            Context {
                parent_took_step: false,
                locked_shared,
                pid,
            },
        );
        let signal = syscall == Syscall::Rename
            && path
                .as_deref()
                .is_some_and(|p| self.signals.iter().any(|s| s == p));
        let signalled = match self.procs.get_mut(&pid) {
            Some(p) => {
                p.signalled |= signal;
                p.signalled
            }
            None => false,
        };
        // A process's exit is reported once it took a step (a spawned child included)
        // or signalled (a daemon the child forked).
        let exit = matches!(syscall, Syscall::ExitGroup { .. }) && (took_step || signalled);
        if step.is_none() && !exit && !signal {
            self.resume(tid, None);
            return;
        }
        let id = self.record(Event {
            id: EventId(0),
            pid,
            tid,
            parent: self.procs.get(&pid).and_then(|p| p.parent),
            syscall,
            path,
            from,
            inode,
            step,
        });
        self.hold_or_go(tid, id);
    }

    fn on_syscall_exit(&mut self, tid: i32) {
        if let Some(id) = self.awaiting.remove(&tid)
            && let Ok(info) = ptrace::syscall_info(Pid::from_raw(tid))
            && info.op == libc::PTRACE_SYSCALL_INFO_EXIT
        {
            // SAFETY: `op` says the `exit` member of the union is the one filled in.
            let rval = unsafe { info.u.exit.sval };
            let opened = (self.event(id).syscall == Syscall::Open && rval >= 0)
                .then(|| process::fd_inode(tid as u32, rval as i32))
                .flatten();
            let r = &mut self.records[id.0];
            r.result = Some(rval);
            r.opened_inode = opened;
            self.timeline.push(Moment::Returned(id));
        }
        self.resume(tid, None);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The call, path, old path and inode of a stopped system call, or `None` for a call
/// the gate does not know (it is let go).
fn decode(tid: i32, nr: i64, a: [u64; 6]) -> Option<Decoded> {
    let at = |dirfd: u64, addr: u64| resolve(tid, dirfd as i32, addr);
    let cwd = libc::AT_FDCWD as u64;
    let (call, path, from) = match nr {
        libc::SYS_openat => (Syscall::Open, at(a[0], a[1]), None),
        libc::SYS_flock => {
            let fd = a[0] as i32;
            return Some((
                Syscall::flock(a[1]),
                process::fd_target(tid as u32, fd),
                None,
                process::fd_inode(tid as u32, fd),
            ));
        }
        libc::SYS_renameat | libc::SYS_renameat2 => {
            (Syscall::Rename, at(a[2], a[3]), at(a[0], a[1]))
        }
        libc::SYS_unlinkat if a[2] as i32 & libc::AT_REMOVEDIR != 0 => {
            (Syscall::Rmdir, at(a[0], a[1]), None)
        }
        libc::SYS_unlinkat => (Syscall::Unlink, at(a[0], a[1]), None),
        libc::SYS_mkdirat => (Syscall::Mkdir, at(a[0], a[1]), None),
        libc::SYS_exit_group => (Syscall::ExitGroup { code: a[0] as i32 }, None, None),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open => (Syscall::Open, at(cwd, a[0]), None),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rename => (Syscall::Rename, at(cwd, a[1]), at(cwd, a[0])),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_unlink => (Syscall::Unlink, at(cwd, a[0]), None),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rmdir => (Syscall::Rmdir, at(cwd, a[0]), None),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mkdir => (Syscall::Mkdir, at(cwd, a[0]), None),
        _ => return None,
    };
    let _ = cwd;
    // The file a removal or rename is about still exists when the call is stopped.
    let inode = match call {
        Syscall::Unlink | Syscall::Rmdir => path.as_deref().and_then(inode_of),
        Syscall::Rename => from.as_deref().and_then(inode_of),
        _ => None,
    };
    Some((call, path, from, inode))
}

/// The process (thread group) and parent process of thread `tid`, from `/proc`.
fn tgid_ppid(tid: i32) -> Option<(i32, i32)> {
    let tgid = process::tgid(tid as u32)?;
    let ppid = process::parent_of(tid as u32)?;
    Some((tgid as i32, ppid as i32))
}

fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The absolute path a `(dirfd, pathname)` pair of thread `tid` names.
fn resolve(tid: i32, dirfd: i32, addr: u64) -> Option<PathBuf> {
    let name = read_c_string(tid, addr)?;
    let name =
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(name));
    if name.is_absolute() {
        return Some(normalize(&name));
    }
    let base = if dirfd == libc::AT_FDCWD {
        process::cwd(tid as u32)?
    } else {
        process::fd_target(tid as u32, dirfd)?
    };
    Some(normalize(&base.join(name)))
}

/// Reads a NUL-terminated string (at most `PATH_MAX` bytes) from thread `tid`'s memory,
/// one piece per page so that a string ending before an unmapped page is read whole.
fn read_c_string(tid: i32, addr: u64) -> Option<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let len = (PAGE - at % PAGE) as usize;
        let mut buf = vec![0u8; len];
        let n = process_vm_readv(
            Pid::from_raw(tid),
            &mut [IoSliceMut::new(&mut buf)],
            &[RemoteIoVec {
                base: at as usize,
                len,
            }],
        )
        .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}
