//! Checking a recorded interleaving against the model: is it a behaviour of policy P?
//!
//! Which processes are the model's, and of which kind ([`Kind`]), is read from what was
//! seen, never from the order of events alone:
//! - a process running uv or cachelock is of the kind its arguments at exec say
//!   ([`crate::kinds`]: `uv run --script` is `run-script`, `uv tool run`/`uvx` is
//!   `tool-run`, `--no-cache` makes `run-no-cache`, `uv cache prune` is `prune`, `uv
//!   cache clean --force` is `clean-force`, `cachelock`'s subcommands likewise), and is
//!   one of the model's processes once it takes a step of its own (not only its exec);
//! - another program (`flock(1)`, a shell) is one only if it used the cache's `.lock` or
//!   made a temporary cache: one that locked `.lock` exclusive is a `clean`, one that
//!   only made a temporary cache a `run-no-cache`, any other a `run`; one that only
//!   opened `.lock` and tried to lock it without waiting (a harness looking whether it is
//!   free) is none;
//! - a process whose wait status says a signal killed it is `+crash`, and its end is the
//!   model's `killed` (its descriptors close, its locks go unless its child inherited
//!   them, its temporary cache stays), which the model must allow then;
//! - the processes are taken in the order of their first step, at most
//!   [`MAX_SIMULATED_PROCS`] (the model never enumerates states here).
//!
//! A run's child is the first process the run started whose arguments run the run's
//! command ([`crate::kinds::runs_command`]: `python3 -c pass` for `uv run python3 -c
//! pass`, `python …/bin/clprobe` for `uvx clprobe`, `python …/probe.py` for `uv run
//! --script probe.py`), so uv's helpers (an interpreter query) are not taken for it;
//! for a program that is not uv or cachelock, the one process it started, if it
//! started exactly one. The child's exec is the run's `spawn-child`; its end (exit, or
//! death) is the model's `child-exits`. Not told apart: a `run-server` (a finished trace
//! has no child that never exits) and a `run-daemon` (a daemon is not followed) are
//! `run`s; a nested clean (`uv run uv cache clean`) is a clean of its own.
//!
//! The timeline is replayed on [`CacheModel`] for that scenario:
//! - a step is taken when its call enters, if the model has it enabled for that
//!   process; a blocking lock the model cannot grant puts the process in the model's
//!   wait, and the lock is taken when the real call returns granted (for the wait for
//!   announced cleans: when a lock on an announcement returns and the model has every
//!   awaited clean withdrawn, or at the process's next step);
//! - steps the gate cannot see (a scaffold or an environment already there, an empty
//!   cache with nothing to delete or move to the trash, no trash to delete, the wait for
//!   the child, the wait for announced cleans when none is announced, a prune's removal
//!   of leaked temporary caches when there is none) are taken implicitly when the model
//!   has them next and enabled, and the process does not take them anywhere in the
//!   trace; so is `release-root-lock` for a process that never unlocks `.lock` with
//!   `LOCK_UN` (it releases it by closing the descriptor, a call the gate does not stop
//!   at: cachelock drops its lock this way). A step the process does take is held to the
//!   moment it does;
//! - a step the process already took (a retried lock, a re-opened `.lock`, the next
//!   removal of `delete-entries`, the next rename of `move-to-trash`, the next removal
//!   of `delete-trash`) is one step, taken once;
//! - a removal in the trash by a process whose policy has no trash (uv's clean deleting
//!   the trash a killed cachelock clean left) is that process's `delete-entries`;
//! - a process's `exit_group` (or its death other than by a signal) ends it: its
//!   descriptors close, so the releases left (and the wait for its child) are taken
//!   then (a holder that never unlocks explicitly releases its lock by exiting); a run
//!   whose child never exec'd took `spawn-child` and failed, if the model says the spawn
//!   fails there (its environment is gone: the failing `execve` never reaches the gate);
//!   any other step left (unlinking `.lock`, removing the root) is a divergence: the
//!   process exited without it.
//!
//! A run looks for announced cleans by reading `.cleans/`, a call the gate does not stop
//! at: when a run that locked no announcement goes on while the model has it wait for a
//! clean whose announcement was still in flight at that step (its rename entered, not
//! returned), or entered after the run's previous event (for its first event: returned
//! after the gate saw the run start), the run read the directory before that
//! announcement: the replay is redone with the announcement's entry moved after the
//! run's step, or the run's wait taken just before the announcement. An announcement
//! done before the run started, or before its previous event, is one it had to see.
//!
//! A lock call takes effect somewhere between its entry and its return: when a lock is
//! granted to a process the model still has waiting behind another process's lock call
//! that entered but had not returned yet, the kernel served the first one first; the
//! replay is redone with that call's entry moved after the grant (an order the real
//! calls allow), and the divergence stands only if no such call is in flight.
//!
//! The first step (or lock grant, or kill) the model does not allow is the divergence.

