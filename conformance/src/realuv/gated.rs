//! A process of a scenario run under the gate (`cachelock-gate`) and held at a protocol
//! step until the harness lets it go: an interleaving forced, not waited for.
//!
//! ptrace requests come from the thread that traces, and a gate reaps only its own
//! thread's children: each held process gets a tracer thread of its own, so that the
//! harness's other processes (started from the harness's thread, untraced) are
//! neither traced nor reaped by it. The thread holds the process at the first event
//! the harness's predicate accepts, tells the harness, and on [`Held::go`] lets the
//! whole tree run free and waits for it to exit. Dropping a [`Held`] that was not let
//! go kills its tree (the gate's drop).

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cachelock_gate::{Event, Exit, Gate, Hold, Record};

/// Decides, with the gate's records so far, whether an event is the one to hold at.
pub type HoldAt = Box<dyn Fn(&Event, &[Record]) -> bool + Send>;

/// A process held at a step by its own tracer thread.
pub struct Held {
    /// `clean#1`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// The step it is held at (`pid step path`).
    pub at: String,
    err: PathBuf,
    go: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<Result<i32, String>>,
    thread: Option<JoinHandle<()>>,
}

impl Held {
    /// Starts `argv` (with `env`, stdout and stderr in files under `dir` named after
    /// `name`) under a gate naming steps against `cache`, and returns once it is held at
    /// the first event `at` accepts. An error if it ends first or `limit` passes.
    pub fn spawn(
        name: &str,
        dir: &Path,
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cache: &Path,
        at: HoldAt,
        limit: Duration,
    ) -> Result<Held, String> {
        let slot = dir.join(name.replace('#', "-"));
        let out = slot.with_extension("out");
        let err = slot.with_extension("err");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?)
            .stderr(fs::File::create(&err).map_err(|e| format!("{}: {e}", err.display()))?)
            .process_group(0);
        let cache = cache.to_path_buf();
        let (held_tx, held_rx) = mpsc::channel::<Result<(u32, String), String>>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let label = name.to_string();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let mut gate = match Gate::new(&cache) {
                Ok(g) => g,
                Err(e) => {
                    let _ = held_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let pid = match gate.spawn(cmd, Hold::Steps) {
                Ok(s) => s.pid,
                Err(e) => {
                    let _ = held_tx.send(Err(format!("cannot start {label} under the gate: {e}")));
                    return;
                }
            };
            let event = loop {
                match gate.next_event_before(deadline) {
                    Ok(Some(e)) if at(&e, gate.records()) => break e,
                    Ok(Some(e)) => {
                        if let Err(err) = gate.release(e.id) {
                            let _ = held_tx.send(Err(err.to_string()));
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = held_tx.send(Err(format!(
                            "{label} ended ({:?}) before the step it is held at",
                            gate.exit_of(pid)
                        )));
                        return;
                    }
                    Err(e) => {
                        let _ = held_tx.send(Err(format!("{label}: {e}")));
                        return;
                    }
                }
            };
            if held_tx.send(Ok((pid as u32, event.to_string()))).is_err() {
                return;
            }
            // Let go when told; a harness that is gone kills the tree (the gate's drop).
            if go_rx.recv().is_err() {
                return;
            }
            let exit = gate
                .free(pid)
                .and_then(|()| gate.release_all_and_wait())
                .map_err(|e| format!("{label}: {e}"))
                .and_then(|()| {
                    gate.exit_of(pid)
                        .ok_or_else(|| format!("{label}: its exit was not seen"))
                });
            let _ = done_tx.send(exit.map(|e| match e {
                Exit::Code(c) => c,
                Exit::Signal(s) => 128 + s,
            }));
        });
        let (pid, at) = match held_rx.recv() {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(format!("the tracer thread of {name} ended"));
            }
        };
        Ok(Held {
            name: name.to_string(),
            pid,
            at,
            err,
            go: Some(go_tx),
            done: done_rx,
            thread: Some(thread),
        })
    }

    /// Lets the process (and everything it started) run free.
    pub fn go(&mut self) {
        if let Some(tx) = self.go.take() {
            let _ = tx.send(());
        }
    }

    /// After [`Held::go`]: waits until the process and all it started have exited; its
    /// exit code as a shell reports it (signal n: 128+n).
    pub fn wait_exit(&mut self, limit: Duration) -> Result<i32, String> {
        let code = self
            .done
            .recv_timeout(limit)
            .map_err(|_| format!("{} did not exit", self.name))?;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        code
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Without a go the tracer thread drops its gate, which kills the tree.
        self.go = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
