//! Trace mode: run a command under the gate with nothing held, report its processes'
//! protocol steps in the order they happened, and check the interleaving against the
//! model ([`trace_and_check`]: the `cachelock trace` command and `cl-trace`).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use cachelock_model::protocol::Policy;

use crate::check::{Checked, Divergence, check};
use crate::gate::{Error, Exit, Gate, Hold, Moment, Process, Record};

/// What a traced run did.
#[derive(Debug)]
pub struct TraceReport {
    /// Every event, in order, with its outcome.
    pub records: Vec<Record>,
    /// What happened, in order.
    pub timeline: Vec<Moment>,
    /// How the command (the root process) ended.
    pub exit: Option<Exit>,
    /// Every traced process: parent, arguments at exec, how it ended.
    pub processes: Vec<Process>,
}

impl TraceReport {
    /// The protocol steps only, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.event.step.is_some())
    }
}

/// Runs `cmd` under the gate (steps named against `cache`), releasing every stop at
/// once, and writes each event to `out` as it happens: `pid step path`, or
/// `pid syscall` for a process's `exit_group`.
pub fn trace(cmd: Command, cache: &Path, mut out: Box<dyn Write>) -> Result<TraceReport, Error> {
    let mut gate = Gate::new(cache)?;
    gate.on_event(move |e| {
        let _ = writeln!(out, "{e}");
        let _ = out.flush();
    });
    let root = gate.spawn(cmd, Hold::Nothing)?.pid;
    gate.release_all_and_wait()?;
    Ok(TraceReport {
        records: gate.records().to_vec(),
        timeline: gate.timeline().to_vec(),
        exit: gate.exit_of(root),
        processes: gate.processes(),
    })
}

/// What the check of a traced interleaving found.
#[derive(Debug)]
pub enum Verdict {
    /// No process touched the cache's `.lock` (or the model cannot be built for the
    /// processes that did): there is nothing to check.
    NothingToCheck(String),
    /// Checked against one policy.
    Policy(Policy, Checked),
    /// Checked against every policy: those that admit the interleaving, and the first
    /// divergence of each of the others.
    Every {
        /// The scenario the traced processes make (`run,clean`).
        scenario: String,
        /// How many model steps the interleaving has (seen or implied), for the first
        /// policy that admits it.
        steps: usize,
        /// The policies whose model allows the interleaving.
        admitted: Vec<Policy>,
        /// The others, each with its first divergence.
        rejected: Vec<(Policy, Divergence)>,
    },
}

/// A traced command and the check of its interleaving.
#[derive(Debug)]
pub struct Outcome {
    /// What the gate saw.
    pub report: TraceReport,
    /// What the model says of it.
    pub verdict: Verdict,
}

impl Outcome {
    /// The exit code of `cachelock trace`: 1 if the interleaving is not a behaviour of
    /// the policy (or, with no policy given, of any policy); else the command's own code
    /// (128+n if it was killed by signal n; 1 if its end was not seen).
    pub fn exit_code(&self) -> u8 {
        let rejected = match &self.verdict {
            Verdict::Policy(_, c) => c.verdict.is_err(),
            Verdict::Every { admitted, .. } => admitted.is_empty(),
            Verdict::NothingToCheck(_) => false,
        };
        if rejected {
            return 1;
        }
        match self.report.exit {
            Some(Exit::Code(c)) => c.clamp(0, 255) as u8,
            Some(Exit::Signal(s)) => (128 + s).clamp(0, 255) as u8,
            None => 1,
        }
    }
}

/// The lines `cachelock trace` prints after the steps: the verdict, each line starting
/// with `check:`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::NothingToCheck(why) => writeln!(f, "check: nothing to check: {why}"),
            Verdict::Policy(policy, c) => match &c.verdict {
                Ok(()) => writeln!(
                    f,
                    "check: the interleaving of {} ({} steps) is a behaviour of {policy}",
                    c.scenario, c.steps
                ),
                Err(d) => writeln!(
                    f,
                    "check: not a behaviour of {policy} ({}): {d}",
                    c.scenario
                ),
            },
            Verdict::Every {
                scenario,
                steps,
                admitted,
                rejected,
            } => {
                if admitted.is_empty() {
                    writeln!(
                        f,
                        "check: the interleaving of {scenario} is a behaviour of no policy"
                    )?;
                } else {
                    let names: Vec<&str> = admitted.iter().map(|p| p.name()).collect();
                    writeln!(
                        f,
                        "check: the interleaving of {scenario} ({steps} steps) is a behaviour of {}",
                        names.join(", ")
                    )?;
                }
                for (policy, d) in rejected {
                    writeln!(f, "check: not a behaviour of {policy}: {d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Traces `cmd` (as [`trace()`], each event written to `out`) and checks the recorded
/// interleaving against `policy`'s model, or, without one, against every policy's
/// ([`Policy::ALL`]).
pub fn trace_and_check(
    cmd: Command,
    cache: &Path,
    policy: Option<Policy>,
    out: Box<dyn Write>,
) -> Result<Outcome, Error> {
    let report = trace(cmd, cache, out)?;
    let verdict = verdict(policy, &report.records, &report.timeline, &report.processes);
    Ok(Outcome { report, verdict })
}

/// The check of a recorded interleaving against `policy`, or against every policy.
pub fn verdict(
    policy: Option<Policy>,
    records: &[Record],
    timeline: &[Moment],
    processes: &[Process],
) -> Verdict {
    let policies: Vec<Policy> = match policy {
        Some(p) => vec![p],
        None => Policy::ALL.to_vec(),
    };
    let mut checked = Vec::new();
    for p in policies {
        match check(p, records, timeline, processes) {
            Ok(c) => checked.push((p, c)),
            Err(why) => return Verdict::NothingToCheck(why),
        }
    }
    if policy.is_some() {
        let (p, c) = checked.remove(0);
        return Verdict::Policy(p, c);
    }
    let scenario = checked[0].1.scenario.clone();
    let steps = checked
        .iter()
        .find(|(_, c)| c.verdict.is_ok())
        .map_or(0, |(_, c)| c.steps);
    let mut admitted = Vec::new();
    let mut rejected = Vec::new();
    for (p, c) in checked {
        match c.verdict {
            Ok(()) => admitted.push(p),
            Err(d) => rejected.push((p, d)),
        }
    }
    Verdict::Every {
        scenario,
        steps,
        admitted,
        rejected,
    }
}

/// The cache a uv command uses when none is named: `UV_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/uv`, else `$HOME/.cache/uv` (uv's own order, after `--cache-dir`).
pub fn default_cache() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UV_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("uv"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("uv"))
}
