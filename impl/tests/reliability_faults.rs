//! SIGKILL at every step of the `run`, `run --no-cache`, `clean` and `prune` programs
//! under `cachelock` (`CACHELOCK_FAULT=kill-at-step=N`, the `faults` feature).
//!
//! After each kill: the next run and the next clean succeed, no lock of the cache is
//! left held, an orphaned child keeps its environment, and a leaked temporary cache is
//! handled by `status` and `prune`.
//!
//! Needs the `faults` feature (`required-features` in impl/Cargo.toml): it is built by
//! `cargo test --workspace` (the conformance crate enables `faults` on `cachelock`) and
//! skipped by `cargo test -p cachelock` (run `cargo test -p cachelock --features faults`).

mod common;

use std::fs::File;
use std::path::Path;

use cachelock::{Kind, Policy, Step};
use common::{Dirs, Proc, eventually};

const SIGKILL_EXIT: i32 = 128 + 9;

/// Every lock file of the cache (root, environments, announcements) can be locked
/// exclusive now: nobody holds anything.
fn assert_no_lock_held(cache: &Path, what: &str) {
    let mut files = vec![cache.join(".lock")];
    for dir in ["environments", ".cleans"] {
        if let Ok(entries) = std::fs::read_dir(cache.join(dir)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.is_file() && (dir == ".cleans" || p.extension().is_some_and(|e| e == "lock"))
            }));
        }
    }
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        assert!(
            file.try_lock().is_ok(),
            "{what}: `{}` is still locked by someone",
            f.display()
        );
    }
}

/// The run whose child touches `<tag>-started`, waits for `<tag>-go`, then records
/// whether its environment is intact (`<tag>-ok` / `<tag>-gone`).
fn child_script(d: &Dirs, tag: &str) -> String {
    format!(
        "{}; {}; if [ -e \"$CACHELOCK_ENV/cachelock-env\" ]; then touch '{}'; else touch '{}'; fi",
        d.touch(&format!("{tag}-started")),
        d.await_flag(&format!("{tag}-go")),
        d.file(&format!("{tag}-ok")).display(),
        d.file(&format!("{tag}-gone")).display(),
    )
}

fn run_ok(d: &Dirs, name: &str) {
    let code = Proc::spawn(d.cmd(name, &["run", "--env", "e", "--", "true"])).exit_code();
    assert_eq!(code, 0, "{name}: {}", d.stderr(name));
}

fn clean_ok(d: &Dirs, name: &str) {
    let code = Proc::spawn(d.cmd(name, &["clean"])).exit_code();
    assert_eq!(code, 0, "{name}: {}", d.stderr(name));
}