use std::fmt;

use cachelock_model::machine::{Action, CacheModel, Life, Outcome, State};
use cachelock_model::protocol::{
    Event as ModelEvent, Kind, MAX_SIMULATED_PROCS, Policy, Scenario, Step,
};

use crate::gate::{EventId, Exit, Moment, Process, Record};
use crate::kinds::{Invocation, invocation, runs_command};
use crate::vocab::Syscall;

/// The first thing the real processes did that the model does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The event, when a step or its return diverged.
    pub event: Option<EventId>,
    /// The real process.
    pub pid: i32,
    /// Its name in the model's scenario (`run#1`).
    pub label: String,
    /// What it did.
    pub real: String,
    /// What the model allows it next, if anything.
    pub model: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}) did {}; the model allows {}",
            self.label, self.pid, self.real, self.model
        )
    }
}

/// What a check found.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The scenario the processes make (`run,clean`).
    pub scenario: String,
    /// The real pid of each model process.
    pub pids: Vec<i32>,
    /// How many steps were matched (seen or implied).
    pub steps: usize,
    /// `Ok` if the interleaving is a behaviour of the policy.
    pub verdict: Result<(), Divergence>,
}

/// Steps the gate may not see: taken implicitly when the model has them next (also
/// by the story player, `crate::realuv::story`).
pub fn unseen(step: Step) -> bool {
    matches!(
        step,
        Step::CreateScaffold
            | Step::BuildEnv
            | Step::PersistEnv
            | Step::WaitForChild
            | Step::DeleteEntries
            | Step::MoveToTrash
            | Step::DeleteTrash
            | Step::AwaitAnnouncedCleans
            | Step::RemoveLeakedTemp
    )
}

/// The step `step` is in process `p`'s program: a removal in the trash is
/// `delete-entries` for a process whose policy has no `delete-trash`.
fn in_program(model: &CacheModel, p: usize, step: Step) -> Step {
    if step == Step::DeleteTrash && !model.procs[p].program.contains(&Step::DeleteTrash) {
        Step::DeleteEntries
    } else {
        step
    }
}

fn is_root_lock_step(step: Step) -> bool {
    matches!(
        step,
        Step::OpenLockFile | Step::LockShared | Step::LockExclusive | Step::ReleaseRootLock
    )
}

struct Replay<'a> {
    model: CacheModel,
    s: State,
    records: &'a [Record],
    pids: Vec<i32>,
    /// For each model process, its child's pid (the last process it started).
    child: Vec<Option<i32>>,
    /// For each model process, the steps it takes somewhere in the trace: the others may
    /// be implied.
    seen: Vec<Vec<Step>>,
    /// Implicit waits for announced cleans taken early: `(i, p)` takes process `p`'s
    /// `await-announced-cleans` just before the timeline's moment `i` (see
    /// [`early_await`]).
    early: Vec<(usize, usize)>,
    steps: usize,
}

