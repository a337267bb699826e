//! Checking a recorded interleaving against the model: is it a behaviour of policy P?
//!
//! The processes that touch `<cache>/.lock` are the model's processes, in the order
//! they first did: one that locks it exclusive is a `clean`, any other a `run`. The
//! timeline is replayed on [`CacheModel`] for that scenario:
//! - a step is taken when its call enters, if the model has it enabled for that
//!   process; a blocking lock the model cannot grant puts the process in the model's
//!   wait, and the lock is taken when the real call returns granted;
//! - steps the gate cannot see (a scaffold or an environment already there, an empty
//!   cache with nothing to delete or move to the trash, no trash to delete, the wait for
//!   the child, the wait for announced cleans when none is announced) are taken implicitly when the model has them next and
//!   enabled, and the process does not take them anywhere in the trace; so is
//!   `release-root-lock` for a process that never unlocks `.lock` with `LOCK_UN` (it
//!   releases it by closing the descriptor, a call the gate does not stop at: cachelock
//!   drops its lock this way). A step the process does take is held to the moment it
//!   does;
//! - a step the process already took (a retried lock, a re-opened `.lock`, the next
//!   removal of `delete-entries`, the next rename of `move-to-trash`, the next removal
//!   of `delete-trash`) is one step, taken once;
//! - a removal in the trash by a process whose policy has no trash (uv's clean deleting
//!   the trash a killed cachelock clean left) is that process's `delete-entries`;
//! - of the processes a run starts, the last is its child (uv starts helpers, such as
//!   interpreter queries, before it); its `exit_group` is the model's `child-exits`;
//! - a process's `exit_group` (or its death) ends it: its descriptors close, so the
//!   releases left (and the wait for its child) are taken then (a holder that never
//!   unlocks explicitly releases its lock by exiting); any other step left (unlinking
//!   `.lock`, removing the root) is a divergence: the process exited without it.
//!
//! The first step (or lock grant) the model does not allow is the divergence.

use std::collections::HashMap;
use std::fmt;

use cachelock_model::machine::{Action, CacheModel, Life, State};
use cachelock_model::protocol::{Event as ModelEvent, Kind, Policy, Scenario, Step};

use crate::gate::{EventId, Moment, Record};
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

/// Steps the gate may not see: taken implicitly when the model has them next.
fn unseen(step: Step) -> bool {
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
        if !self.model.step_enabled(&self.s, p) {
            return Err(self.diverge(p, Some(id), format!("{step} (granted)")));
        }
        self.take(p, step);
        Ok(())
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
            if !by_exit || !self.model.step_enabled(&self.s, p) {
                return Err(self.diverge(p, id, "exit".to_string()));
            }
            self.take(p, n);
        }
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

/// Replays the interleaving (`records` and `timeline` of a gate or a trace) on
/// `policy`'s model. `Err` only for an interleaving the model cannot be built for (no
/// process touched the cache, or too many did).
pub fn check(policy: Policy, records: &[Record], timeline: &[Moment]) -> Result<Checked, String> {
    let mut pids: Vec<i32> = Vec::new();
    let mut cleaner: HashMap<i32, bool> = HashMap::new();
    for r in records {
        if let Some(step) = r.event.step
            && is_root_lock_step(step)
        {
            if !pids.contains(&r.event.pid) {
                pids.push(r.event.pid);
            }
            *cleaner.entry(r.event.pid).or_default() |= step == Step::LockExclusive;
        }
    }
    if pids.is_empty() {
        return Err("no process touched the cache's .lock".into());
    }
    let text: Vec<&str> = pids
        .iter()
        .map(|p| {
            if cleaner[p] {
                Kind::Clean.token()
            } else {
                Kind::Run.token()
            }
        })
        .collect();
    let scenario = Scenario::parse(&text.join(",")).map_err(|e| e.0)?;
    let model = CacheModel::new(policy, &scenario);
    if model.procs.len() != pids.len() {
        return Err(format!(
            "scenario {scenario} has a process the trace cannot show"
        ));
    }
    // Each run's child: the last process it spawned.
    let child: Vec<Option<i32>> = pids
        .iter()
        .map(|pid| {
            records
                .iter()
                .rev()
                .find(|r| r.event.step == Some(Step::SpawnChild) && r.event.parent == Some(*pid))
                .map(|r| r.event.pid)
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
    let mut rp = Replay {
        s: model.initial_state(),
        model,
        records,
        pids,
        child,
        seen,
        steps: 0,
    };
    let verdict = replay(&mut rp, timeline);
    Ok(Checked {
        scenario: scenario.to_string(),
        pids: rp.pids.clone(),
        steps: rp.steps,
        verdict,
    })
}

fn replay(rp: &mut Replay<'_>, timeline: &[Moment]) -> Result<(), Divergence> {
    for m in timeline {
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
            }
            Moment::Ended(pid) => {
                if let Some(p) = rp.proc_of(pid) {
                    rp.end(p, None)?;
                }
                if let Some(p) = rp.child.iter().position(|c| *c == Some(pid)) {
                    rp.child_exits(p);
                }
            }
        }
    }
    Ok(())
}