/// Kills a process of `kind` at each step in turn and checks the aftermath.
fn kill_at_every_step(kind: Kind) {
    let program = Policy::Cachelock.program(kind);
    for (n, step) in program.iter().enumerate() {
        let what = format!("{} killed before step {n} ({step})", kind.token());
        let d = Dirs::new();
        run_ok(&d, "setup"); // a cache with environment `e` in it
        let tag = "victim";
        let script = child_script(&d, tag);
        let args: Vec<&str> = match kind {
            Kind::Run => vec!["run", "--env", "e", "--", "sh", "-c", &script],
            Kind::RunNoCache => vec!["run", "--no-cache", "--", "sh", "-c", &script],
            Kind::Clean => vec!["clean"],
            Kind::Prune => vec!["prune"],
            _ => unreachable!(),
        };
        let mut cmd = d.cmd("victim", &args);
        cmd.env("CACHELOCK_FAULT", format!("kill-at-step={n}"));
        let mut victim = Proc::spawn(cmd);
        let started = d.file(&format!("{tag}-started"));
        // A victim killed after `spawn-child` leaves a child that will say it started:
        // wait for that, or the child is taken for never spawned and left running.
        let spawned = program[..n].contains(&Step::SpawnChild);
        eventually(
            &format!("{what}: the victim dies or spawns its child"),
            || (!victim.running() && !spawned) || started.exists(),
        );
        let mut orphan = false;
        if started.exists() {
            if victim.running() {
                // Killed after the child's end: let the child finish.
                d.set(&format!("{tag}-go"));
            } else {
                orphan = true;
            }
        }
        assert_eq!(
            victim.exit_code(),
            SIGKILL_EXIT,
            "{what}: {}",
            d.stderr("victim")
        );
        if orphan {
            // The orphan still runs in its environment: a clean must leave it alone.
            clean_ok(&d, "clean-during-orphan");
            d.set(&format!("{tag}-go"));
            eventually(&format!("{what}: the orphan finishes"), || {
                d.file(&format!("{tag}-ok")).exists() || d.file(&format!("{tag}-gone")).exists()
            });
            assert!(
                d.file(&format!("{tag}-ok")).exists(),
                "{what}: the orphaned child lost its environment"
            );
            // Its inherited lock goes when it exits (for `--no-cache`, the temporary
            // cache's own lock, which it inherited).
            eventually(&format!("{what}: the orphan's lock is released"), || {
                let temp_locks_free = std::fs::read_dir(d.tmp()).is_ok_and(|es| {
                    es.flatten().all(|e| {
                        File::open(e.path().join(".lock"))
                            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                            || File::open(e.path().join(".lock"))
                                .is_ok_and(|f| f.try_lock().is_ok())
                    })
                });
                temp_locks_free
                    && File::open(d.cache().join("environments/e.lock"))
                        .is_ok_and(|f| f.try_lock().is_ok())
            });
        }
        assert_no_lock_held(&d.cache(), &what);
        run_ok(&d, "next-run");
        clean_ok(&d, "next-clean");
        assert_no_lock_held(&d.cache(), &what);
        let leftovers: Vec<_> = std::fs::read_dir(d.tmp())
            .map(|es| es.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let created_temp = program[..n].contains(&Step::CreateTempCache);
        let dropped_temp = program[..n].contains(&Step::DropTempCache);
        if kind == Kind::RunNoCache && created_temp && !dropped_temp {
            assert_eq!(
                leftovers.len(),
                1,
                "{what}: the temporary cache leaked: {leftovers:?}"
            );
            leaked_temp_cache_aftermath(&d, &what, &leftovers[0]);
        } else {
            assert!(leftovers.is_empty(), "{what}: nothing leaks: {leftovers:?}");
        }
    }
}

/// A killed `--no-cache` run leaked its temporary cache: `status` reports it and `prune`
/// removes it. The run locked it when it created it (`cache::lock_temp_cache`), so once
/// the run and its child are gone it is provably leaked.
fn leaked_temp_cache_aftermath(d: &Dirs, what: &str, leaked: &Path) {
    assert!(
        leaked.join(".lock").exists(),
        "{what}: the temporary cache has its .lock"
    );
    assert_eq!(Proc::spawn(d.cmd("status", &["status"])).exit_code(), 0);
    let status = d.stdout("status");
    assert!(
        status.contains("leaked temporary caches: 1")
            && status.contains(&leaked.display().to_string()),
        "{what}: status reports the leak: {status}"
    );
    assert_eq!(
        Proc::spawn(d.cmd("prune", &["prune"])).exit_code(),
        0,
        "{}",
        d.stderr("prune")
    );
    assert!(
        !leaked.exists(),
        "{what}: prune removed the leaked temporary cache"
    );
    assert!(d.stderr("prune").contains("Removed leaked temporary cache"));
}

#[test]
fn run_killed_at_any_step_leaves_no_lock_and_its_orphan_keeps_its_env() {
    kill_at_every_step(Kind::Run);
}

#[test]
fn no_cache_run_killed_at_any_step_leaves_no_lock_and_a_leak_prune_can_handle() {
    kill_at_every_step(Kind::RunNoCache);
}

#[test]
fn clean_killed_at_any_step_leaves_no_lock_and_the_next_clean_succeeds() {
    kill_at_every_step(Kind::Clean);
}

#[test]
fn prune_killed_at_any_step_leaves_no_lock_and_the_next_clean_succeeds() {
    kill_at_every_step(Kind::Prune);
}