impl Replay<'_> {
    fn proc_of(&self, pid: i32) -> Option<usize> {
        self.pids.iter().position(|p| *p == pid)
    }

    fn diverge(&self, p: usize, event: Option<EventId>, real: String) -> Divergence {
        let next = self.model.next_step(&self.s, p);
        let model = match (next, self.s.procs[p].life) {
            (_, Life::Done(o)) => format!("nothing more (it finished: {o:?})"),
            (_, Life::Killed) => "nothing more (it was killed)".to_string(),
            (Some(n), Life::Waiting) => format!("{n} only once the lock is free (it waits)"),
            (Some(n), _) if self.model.step_enabled(&self.s, p) => format!("{n} next"),
            (Some(n), _) => format!("{n} next, but not now"),
            (None, _) => "nothing more".to_string(),
        };
        Divergence {
            event,
            pid: self.pids[p],
            label: self.model.procs[p].label.clone(),
            real,
            model,
        }
    }

    fn take(&mut self, p: usize, step: Step) {
        self.s = self.model.after(&self.s, Action::Step(p, step));
        self.steps += 1;
    }

    /// True if process `p` already took `step`, or is waiting in it.
    fn already(&self, p: usize, step: Step) -> bool {
        let at = self.s.procs[p].at as usize;
        let program = &self.model.procs[p].program;
        program[..at.min(program.len())].contains(&step)
            || (self.s.procs[p].life == Life::Waiting && program.get(at) == Some(&step))
    }

    /// Takes the unseen steps before `step`, then `step` (entered, not yet returned).
    fn enter(&mut self, p: usize, step: Step, id: EventId) -> Result<(), Divergence> {
        if self.already(p, step) {
            return Ok(());
        }
        loop {
            let live = matches!(self.s.procs[p].life, Life::Ready | Life::Waiting);
            match self.model.next_step(&self.s, p) {
                Some(n) if n == step && live => break,
                // The wait for announced cleans ended (its last lock call returned
                // before this step): take it now that the model grants it.
                Some(Step::AwaitAnnouncedCleans)
                    if self.s.procs[p].life == Life::Waiting
                        && self.model.step_enabled(&self.s, p) =>
                {
                    self.take(p, Step::AwaitAnnouncedCleans)
                }
                Some(n)
                    if (unseen(n) || n == Step::ReleaseRootLock)
                        && !self.seen[p].contains(&n)
                        && live
                        && self.model.step_enabled(&self.s, p) =>
                {
                    self.take(p, n)
                }
                _ => return Err(self.diverge(p, Some(id), step.to_string())),
            }
        }
        if self.s.procs[p].life != Life::Ready || !self.model.step_enabled(&self.s, p) {
            return Err(self.diverge(p, Some(id), step.to_string()));
        }
        self.take(p, step);
        Ok(())
    }

    /// A lock call returned granted: the model must let a waiting process have it.
    fn granted(&mut self, p: usize, step: Step, id: EventId) -> Result<(), Divergence> {
        let waiting =
            self.s.procs[p].life == Life::Waiting && self.model.next_step(&self.s, p) == Some(step);
        if !waiting {
            return Ok(());
        }
        if !self.model.step_enabled(&self.s, p) && !self.released_by_close(p) {
            return Err(self.diverge(p, Some(id), format!("{step} (granted)")));
        }
        self.take(p, step);
        Ok(())
    }

    /// The grant to `p` proves that whoever held the lock let it go: a process that
    /// never unlocks `.lock` with `LOCK_UN` releases it by closing its descriptor, a call
    /// the gate does not stop at (a cachelock clean does so between `move-to-trash` and
    /// `delete-trash`). Takes, for the first such process whose release (after its unseen
    /// steps) lets `p` have the lock, those steps; false if none does.
    fn released_by_close(&mut self, p: usize) -> bool {
        for q in 0..self.pids.len() {
            if q == p || self.seen[q].contains(&Step::ReleaseRootLock) {
                continue;
            }
            let mut s = self.s.clone();
            let mut taken = 0;
            loop {
                if !matches!(s.procs[q].life, Life::Ready) || !self.model.step_enabled(&s, q) {
                    break;
                }
                let Some(n) = self.model.next_step(&s, q) else {
                    break;
                };
                let implied =
                    n == Step::ReleaseRootLock || (unseen(n) && !self.seen[q].contains(&n));
                if !implied {
                    break;
                }
                s = self.model.after(&s, Action::Step(q, n));
                taken += 1;
                if n == Step::ReleaseRootLock {
                    if self.model.step_enabled(&s, p) {
                        self.s = s;
                        self.steps += taken;
                        return true;
                    }
                    break;
                }
            }
        }
        false
    }

    /// Process `p` ends: its descriptors close, so the steps left that closing does
    /// (releasing its locks, the wait for its child) and the unseen steps it never took
    /// are taken. A step left that the process had to do itself (unlink `.lock`, remove
    /// the root) is a divergence.
    fn end(&mut self, p: usize, id: Option<EventId>) -> Result<(), Divergence> {
        while matches!(self.s.procs[p].life, Life::Ready | Life::Waiting)
            && let Some(n) = self.model.next_step(&self.s, p)
        {
            let by_exit = matches!(
                n,
                Step::ReleaseRootLock
                    | Step::CloseEnvLock
                    | Step::UnlockEnvLock
                    | Step::WaitForChild
            ) || (unseen(n) && !self.seen[p].contains(&n));
            if self.model.step_enabled(&self.s, p) && (by_exit || self.spawn_fails(p, n)) {
                self.take(p, n);
                continue;
            }
            return Err(self.diverge(p, id, "exit".to_string()));
        }
        Ok(())
    }

    /// True if `n` is a `spawn-child` that the model says fails here (the environment is
    /// gone): a run that exits without its child ever exec'ing tried to spawn it and
    /// failed (the failing `execve` does not reach the gate).
    fn spawn_fails(&self, p: usize, n: Step) -> bool {
        n == Step::SpawnChild
            && self.child[p].is_none()
            && self.model.after(&self.s, Action::Step(p, n)).procs[p].life
                == Life::Done(Outcome::SpawnFailed)
    }

    /// Process `p` was killed by signal `sig` (its wait status said so): the model's
    /// `killed` (its descriptors close, its locks go unless its child holds them, its
    /// temporary cache stays), if the model allows it now.
    fn killed(&mut self, p: usize, sig: i32) -> Result<(), Divergence> {
        if !matches!(self.s.procs[p].life, Life::Ready | Life::Waiting) {
            return Ok(());
        }
        if !self.model.event_enabled(&self.s, p, ModelEvent::Killed) {
            return Err(self.diverge(p, None, format!("killed (signal {sig})")));
        }
        self.s = self
            .model
            .after(&self.s, Action::Event(p, ModelEvent::Killed));
        self.steps += 1;
        Ok(())
    }

    fn child_exits(&mut self, p: usize) {
        if self.model.event_enabled(&self.s, p, ModelEvent::ChildExits) {
            self.s = self
                .model
                .after(&self.s, Action::Event(p, ModelEvent::ChildExits));
        }
    }
}

