//! The library seam: sessions stepped one at a time with `Wait::NoBlock`, as the
//! conformance harness drives them, on real files and real children.

mod common;

use std::ffi::OsString;
use std::time::Duration;

use cachelock::{
    CacheDir, Kind, LockView, Mode, Policy, Session, SessionConfig, Step, StepOutcome, Wait,
};
use common::{Dirs, eventually};

fn session(d: &Dirs, policy: Policy, kind: Kind, command: &str) -> Session {
    let mut config = SessionConfig::new(CacheDir::Persistent(d.cache()), policy, kind);
    config.command = ["sh", "-c", command].map(OsString::from).to_vec();
    config.lock_timeout = Some(Duration::from_secs(5));
    Session::new(config).expect("a valid session")
}

/// Steps until `step` is next (every step before it must not block).
fn step_until(s: &mut Session, step: Step) {
    while s.next_step() != Some(step) {
        let next = s.next_step();
        let outcome = s.step(Wait::NoBlock).expect("step");
        assert!(
            !matches!(outcome, StepOutcome::WouldBlock | StepOutcome::Failed(_)),
            "{next:?} gave {outcome:?}"
        );
    }
}

/// Steps to the end, retrying steps that would block until they do not.
fn finish(s: &mut Session) -> Vec<(Step, StepOutcome)> {
    let mut log = Vec::new();
    while let Some(step) = s.next_step() {
        let mut outcome = s.step(Wait::NoBlock).expect("step");
        let mut tries = 0;
        while outcome == StepOutcome::WouldBlock {
            tries += 1;
            assert!(tries < 1500, "{step} blocked for good");
            std::thread::sleep(Duration::from_millis(10));
            outcome = s.step(Wait::NoBlock).expect("step");
        }
        log.push((step, outcome));
    }
    log
}

#[test]
fn clean_lock_exclusive_would_block_while_a_run_child_lives_under_uv_0_13() {
    let d = Dirs::new();
    let mut run = session(&d, Policy::Uv013, Kind::Run, &d.await_flag("go"));
    step_until(&mut run, Step::WaitForChild);
    let view = run.observe();
    assert_eq!(view.root_lock, LockView::Held(Mode::Shared));
    assert!(view.child_running && view.child_pid.is_some());
    assert_eq!(run.step(Wait::NoBlock).ok(), Some(StepOutcome::WouldBlock));

    let mut clean = session(&d, Policy::Uv013, Kind::Clean, "");
    step_until(&mut clean, Step::LockExclusive);
    assert_eq!(
        clean.step(Wait::NoBlock).ok(),
        Some(StepOutcome::WouldBlock)
    );
    assert_eq!(
        clean.observe().root_lock,
        LockView::Open,
        "a blocked step holds nothing"
    );

    d.set("go");
    let log = finish(&mut run);
    assert_eq!(log[0], (Step::WaitForChild, StepOutcome::ChildExited(0)));
    assert_eq!(run.observe().root_lock, LockView::Closed);
    let log = finish(&mut clean);
    assert_eq!(log[0], (Step::LockExclusive, StepOutcome::Done));
}

#[test]
fn clean_skips_the_env_a_run_holds_under_cachelock() {
    let d = Dirs::new();
    let mut run = session(&d, Policy::Cachelock, Kind::Run, &d.await_flag("go"));
    step_until(&mut run, Step::WaitForChild);
    let view = run.observe();
    assert_eq!(view.root_lock, LockView::Closed, "released before spawning");
    assert_eq!(view.env_lock, LockView::Held(Mode::Shared));

    let mut clean = session(&d, Policy::Cachelock, Kind::Clean, "");
    let log = finish(&mut clean);
    assert!(
        log.contains(&(Step::MoveToTrash, StepOutcome::Skipped(vec!["with".into()]))),
        "{log:?}"
    );
    assert!(
        view.env_dir
            .is_some_and(|e| e.join("cachelock-env").exists())
    );
    d.set("go");
    finish(&mut run);
}

#[test]
fn run_waits_for_an_announced_clean_under_cachelock() {
    let d = Dirs::new();
    std::fs::create_dir_all(d.cache()).ok();
    cachelock::cache::create_scaffold(&d.cache()).ok();
    let mut clean = session(&d, Policy::Cachelock, Kind::Clean, "");
    assert_eq!(clean.step(Wait::NoBlock).ok(), Some(StepOutcome::Done));
    assert!(clean.observe().announcement.is_some());

    let mut run = session(&d, Policy::Cachelock, Kind::Run, "true");
    assert_eq!(run.next_step(), Some(Step::AwaitAnnouncedCleans));
    assert_eq!(run.step(Wait::NoBlock).ok(), Some(StepOutcome::WouldBlock));

    finish(&mut clean);
    assert!(clean.observe().announcement.is_none());
    let log = finish(&mut run);
    assert_eq!(log[0], (Step::AwaitAnnouncedCleans, StepOutcome::Done));
    assert_eq!(run.exit_code(), 0);
}

