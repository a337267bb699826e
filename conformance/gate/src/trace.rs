//! Trace mode: run a command under the gate with nothing held, and report its
//! processes' protocol steps in the order they happened.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gate::{Error, Exit, Gate, Hold, Moment, Record};

/// What a traced run did.
#[derive(Debug)]
pub struct TraceReport {
    /// Every event, in order, with its outcome.
    pub records: Vec<Record>,
    /// What happened, in order.
    pub timeline: Vec<Moment>,
    /// How the command (the root process) ended.
    pub exit: Option<Exit>,
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
    })
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