/// One model process: its pid, kind, whether it was killed, and its child.
struct Member {
    pid: i32,
    kind: Kind,
    killed: bool,
}

/// A process that is neither uv nor cachelock and only looked at `.lock`: it opened it
/// and tried to lock it without waiting (and released what it got), nothing else (a
/// harness checking that nobody holds the lock). It is no process of the model.
fn observer(records: &[Record], pid: i32) -> bool {
    records.iter().filter(|r| r.event.pid == pid).all(|r| {
        matches!(
            (r.event.step, r.event.syscall),
            (
                None | Some(Step::OpenLockFile) | Some(Step::ReleaseRootLock),
                _
            ) | (
                Some(Step::LockShared | Step::LockExclusive),
                Syscall::Flock {
                    nonblocking: true,
                    ..
                },
            )
        )
    })
}

/// The model's processes among the traced ones, in the order of their first step
/// (see the module documentation for the rules).
fn members(records: &[Record], processes: &[Process]) -> Vec<(Member, Option<Invocation>)> {
    let argv = |pid: i32| -> &[String] {
        processes
            .iter()
            .find(|p| p.pid == pid)
            .map_or(&[][..], |p| &p.argv[..])
    };
    let mut order: Vec<i32> = Vec::new();
    for r in records {
        if let Some(step) = r.event.step
            && step != Step::SpawnChild
            && !order.contains(&r.event.pid)
        {
            order.push(r.event.pid);
        }
    }
    let steps_of = |pid: i32| records.iter().filter(move |r| r.event.pid == pid);
    order
        .into_iter()
        .filter_map(|pid| {
            let killed = processes
                .iter()
                .any(|p| p.pid == pid && matches!(p.exit, Some(Exit::Signal(_))));
            if let Some(inv) = invocation(argv(pid)) {
                let member = Member {
                    pid,
                    kind: inv.kind,
                    killed,
                };
                return Some((member, Some(inv)));
            }
            // Another program: a process of the model only if it used the cache's
            // `.lock` or made a temporary cache, and did more than look.
            let mut root = false;
            let mut exclusive = false;
            let mut temp = false;
            for r in steps_of(pid) {
                match r.event.step {
                    Some(s) if is_root_lock_step(s) => {
                        root = true;
                        exclusive |= s == Step::LockExclusive;
                    }
                    Some(Step::CreateTempCache) => temp = true,
                    _ => {}
                }
            }
            if !temp && (!root || observer(records, pid)) {
                return None;
            }
            let kind = if temp && !root {
                Kind::RunNoCache
            } else if exclusive {
                Kind::Clean
            } else {
                Kind::Run
            };
            Some((Member { pid, kind, killed }, None))
        })
        .collect()
}

