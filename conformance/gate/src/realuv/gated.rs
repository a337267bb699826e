//! A process of a scenario run under the gate (`cachelock-gate`), driven step by step by
//! the harness: an interleaving forced, not waited for.
//!
//! ptrace requests come from the thread that traces, and a gate reaps only its own
//! thread's children: each gated process gets a tracer thread of its own, so that the
//! harness's other processes are neither traced nor reaped by it. The harness sends
//! the thread commands:
//! - [`Gated::until`]: let the process run, releasing its steps, until it reaches a step
//!   the harness's predicate accepts (held there, the call not made), or a released
//!   `flock` is seen sleeping in the kernel's lock wait ([`Reached::Blocked`], seen by
//!   the gate's `settle`, not guessed from a timeout), or the process tree ends;
//! - [`Gated::release`]: let the held step's call go and say what came of it
//!   (returned, or blocked in the lock wait);
//! - [`Gated::go`]: let the whole tree run free and wait until it has exited.
//!
//! Dropping a [`Gated`] that was not let go kills its tree (its process group, and the
//! gate's drop).

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Event, EventId, Exit, Gate, Hold, Record, Settled, Syscall};
use cachelock_model::protocol::Step;

/// Decides, with the gate's records so far, whether an event is the one to hold at.
pub type HoldAt = Box<dyn Fn(&Event, &[Record]) -> bool + Send>;

/// Where a process got to in [`Gated::until`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reached {
    /// Held at this step (`pid step path`), its call not made yet.
    Held(String),
    /// A released `flock` of its tree sleeps in the kernel's lock wait.
    Blocked(String),
    /// The whole tree ended first; the process's exit code (signal n: 128+n).
    Ended(Option<i32>),
}

enum Cmd {
    Until(HoldAt),
    Release,
    /// Free the whole tree and wait until all of it has exited.
    Go,
    /// Free the whole tree and wait until the process itself has exited.
    Free,
    /// Wait until the process has exited (its tree stays held as it is).
    WaitExit,
    /// Its exit code, if it has exited.
    Status,
    /// The next held event of the tree, as it is (no predicate, nothing released).
    Next,
    /// Release one held event and say what its call came to.
    Let(EventId),
    /// Wait until a released (blocked) call returns.
    WaitReturn(EventId, Duration),
    /// Stop holding the whole tree (held events released), without waiting.
    Unhold,
    /// How a process of the tree ended, if it has.
    ExitOf(i32),
}

enum Reply {
    Reached(Result<Reached, String>),
    Settled(Result<Settled, String>),
    Exited(Result<i32, String>),
    Status(Option<i32>),
    Next(Result<Option<Event>, String>),
}

/// How long the tracer thread, with no command to do, waits for one before it takes in
/// what the traced threads did (stops at calls that are no step are let go at once;
/// held steps stay held). It decides no order.
const IDLE: Duration = Duration::from_millis(2);

/// A process run by its own tracer thread under a gate, driven by the harness.
pub struct Gated {
    /// `clean#1`.
    pub name: String,
    /// Its pid (also its process group).
    pub pid: u32,
    err: PathBuf,
    /// Created by the probe child once it runs (as for [`super::sys::Proc`]).
    pub ready: PathBuf,
    /// Created by the harness to let the probe child check its environment and exit.
    pub go_file: PathBuf,
    /// The probe child's report.
    pub report: PathBuf,
    cmds: Option<mpsc::Sender<Cmd>>,
    replies: mpsc::Receiver<Reply>,
    limit: Duration,
    exited: Option<i32>,
    thread: Option<JoinHandle<()>>,
}

/// True for an event of the gate on `.lock` of `cache` (the cache lock, not an
/// environment's or an announcement's).
fn on_cache_lock(e: &Event, cache: &Path) -> bool {
    e.path.as_deref() == Some(cache.join(".lock").as_path())
}

