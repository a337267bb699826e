//! The gate on real uv 0.13.9: what a traced `uv cache clean` and `uv run` do, and an
//! interleaving forced on them (a clean released into a busy lock is seen blocked,
//! and proceeds when the holder goes).

mod common;

use std::process::{Command, Stdio};

use cachelock_gate::{Event, Exit, Gate, Hold, Settled, Syscall, trace};
use cachelock_model::protocol::Step;
use common::{Sandbox, deadline, gone_or_dead};

const UV: &str = "0.13.9";

fn steps_of(records: &[cachelock_gate::Record], pid: i32) -> Vec<Step> {
    records
        .iter()
        .filter(|r| r.event.pid == pid)
        .filter_map(|r| r.event.step)
        .collect()
}

#[test]
fn traced_clean_locks_exclusive_then_deletes_entries_then_releases() {
    let sb = Sandbox::new(UV);
    sb.fill_cache();
    let report = trace(
        sb.uv_cmd(&["cache", "clean"]),
        &sb.cache,
        Box::new(std::io::sink()),
    )
    .unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    let steps: Vec<_> = report.steps().collect();
    let lock = steps
        .iter()
        .position(|r| r.event.step == Some(Step::LockExclusive))
        .expect("a lock-exclusive step");
    assert_eq!(
        steps[lock].event.path.as_deref(),
        Some(sb.lock_file().as_path())
    );
    assert_eq!(
        steps[lock].result,
        Some(0),
        "the free lock is granted at once"
    );
    assert!(
        steps[..lock]
            .iter()
            .any(|r| r.event.step == Some(Step::OpenLockFile)),
        "the lock file is opened before it is locked"
    );
    assert!(
        !steps[..lock]
            .iter()
            .any(|r| r.event.step == Some(Step::DeleteEntries)),
        "nothing is deleted before the lock"
    );
    let deletes = steps[lock..]
        .iter()
        .filter(|r| r.event.step == Some(Step::DeleteEntries))
        .count();
    assert!(deletes > 0, "a clean of a filled cache deletes entries");
    let last_step = steps.last().unwrap();
    assert_eq!(last_step.event.step, Some(Step::ReleaseRootLock));
    // uv 0.13 keeps `.lock` (and so the root).
    assert!(
        !steps
            .iter()
            .any(|r| r.event.step == Some(Step::UnlinkLockFile))
    );
    assert!(sb.lock_file().exists());
}

#[test]
fn traced_run_locks_shared_spawns_its_child_and_releases_after_it_exits() {
    let sb = Sandbox::new(UV);
    sb.fill_cache();
    let report = trace(sb.run("pass"), &sb.cache, Box::new(std::io::sink())).unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    let records = &report.records;
    let uv_pid = records[0].event.pid;
    let at = |want: &dyn Fn(&Event) -> bool| {
        records
            .iter()
            .position(|r| want(&r.event))
            .unwrap_or_else(|| panic!("not in the trace: {records:#?}"))
    };
    let shared = at(&|e| e.pid == uv_pid && e.step == Some(Step::LockShared));
    assert_eq!(records[shared].result, Some(0));
    assert_eq!(
        records[shared].event.path.as_deref(),
        Some(sb.lock_file().as_path())
    );
    let spawn = at(&|e| e.step == Some(Step::SpawnChild) && e.pid != uv_pid);
    let child = records[spawn].event.pid;
    let child_exit = at(&|e| e.pid == child && matches!(e.syscall, Syscall::ExitGroup { .. }));
    let release = at(&|e| e.pid == uv_pid && e.step == Some(Step::ReleaseRootLock));
    assert!(
        shared < spawn && spawn < child_exit && child_exit < release,
        "{records:#?}"
    );
    assert_eq!(
        steps_of(records, uv_pid)[..2],
        [Step::OpenLockFile, Step::LockShared],
        "the run's first steps"
    );
}

