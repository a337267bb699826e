//! One protocol process under the conformance harness: a real [`Session`] driven one
//! step at a time over stdin/stdout, so that the harness can interleave several of them
//! and kill one with SIGKILL, for real.
//!
//! `cl-driver POLICY KIND CACHE_DIR ENV_NAME CHILD_EXIT_FILE CHILD_REPORT_FILE`
//!
//! Commands, one per line on stdin; one JSON line answers each:
//! - `step`: perform the next step without blocking (`Wait::NoBlock`); when that ends
//!   the program, the answer says `"exited": true` and the driver exits as the process
//!   would: dropping everything the session holds;
//! - `observe`: what the session holds ([`cachelock::session::SessionView`]);
//! - `timeout`: the step the process waits at, tried for real with [`Wait::Block`] and
//!   the lock timeout (`CACHELOCK_LOCK_TIMEOUT` seconds, 0.1 by default): the lock is
//!   held by a process the harness does not move, so the real wait loop ends with its
//!   real timeout error; the answer says `"timed_out": true` (the error was
//!   [`Error::LockTimeout`]) and the driver exits as the process would (2);
//! - `quit`: drop everything and exit 0.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use std::time::Duration;

use cachelock::cache::CacheDir;
use cachelock::error::Error;
use cachelock::session::{LockView, Session, SessionConfig, StepOutcome, Wait};
use cachelock_model::{Kind, Policy};
use serde_json::json;

fn lock_name(l: LockView) -> &'static str {
    match l {
        LockView::Closed => "closed",
        LockView::Open => "open",
        LockView::Held(mode) => mode.name(),
    }
}

fn outcome_json(o: &StepOutcome) -> serde_json::Value {
    match o {
        StepOutcome::Done => json!({"outcome": "done"}),
        StepOutcome::Reused => json!({"outcome": "reused"}),
        StepOutcome::WouldBlock => json!({"outcome": "would-block"}),
        StepOutcome::ProceededUnlocked => json!({"outcome": "proceeded-unlocked"}),
        StepOutcome::GaveUp => json!({"outcome": "gave-up"}),
        StepOutcome::NoCache => json!({"outcome": "no-cache"}),
        StepOutcome::Skipped(envs) => json!({"outcome": "skipped", "detail": envs}),
        StepOutcome::ChildExited(code) => json!({"outcome": "child-exited", "detail": code}),
        StepOutcome::Failed(why) => json!({"outcome": "failed", "detail": why}),
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.len() != 6 {
        eprintln!(
            "usage: cl-driver POLICY KIND CACHE_DIR ENV_NAME CHILD_EXIT_FILE CHILD_REPORT_FILE"
        );
        std::process::exit(2);
    }
    let text = |i: usize| args[i].to_string_lossy().into_owned();
    let policy = Policy::parse(&text(0)).unwrap_or_else(|e| fail(&e.to_string()));
    let kind =
        Kind::from_token(&text(1)).unwrap_or_else(|| fail(&format!("unknown kind {}", text(1))));
    let cache = if kind == Kind::RunNoCache {
        CacheDir::Temporary
    } else {
        CacheDir::Persistent(PathBuf::from(&args[2]))
    };
    let child = std::env::current_exe()
        .map(|p| p.with_file_name("cl-child"))
        .unwrap_or_else(|e| fail(&format!("no current exe: {e}")));
    let mut config = SessionConfig::new(cache, policy, kind);
    config.env_name = text(3);
    config.command = vec![child.into(), args[4].clone(), args[5].clone()];
    // Only a `timeout` command waits; `step` never does (`Wait::NoBlock`).
    let timeout = std::env::var("CACHELOCK_LOCK_TIMEOUT")
        .ok()
        .map(|t| {
            t.parse::<f64>()
                .unwrap_or_else(|e| fail(&format!("timeout {t}: {e}")))
        })
        .unwrap_or(0.1);
    config.lock_timeout = Some(Duration::from_secs_f64(timeout));
    let mut session = Session::new(config).unwrap_or_else(|e| fail(&e.to_string()));

    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.trim() {
            "step" => {
                let mut answer = match session.step(Wait::NoBlock) {
                    Ok(o) => outcome_json(&o),
                    Err(e) => json!({"outcome": "error", "detail": e.to_string()}),
                };
                if session.next_step().is_none() {
                    answer["exited"] = json!(true);
                    let code = session.exit_code();
                    let _ = writeln!(out, "{answer}").and_then(|()| out.flush());
                    drop(session);
                    std::process::exit(code);
                }
                answer
            }
            "observe" => {
                let v = session.observe();
                json!({
                    "next": v.next_step.map(|s| s.name()),
                    "finished": v.finished,
                    "root_lock": lock_name(v.root_lock),
                    "env_lock": lock_name(v.env_lock),
                    "child_pid": v.child_pid,
                    "child_running": v.child_running,
                    "temp_cache": v.temp_cache.map(|p| p.to_string_lossy().into_owned()),
                    "exit_code": v.exit_code,
                })
            }
            "timeout" => {
                let mut answer = match session.step(Wait::Block) {
                    Ok(o) => outcome_json(&o),
                    Err(e) => json!({
                        "outcome": "error",
                        "detail": e.to_string(),
                        "timed_out": matches!(e, Error::LockTimeout { .. }),
                    }),
                };
                if session.next_step().is_none() {
                    answer["exited"] = json!(true);
                    let code = session.exit_code();
                    let _ = writeln!(out, "{answer}").and_then(|()| out.flush());
                    drop(session);
                    std::process::exit(code);
                }
                answer
            }
            "quit" => {
                drop(session);
                std::process::exit(0);
            }
            other => json!({"outcome": "error", "detail": format!("unknown command {other}")}),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("cl-driver: {msg}");
    std::process::exit(2)
}