/// Holds a process at its first step after its shared lock on the cache's `.lock` was
/// granted: it holds the cache.
pub fn after_shared_lock(cache: &Path) -> HoldAt {
    let cache = cache.to_path_buf();
    Box::new(move |e: &Event, records: &[Record]| {
        e.step.is_some()
            && records.iter().any(|r| {
                r.event.pid == e.pid
                    && r.event.step == Some(Step::LockShared)
                    && on_cache_lock(&r.event, &cache)
                    && r.result == Some(0)
            })
    })
}

/// Holds a process at its first call that locks the cache's `.lock` exclusively: it
/// has started (opened `.lock`, announced itself where the policy does) and not locked.
pub fn at_exclusive_lock(cache: &Path) -> HoldAt {
    let cache = cache.to_path_buf();
    Box::new(move |e: &Event, _: &[Record]| {
        e.step == Some(Step::LockExclusive) && on_cache_lock(e, &cache)
    })
}

/// The first deletion others see: a removal of `delete-entries`, or under a design with
/// a trash a rename of `move-to-trash` (what it moves leaves the cache's namespace
/// there; the later `delete-trash` removes only what nobody can reach any more).
fn deletes(e: &Event) -> bool {
    matches!(e.step, Some(Step::DeleteEntries | Step::MoveToTrash))
}

/// Holds a process at its first deletion (see [`deletes`]) after its exclusive lock on
/// `.lock` was granted.
pub fn at_delete_under_lock() -> HoldAt {
    Box::new(|e: &Event, records: &[Record]| {
        deletes(e)
            && records.iter().any(|r| {
                r.event.pid == e.pid
                    && r.event.step == Some(Step::LockExclusive)
                    && r.result == Some(0)
            })
    })
}

/// Holds a process at the rename that signals the probe child runs (its ready file).
pub fn at_signal(ready: &Path) -> HoldAt {
    let ready = ready.to_path_buf();
    Box::new(move |e: &Event, _: &[Record]| {
        e.step.is_none() && e.syscall == Syscall::Rename && e.path.as_deref() == Some(&ready)
    })
}

/// Holds a process nowhere: it runs until it blocks in a lock wait or its tree ends.
pub fn nowhere() -> HoldAt {
    Box::new(|_: &Event, _: &[Record]| false)
}

/// Holds a process at its first deletion (see [`deletes`]), lock or none.
pub fn at_delete() -> HoldAt {
    Box::new(|e: &Event, _: &[Record]| deletes(e))
}