/// The child of a run (`pid`, whose command line is `inv`, if known): the first
/// process it started whose arguments run the run's command
/// ([`crate::kinds::runs_command`]); for a program that is not uv or cachelock, the
/// one process it started, if it started exactly one.
fn child_of(
    pid: i32,
    inv: Option<&Invocation>,
    records: &[Record],
    processes: &[Process],
) -> Option<i32> {
    let mut started: Vec<i32> = Vec::new();
    for r in records {
        if r.event.step == Some(Step::SpawnChild)
            && r.event.parent == Some(pid)
            && !started.contains(&r.event.pid)
        {
            started.push(r.event.pid);
        }
    }
    match inv {
        Some(inv) => started.into_iter().find(|c| {
            processes
                .iter()
                .any(|p| p.pid == *c && runs_command(&p.argv, &inv.command))
        }),
        None => (started.len() == 1).then(|| started[0]),
    }
}

/// Replays the interleaving (`records`, `timeline` and `processes` of a gate or a
/// trace) on `policy`'s model. `Err` only for an interleaving the model cannot be built
/// for (no process touched the cache, or too many did).
pub fn check(
    policy: Policy,
    records: &[Record],
    timeline: &[Moment],
    processes: &[Process],
) -> Result<Checked, String> {
    let members = members(records, processes);
    if members.is_empty() {
        return Err("no uv or cachelock process used the cache".into());
    }
    let text: Vec<String> = members
        .iter()
        .map(|(m, _)| {
            let mut t = m.kind.token().to_string();
            if m.killed {
                t.push_str("+crash");
            }
            t
        })
        .collect();
    let scenario =
        Scenario::parse_at_most(&text.join(","), MAX_SIMULATED_PROCS).map_err(|e| e.0)?;
    let model = CacheModel::new(policy, &scenario);
    if model.procs.len() != members.len() {
        return Err(format!(
            "scenario {scenario} has a process the trace cannot show"
        ));
    }
    let pids: Vec<i32> = members.iter().map(|(m, _)| m.pid).collect();
    let child: Vec<Option<i32>> = members
        .iter()
        .map(|(m, inv)| {
            if m.kind.is_run() {
                child_of(m.pid, inv.as_ref(), records, processes)
            } else {
                None
            }
        })
        .collect();
    let seen: Vec<Vec<Step>> = pids
        .iter()
        .enumerate()
        .map(|(p, pid)| {
            records
                .iter()
                .filter(|r| r.event.pid == *pid)
                .filter_map(|r| r.event.step)
                .map(|step| in_program(&model, p, step))
                .collect()
        })
        .collect();
    let initial = model.initial_state();
    let mut rp = Replay {
        s: initial.clone(),
        model,
        records,
        pids,
        child,
        seen,
        early: Vec::new(),
        steps: 0,
    };
    let mut order = timeline.to_vec();
    let mut verdict = replay(&mut rp, &order, processes);
    // A lock call takes effect somewhere between its entry and its return. Steps are
    // taken at entry, so a lock granted to `p` while the model still has another
    // process's lock (entered, not yet returned) in its way only says that the kernel
    // served `p` first: replay with those entries moved after `p`'s return, an order the
    // real calls allow. Bounded: each retry moves at least one entry later.
    for _ in 0..64 {
        let Err(d) = &verdict else { break };
        if let Some(later) = in_flight_announcements(&rp, &order, d) {
            order = later;
        } else if let Some(early) = early_await(&rp, &order, d, processes) {
            rp.early.push(early);
        } else if let Some(later) = in_flight_locks(&rp, &order, d) {
            order = later;
        } else {
            break;
        }
        rp.s = initial.clone();
        rp.steps = 0;
        verdict = replay(&mut rp, &order, processes);
    }
    Ok(Checked {
        scenario: scenario.to_string(),
        pids: rp.pids.clone(),
        steps: rp.steps,
        verdict,
    })
}