#[test]
fn clean_force_proceeds_unlocked_and_autoprune_gives_up_when_busy() {
    let d = Dirs::new();
    let mut run = session(&d, Policy::Uv013, Kind::Run, &d.await_flag("go"));
    step_until(&mut run, Step::WaitForChild);

    let mut force = session(&d, Policy::Uv013, Kind::CleanForce, "");
    step_until(&mut force, Step::LockExclusive);
    assert_eq!(
        force.step(Wait::NoBlock).ok(),
        Some(StepOutcome::ProceededUnlocked)
    );
    assert_eq!(force.next_step(), Some(Step::DeleteEntries));

    let mut prune = session(&d, Policy::UvAutoprune, Kind::Prune, "");
    step_until(&mut prune, Step::LockExclusive);
    assert_eq!(prune.step(Wait::NoBlock).ok(), Some(StepOutcome::GaveUp));
    assert_eq!(prune.next_step(), None);
    assert_eq!(prune.exit_code(), 0);
    d.set("go");
    finish(&mut run);
    finish(&mut force);
}

#[test]
fn no_cache_spawn_fails_after_the_temp_cache_is_dropped_under_uv_0_8_19() {
    let d = Dirs::new();
    let mut config = SessionConfig::new(CacheDir::Temporary, Policy::Uv0819, Kind::RunNoCache);
    config.command = vec![OsString::from("true")];
    let mut run = Session::new(config).expect("session");
    step_until(&mut run, Step::DropTempCache);
    let temp = run
        .observe()
        .temp_cache
        .expect("temp cache exists before the drop");
    run.step(Wait::NoBlock).expect("drop");
    assert!(!temp.exists());
    match run.step(Wait::NoBlock) {
        Ok(StepOutcome::Failed(msg)) => assert!(msg.contains("is missing"), "{msg}"),
        other => panic!("spawn should fail: {other:?}"),
    }
    assert_eq!((run.next_step(), run.exit_code()), (None, 2));
    drop(d);
}

#[test]
fn dropping_a_session_waits_for_its_child_before_removing_the_temp_cache() {
    let d = Dirs::new();
    let mut config = SessionConfig::new(CacheDir::Temporary, Policy::Cachelock, Kind::RunNoCache);
    let script = format!(
        "{}; sleep 0.3; test -e \"$CACHELOCK_ENV/cachelock-env\" && {}",
        d.touch("ready"),
        d.touch("intact")
    );
    config.command = ["sh", "-c", &script].map(OsString::from).to_vec();
    let mut run = Session::new(config).expect("session");
    step_until(&mut run, Step::WaitForChild);
    eventually("child ready", || d.file("ready").exists());
    drop(run); // an error path: the guard waits for the child first
    assert!(d.file("intact").exists());
}

#[test]
fn a_killed_cleans_announcement_neither_blocks_runs_nor_outlives_the_next_clean() {
    let d = Dirs::new();
    cachelock::cache::create_scaffold(&d.cache()).ok();
    let stale = d.cache().join(".cleans/999-stale");
    std::fs::create_dir_all(d.cache().join(".cleans")).ok();
    std::fs::write(&stale, "").ok();
    let mut run = session(&d, Policy::Cachelock, Kind::Run, "true");
    assert_eq!(run.step(Wait::NoBlock).ok(), Some(StepOutcome::Done));
    let mut clean = session(&d, Policy::Cachelock, Kind::Clean, "");
    assert_eq!(clean.step(Wait::NoBlock).ok(), Some(StepOutcome::Done));
    assert!(!stale.exists());
    finish(&mut clean);
    finish(&mut run);
}

#[test]
fn cachelock_keep_temp_leaks_the_temporary_cache_by_design() {
    let mut config = SessionConfig::new(
        CacheDir::Temporary,
        Policy::CachelockKeepTemp,
        Kind::RunNoCache,
    );
    config.command = vec![OsString::from("true")];
    let mut run = Session::new(config).expect("session");
    step_until(&mut run, Step::SpawnChild);
    let temp = run.observe().temp_cache.expect("a temporary cache");
    finish(&mut run);
    drop(run);
    assert!(temp.exists(), "nobody removes it under cachelock-keep-temp");
    std::fs::remove_dir_all(&temp).ok();
}