impl Gated {
    /// Starts `argv` (with `env`, and the probe's signal files; stdout and stderr in
    /// files under `dir` named after `name`) under a gate naming steps against `cache`.
    /// It runs nothing until the first command; every call is bounded by `limit` (a
    /// bound on a failure, never an order).
    pub fn spawn(
        name: &str,
        dir: &Path,
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cache: &Path,
        limit: Duration,
    ) -> Result<Gated, String> {
        let slot = dir.join(name.replace('#', "-"));
        let out = slot.with_extension("out");
        let err = slot.with_extension("err");
        let ready = slot.with_extension("ready");
        let go_file = slot.with_extension("go");
        let report = slot.with_extension("report");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("CLPROBE_READY", &ready)
            .env("CLPROBE_GO", &go_file)
            .env("CLPROBE_REPORT", &report)
            .env("CLPROBE_HOLD", "forever")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?)
            .stderr(fs::File::create(&err).map_err(|e| format!("{}: {e}", err.display()))?)
            .process_group(0);
        let cache = cache.to_path_buf();
        let (started_tx, started_rx) = mpsc::channel::<Result<i32, String>>();
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (reply_tx, reply_rx) = mpsc::channel::<Reply>();
        let label = name.to_string();
        let ready_signal = ready.clone();
        let thread = std::thread::spawn(move || {
            let mut gate = match Gate::new(&cache) {
                Ok(g) => g,
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                    return;
                }
            };
            gate.signal_on_rename_to(&ready_signal);
            let pid = match gate.spawn(cmd, Hold::Steps) {
                Ok(s) => s.pid,
                Err(e) => {
                    let _ =
                        started_tx.send(Err(format!("cannot start {label} under the gate: {e}")));
                    return;
                }
            };
            if started_tx.send(Ok(pid)).is_err() {
                return;
            }
            let mut tracer = Tracer {
                gate,
                pid,
                label,
                held: None,
                limit,
            };
            // A harness that is gone kills the tree (the gate's drop).
            loop {
                let cmd = match cmd_rx.recv_timeout(IDLE) {
                    Ok(cmd) => cmd,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if tracer.gate.alive() {
                            let _ = tracer.gate.take_in();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                };
                let reply = match cmd {
                    Cmd::Until(at) => Reply::Reached(tracer.until(&at)),
                    Cmd::Release => Reply::Settled(tracer.release()),
                    Cmd::Go => Reply::Exited(tracer.go()),
                    Cmd::Free => Reply::Exited(tracer.free()),
                    Cmd::WaitExit => Reply::Exited(tracer.wait_exit()),
                    Cmd::Status => Reply::Status({
                        let _ = tracer.gate.take_in();
                        tracer.code()
                    }),
                    Cmd::Next => Reply::Next(tracer.next()),
                    Cmd::ExitOf(pid) => Reply::Status({
                        let _ = tracer.gate.take_in();
                        tracer.code_of(pid)
                    }),
                    Cmd::Unhold => Reply::Settled({
                        tracer.held = None;
                        let pid = tracer.pid;
                        tracer
                            .gate
                            .free(pid)
                            .map(|()| Settled::Returned(0))
                            .map_err(|e| format!("{}: {e}", tracer.label))
                    }),
                    Cmd::Let(id) => Reply::Settled(tracer.let_event(id)),
                    Cmd::WaitReturn(id, within) => Reply::Settled(
                        tracer
                            .gate
                            .wait_return(id, Instant::now() + within)
                            .map_err(|e| format!("{}: {e}", tracer.label)),
                    ),
                };
                if reply_tx.send(reply).is_err() {
                    return;
                }
            }
        });
        let pid = match started_rx.recv() {
            Ok(Ok(pid)) => pid as u32,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(format!("the tracer thread of {name} ended"));
            }
        };
        Ok(Gated {
            name: name.to_string(),
            pid,
            err,
            ready,
            go_file,
            report,
            cmds: Some(cmd_tx),
            replies: reply_rx,
            limit,
            exited: None,
            thread: Some(thread),
        })
    }

    fn ask(&mut self, cmd: Cmd) -> Result<Reply, String> {
        let tx = self
            .cmds
            .as_ref()
            .ok_or_else(|| format!("{} was let go already", self.name))?;
        tx.send(cmd)
            .map_err(|_| format!("the tracer thread of {} ended", self.name))?;
        // The tracer bounds every wait by `limit`; this only guards a tracer that hangs.
        self.replies
            .recv_timeout(self.limit + Duration::from_secs(30))
            .map_err(|_| format!("the tracer thread of {} did not answer", self.name))
    }

    /// Lets the process run (a held step is released first) until it reaches a step
    /// `at` accepts, blocks in a lock wait, or ends.
    pub fn until(&mut self, at: HoldAt) -> Result<Reached, String> {
        match self.ask(Cmd::Until(at))? {
            Reply::Reached(r) => {
                if let Ok(Reached::Ended(code)) = &r {
                    self.exited = *code;
                }
                r
            }
            _ => Err("unexpected reply".to_string()),
        }
    }

    /// Releases the held step and says what its call came to (returned, or blocked in
    /// the kernel's lock wait).
    pub fn release(&mut self) -> Result<Settled, String> {
        match self.ask(Cmd::Release)? {
            Reply::Settled(s) => s,
            _ => Err("unexpected reply".to_string()),
        }
    }

    /// Lets the probe child check its environment and exit (its go file).
    pub fn let_child_go(&self) {
        let _ = fs::write(&self.go_file, b"go");
    }

    /// Lets the process and everything it started run free and waits until they have
    /// all exited; the process's exit code as a shell reports it (signal n: 128+n).
    pub fn go(&mut self) -> Result<i32, String> {
        if let Some(code) = self.exited {
            return Ok(code);
        }
        let code = match self.ask(Cmd::Go)? {
            Reply::Exited(c) => c,
            _ => Err("unexpected reply".to_string()),
        }?;
        self.exited = Some(code);
        Ok(code)
    }

    /// Lets the whole tree run free and waits until the process itself has exited (what
    /// it started may live on, traced and free); its exit code.
    pub fn free(&mut self) -> Result<i32, String> {
        if let Some(code) = self.exited {
            return Ok(code);
        }
        let code = match self.ask(Cmd::Free)? {
            Reply::Exited(c) => c,
            _ => Err("unexpected reply".to_string()),
        }?;
        self.exited = Some(code);
        Ok(code)
    }

    /// Waits until the process has exited (killed, say), holding its tree as it is.
    pub fn wait_exit(&mut self) -> Result<i32, String> {
        if let Some(code) = self.exited {
            return Ok(code);
        }
        let code = match self.ask(Cmd::WaitExit)? {
            Reply::Exited(c) => c,
            _ => Err("unexpected reply".to_string()),
        }?;
        self.exited = Some(code);
        Ok(code)
    }

    /// Its exit code, if it has exited.
    pub fn status(&mut self) -> Option<i32> {
        if self.exited.is_none()
            && let Ok(Reply::Status(c)) = self.ask(Cmd::Status)
        {
            self.exited = c;
        }
        self.exited
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The next event of its tree (a step, an exit, the probe's signal), held at the
    /// gate: the caller decides when it goes ([`Gated::let_event`]). `None` once the
    /// whole tree has ended. For a harness that drives a tree stop by stop, event by
    /// event, rather than with [`Gated::until`]'s predicate.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        match self.ask(Cmd::Next)? {
            Reply::Next(r) => {
                if let Ok(None) = &r {
                    let _ = self.status();
                }
                r
            }
            _ => Err("unexpected reply".to_string()),
        }
    }

    /// Releases the held event `id` (from [`Gated::next_event`]) and says what its call
    /// came to: returned, or (a `flock`) seen asleep in the kernel's lock wait.
    pub fn let_event(&mut self, id: EventId) -> Result<Settled, String> {
        match self.ask(Cmd::Let(id))? {
            Reply::Settled(s) => s,
            _ => Err("unexpected reply".to_string()),
        }
    }

    /// Waits (at most `within`: a bound on a failure) until the released call of `id`
    /// returns: a `flock` seen blocked that is granted later.
    pub fn wait_return(&mut self, id: EventId, within: Duration) -> Result<Settled, String> {
        match self.ask(Cmd::WaitReturn(id, within))? {
            Reply::Settled(s) => s,
            _ => Err("unexpected reply".to_string()),
        }
    }

    /// Stops holding the process and all it started (their held steps go, their later
    /// steps are let go at once), without waiting for anything.
    pub fn unhold(&mut self) -> Result<(), String> {
        match self.ask(Cmd::Unhold)? {
            Reply::Settled(s) => s.map(|_| ()),
            _ => Err("unexpected reply".to_string()),
        }
    }

    /// How process `pid` of its tree (a process it started) ended, if the gate has seen
    /// it end: its exit code as a shell reports it (signal n: 128+n).
    pub fn exit_of(&mut self, pid: i32) -> Option<i32> {
        match self.ask(Cmd::ExitOf(pid)) {
            Ok(Reply::Status(c)) => c,
            _ => None,
        }
    }

    /// SIGKILL to its whole process group (it and all it started), and waits until its
    /// own exit is seen: for a tree the story left waiting for a lock nobody will let go.
    pub fn kill_tree(&mut self) -> Result<i32, String> {
        // SAFETY: kill(2) on the process group this harness started; no memory.
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        self.wait_exit()
    }

    /// SIGKILL to this process only (what it started lives on, as after a crash), and
    /// waits until its exit is seen; its exit code as a shell reports it (137).
    pub fn kill_self(&mut self) -> Result<i32, String> {
        // SAFETY: kill(2) on the process this harness started; no memory.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.wait_exit()
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        // Nothing a scenario started may outlive it: the tree goes first, then the
        // tracer thread (whose gate kills and reaps the rest).
        // SAFETY: kill(2) on the process group this harness started; no memory.
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        self.cmds = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The tracer thread's side.
struct Tracer {
    gate: Gate,
    pid: i32,
    label: String,
    held: Option<EventId>,
    limit: Duration,
}

impl Tracer {
    fn code(&self) -> Option<i32> {
        self.code_of(self.pid)
    }

    fn code_of(&self, pid: i32) -> Option<i32> {
        self.gate.exit_of(pid).map(|e| match e {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        })
    }

    fn until(&mut self, at: &HoldAt) -> Result<Reached, String> {
        let deadline = Instant::now() + self.limit;
        if let Some(id) = self.held.take() {
            self.gate
                .release(id)
                .map_err(|e| format!("{}: {e}", self.label))?;
        }
        loop {
            let e = match self.gate.next_event_before(deadline) {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(Reached::Ended(self.code())),
                Err(e) => return Err(format!("{}: {e}", self.label)),
            };
            if at(&e, self.gate.records()) {
                self.held = Some(e.id);
                return Ok(Reached::Held(e.to_string()));
            }
            self.gate
                .release(e.id)
                .map_err(|err| format!("{}: {err}", self.label))?;
            if matches!(e.syscall, Syscall::Flock { .. })
                && self
                    .gate
                    .settle(e.id, deadline)
                    .map_err(|err| format!("{}: {err}", self.label))?
                    == Settled::Blocked
            {
                return Ok(Reached::Blocked(e.to_string()));
            }
        }
    }

    fn next(&mut self) -> Result<Option<Event>, String> {
        let deadline = Instant::now() + self.limit;
        self.gate
            .next_event_before(deadline)
            .map_err(|e| format!("{}: {e}", self.label))
    }

    fn let_event(&mut self, id: EventId) -> Result<Settled, String> {
        if self.held == Some(id) {
            self.held = None;
        }
        self.gate
            .release(id)
            .map_err(|e| format!("{}: {e}", self.label))?;
        self.gate
            .settle(id, Instant::now() + self.limit)
            .map_err(|e| format!("{}: {e}", self.label))
    }

    fn release(&mut self) -> Result<Settled, String> {
        let id = self
            .held
            .ok_or_else(|| format!("{}: no step is held", self.label))?;
        self.let_event(id)
    }

    fn free(&mut self) -> Result<i32, String> {
        self.held = None;
        self.gate
            .free(self.pid)
            .map_err(|e| format!("{}: {e}", self.label))?;
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> Result<i32, String> {
        self.gate
            .wait_exit(self.pid, Instant::now() + self.limit)
            .map_err(|e| format!("{}: {e}", self.label))?;
        self.code()
            .ok_or_else(|| format!("{}: its exit was not seen", self.label))
    }

    fn go(&mut self) -> Result<i32, String> {
        self.held = None;
        self.gate
            .free(self.pid)
            .and_then(|()| self.gate.release_all_and_wait())
            .map_err(|e| format!("{}: {e}", self.label))?;
        self.code()
            .ok_or_else(|| format!("{}: its exit was not seen", self.label))
    }
}