/// True if process `p` did a step while the model has it wait for announced cleans and
/// `p` locked no announcement anywhere in the trace (it found none to wait for).
fn found_no_announcement(rp: &Replay<'_>, d: &Divergence) -> Option<usize> {
    let p = rp.proc_of(d.pid)?;
    (rp.model.next_step(&rp.s, p) == Some(Step::AwaitAnnouncedCleans)
        && !rp.seen[p].contains(&Step::AwaitAnnouncedCleans))
    .then_some(p)
}

/// For that divergence: the timeline with the other processes' announcements still in
/// flight at `p`'s step (a rename into `.cleans/` entered before it and not returned
/// before it) moved just after it: such a rename may take effect after `p` read
/// `.cleans/`. `None` if there are none.
fn in_flight_announcements(
    rp: &Replay<'_>,
    order: &[Moment],
    d: &Divergence,
) -> Option<Vec<Moment>> {
    found_no_announcement(rp, d)?;
    let id = d.event?;
    let at = order.iter().position(|m| *m == Moment::Entered(id))?;
    move_in_flight_after(order, at, |e| {
        let ev = &rp.records[e.0].event;
        ev.pid != d.pid && ev.step == Some(Step::AnnounceClean)
    })
}

/// For that divergence, when no announcement is in flight: `p` read `.cleans/` (a call
/// the gate does not stop at) somewhere between its previous event (or, for its first,
/// the moment it started) and this step, and missed the cleans that announced in that
/// window. The wait is taken just before the first announcement that may have taken
/// effect after that read: a rename into `.cleans/` by another process that entered
/// after `p`'s previous event, or, with none, returned after `p` started: `(that moment,
/// p)`. `None` if there is no such announcement: one done before `p` started, or
/// before its previous event, is one it had to see.
fn early_await(
    rp: &Replay<'_>,
    order: &[Moment],
    d: &Divergence,
    processes: &[Process],
) -> Option<(usize, usize)> {
    let id = d.event?;
    let p = found_no_announcement(rp, d)?;
    if rp.early.iter().any(|(_, q)| *q == p) {
        return None;
    }
    let at = order.iter().position(|m| *m == Moment::Entered(id))?;
    let pid_of = |m: &Moment| match *m {
        Moment::Entered(e) | Moment::Returned(e) => Some(rp.records[e.0].event.pid),
        Moment::Ended(pid) => Some(pid),
    };
    let previous = order[..at].iter().rposition(|m| pid_of(m) == Some(d.pid));
    let started = processes.iter().find(|q| q.pid == d.pid)?.started;
    order[..at].iter().enumerate().find_map(|(i, m)| match *m {
        Moment::Entered(e) => {
            let ev = &rp.records[e.0].event;
            let announces = ev.pid != d.pid && ev.step == Some(Step::AnnounceClean);
            let late = match previous {
                Some(prev) => i > prev,
                None => order[..started.min(order.len())]
                    .iter()
                    .all(|r| *r != Moment::Returned(e)),
            };
            (announces && late).then_some((i, p))
        }
        _ => None,
    })
}

/// For a divergence "lock granted while the model has the process wait": the timeline
/// with the entries of the other model processes' lock calls still in flight at that
/// return (entered before it, returned after it or never) moved just after it; `None`
/// if there are none (the divergence stands).
fn in_flight_locks(rp: &Replay<'_>, order: &[Moment], d: &Divergence) -> Option<Vec<Moment>> {
    let id = d.event?;
    if !d.real.ends_with("(granted)") {
        return None;
    }
    let ret = order.iter().position(|m| *m == Moment::Returned(id))?;
    move_in_flight_after(order, ret, |e| {
        let ev = &rp.records[e.0].event;
        matches!(ev.step, Some(Step::LockShared | Step::LockExclusive))
            && ev.pid != d.pid
            && rp.proc_of(ev.pid).is_some()
    })
}