#[test]
fn a_clean_released_into_a_shared_lock_is_seen_blocked_and_proceeds_when_the_holder_goes() {
    let sb = Sandbox::new(UV);
    sb.fill_cache();
    let mut gate = Gate::new(&sb.cache).unwrap();

    // A: `flock -s .lock cat`, alive until its stdin is closed.
    let mut holder = Command::new("flock");
    holder
        .arg("-s")
        .arg(sb.lock_file())
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut a = gate.spawn(holder, Hold::Steps).unwrap();
    let a_lock = gate
        .run_until(deadline(), |e| {
            e.pid == a.pid && e.step == Some(Step::LockShared)
        })
        .unwrap();
    gate.release(a_lock.id).unwrap();
    assert_eq!(
        gate.wait_return(a_lock.id, deadline()).unwrap(),
        Settled::Returned(0)
    );
    gate.free(a.pid).unwrap();

    // B: `uv cache clean`, every step held.
    let b = gate
        .spawn(sb.uv_cmd(&["cache", "clean"]), Hold::Steps)
        .unwrap()
        .pid;
    let try_lock = gate
        .run_until(deadline(), |e| {
            e.pid == b && e.step == Some(Step::LockExclusive)
        })
        .unwrap();
    assert_eq!(
        try_lock.syscall,
        Syscall::Flock {
            op: cachelock_gate::LockOp::Exclusive,
            nonblocking: true
        },
        "uv tries without waiting first"
    );
    gate.release(try_lock.id).unwrap();
    assert_eq!(
        gate.wait_return(try_lock.id, deadline()).unwrap(),
        Settled::Returned(-(libc::EWOULDBLOCK as i64)),
        "the try fails: A holds the lock shared"
    );
    let wait_lock = gate
        .run_until(deadline(), |e| {
            e.pid == b
                && matches!(
                    e.syscall,
                    Syscall::Flock {
                        nonblocking: false,
                        ..
                    }
                )
                && e.step == Some(Step::LockExclusive)
        })
        .unwrap();
    gate.release(wait_lock.id).unwrap();
    assert_eq!(
        gate.settle(wait_lock.id, deadline()).unwrap(),
        Settled::Blocked
    );
    assert!(
        cachelock_inspect::locks::waiters()
            .iter()
            .any(|w| w.pid == b as u32 && Some(w.inode) == wait_lock.inode),
        "/proc/locks shows the clean waiting on .lock"
    );
    assert!(
        !gate
            .records()
            .iter()
            .any(|r| r.event.pid == b && r.event.step == Some(Step::DeleteEntries)),
        "nothing deleted while blocked"
    );

    // A goes: its lock is released, the clean's flock returns and it deletes.
    drop(a.stdin.take());
    assert_eq!(
        gate.wait_return(wait_lock.id, deadline()).unwrap(),
        Settled::Returned(0)
    );
    // The lock goes with A's descriptors, while A exits; its exit status may be
    // reported after the clean's flock returned.
    assert_eq!(gate.wait_exit(a.pid, deadline()).unwrap(), Exit::Code(0));
    let delete = gate
        .run_until(deadline(), |e| {
            e.pid == b && e.step == Some(Step::DeleteEntries)
        })
        .unwrap();
    assert!(delete.path.as_deref().unwrap().starts_with(&sb.cache));
    gate.release_all_and_wait().unwrap();
    assert_eq!(gate.exit_of(b), Some(Exit::Code(0)));
}

#[test]
fn dropping_the_gate_with_processes_stopped_leaves_none_behind() {
    let sb = Sandbox::new(UV);
    sb.fill_cache();
    let mut gate = Gate::new(&sb.cache).unwrap();
    let run = gate
        .spawn(sb.run("import time; time.sleep(600)"), Hold::Steps)
        .unwrap()
        .pid;
    let spawn = gate
        .run_until(deadline(), |e| {
            e.step == Some(Step::SpawnChild) && e.pid != run
        })
        .unwrap();
    // The run holds the lock shared; its child is stopped before its first instruction.
    let pids = gate.live_pids();
    assert!(pids.contains(&run) && pids.contains(&spawn.pid), "{pids:?}");
    drop(gate);
    for pid in pids {
        assert!(
            gone_or_dead(pid),
            "process {pid} is still alive after the gate was dropped"
        );
    }
}

#[test]
fn uv_0_8_19_releases_the_lock_before_its_child_and_its_clean_unlinks_lock() {
    let sb = Sandbox::new("0.8.19");
    let report = trace(sb.run("pass"), &sb.cache, Box::new(std::io::sink())).unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    let records = &report.records;
    let uv_pid = records[0].event.pid;
    assert_eq!(
        steps_of(records, uv_pid)[..4],
        [
            Step::CreateScaffold,
            Step::OpenLockFile,
            Step::LockShared,
            Step::ReleaseRootLock
        ],
        "0.8.19 writes the scaffold before it locks and drops the lock before spawning"
    );
    let release = records
        .iter()
        .position(|r| r.event.pid == uv_pid && r.event.step == Some(Step::ReleaseRootLock))
        .unwrap();
    let last_spawn = records
        .iter()
        .rposition(|r| r.event.step == Some(Step::SpawnChild))
        .unwrap();
    assert!(
        release < last_spawn,
        "the child is spawned after the lock is released"
    );

    let clean = trace(
        sb.uv_cmd(&["cache", "clean"]),
        &sb.cache,
        Box::new(std::io::sink()),
    )
    .unwrap();
    let steps: Vec<Step> = clean.steps().filter_map(|r| r.event.step).collect();
    assert_eq!(
        steps[steps.len() - 3..],
        [
            Step::ReleaseRootLock,
            Step::UnlinkLockFile,
            Step::RemoveRoot
        ],
        "{steps:?}"
    );
    assert!(!sb.cache.exists());
}