/// `order` with the entries of calls still in flight at moment `at` (entered before it,
/// not returned before it) that `which` selects moved just after it; `None` if there
/// are none. A call takes effect somewhere between its entry and its return, so such
/// an entry may stand after `at`: an order the real calls allow.
fn move_in_flight_after(
    order: &[Moment],
    at: usize,
    which: impl Fn(EventId) -> bool,
) -> Option<Vec<Moment>> {
    let moved: Vec<Moment> = order[..at]
        .iter()
        .filter(|m| match **m {
            Moment::Entered(e) => which(e) && !order[..at].contains(&Moment::Returned(e)),
            _ => false,
        })
        .copied()
        .collect();
    if moved.is_empty() {
        return None;
    }
    let mut out: Vec<Moment> = order[..=at]
        .iter()
        .filter(|m| !moved.contains(m))
        .copied()
        .collect();
    out.extend(moved);
    out.extend_from_slice(&order[at + 1..]);
    Some(out)
}

fn replay(
    rp: &mut Replay<'_>,
    timeline: &[Moment],
    processes: &[Process],
) -> Result<(), Divergence> {
    for (i, m) in timeline.iter().enumerate() {
        let early: Vec<usize> = rp
            .early
            .iter()
            .filter(|(at, _)| *at == i)
            .map(|(_, p)| *p)
            .collect();
        for p in early {
            if let Moment::Entered(id) = *m {
                rp.enter(p, Step::AwaitAnnouncedCleans, id)?;
            }
        }
        match *m {
            Moment::Entered(id) => {
                let e = &rp.records[id.0].event;
                let (pid, step, syscall, parent) = (e.pid, e.step, e.syscall, e.parent);
                if let Some(p) = rp.proc_of(pid) {
                    if matches!(syscall, Syscall::ExitGroup { .. }) {
                        rp.end(p, Some(id))?;
                    } else if let Some(step) = step
                        && step != Step::SpawnChild
                    {
                        rp.enter(p, in_program(&rp.model, p, step), id)?;
                    }
                }
                if step == Some(Step::SpawnChild)
                    && let Some(p) = parent.and_then(|pp| rp.proc_of(pp))
                    && rp.child[p] == Some(pid)
                {
                    rp.enter(p, Step::SpawnChild, id)?;
                }
                if matches!(syscall, Syscall::ExitGroup { .. })
                    && let Some(p) = rp.child.iter().position(|c| *c == Some(pid))
                {
                    rp.child_exits(p);
                }
            }
            Moment::Returned(id) => {
                let r = &rp.records[id.0];
                if let (Some(p), Some(step @ (Step::LockShared | Step::LockExclusive))) =
                    (rp.proc_of(r.event.pid), r.event.step)
                    && r.result == Some(0)
                {
                    rp.granted(p, step, id)?;
                }
                // One announced clean's lock was had: the wait ends once the model has
                // every awaited clean withdrawn (the last such return, or the next step).
                if let (Some(p), Some(Step::AwaitAnnouncedCleans)) =
                    (rp.proc_of(r.event.pid), r.event.step)
                    && rp.s.procs[p].life == Life::Waiting
                    && rp.model.next_step(&rp.s, p) == Some(Step::AwaitAnnouncedCleans)
                    && rp.model.step_enabled(&rp.s, p)
                {
                    rp.take(p, Step::AwaitAnnouncedCleans);
                }
            }
            Moment::Ended(pid) => {
                if let Some(p) = rp.proc_of(pid) {
                    let signal = processes.iter().find_map(|q| match q.exit {
                        Some(Exit::Signal(sig)) if q.pid == pid => Some(sig),
                        _ => None,
                    });
                    match signal {
                        Some(sig) => rp.killed(p, sig)?,
                        None => rp.end(p, None)?,
                    }
                }
                if let Some(p) = rp.child.iter().position(|c| *c == Some(pid)) {
                    rp.child_exits(p);
                }
            }
        }
    }
    Ok(())
}
