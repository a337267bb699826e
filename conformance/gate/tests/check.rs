//! Real interleavings checked against the model: a behaviour of the policy the uv
//! release follows passes; checked against another policy, the first step that policy
//! does not allow is reported.

mod common;

use std::process::{Command, Stdio};

use cachelock_gate::check::check;
use cachelock_gate::{Gate, Hold, Settled, Syscall, trace};
use cachelock_model::protocol::{Policy, Step};
use common::{Sandbox, deadline};

#[test]
fn a_uv_0_13_run_is_a_behaviour_of_uv_0_13_and_not_of_uv_0_8_19() {
    let sb = Sandbox::new("0.13.9");
    let t = trace(sb.run("pass"), &sb.cache, Box::new(std::io::sink())).unwrap();
    let ok = check(Policy::Uv013, &t.records, &t.timeline, &t.processes).unwrap();
    assert_eq!(ok.scenario, "run");
    assert_eq!(ok.verdict, Ok(()), "{t:#?}");
    let bad = check(Policy::Uv0819, &t.records, &t.timeline, &t.processes).unwrap();
    let d = bad.verdict.unwrap_err();
    // 0.8.19 writes the scaffold before it opens `.lock`; 0.13 after it locks.
    assert_eq!(d.real, "open-lock-file", "{d}");
    assert!(d.model.starts_with("create-scaffold"), "{d}");
}

#[test]
fn a_uv_0_8_19_run_is_not_a_behaviour_of_uv_0_13() {
    let sb = Sandbox::new("0.8.19");
    let t = trace(sb.run("pass"), &sb.cache, Box::new(std::io::sink())).unwrap();
    assert_eq!(
        check(Policy::Uv0819, &t.records, &t.timeline, &t.processes)
            .unwrap()
            .verdict,
        Ok(())
    );
    let d = check(Policy::Uv013, &t.records, &t.timeline, &t.processes)
        .unwrap()
        .verdict
        .unwrap_err();
    assert_eq!(
        d.real, "create-scaffold",
        "0.13 locks before it writes the scaffold: {d}"
    );
}

/// A holds `.lock` shared (`flock -s .lock cat`), a clean is released into it, seen
/// blocked, and let go by A's exit; the recorded interleaving is returned.
fn forced_clean_behind_a_reader(
    sb: &Sandbox,
) -> (
    Vec<cachelock_gate::Record>,
    Vec<cachelock_gate::Moment>,
    Vec<cachelock_gate::Process>,
) {
    let mut gate = Gate::new(&sb.cache).unwrap();
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
    // A's child (cat) is running before the clean starts.
    let cat = gate
        .run_until(deadline(), |e| e.step == Some(Step::SpawnChild))
        .unwrap();
    gate.release(cat.id).unwrap();
    gate.free(a.pid).unwrap();
    let b = gate
        .spawn(sb.uv_cmd(&["cache", "clean"]), Hold::Steps)
        .unwrap()
        .pid;
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
        })
        .unwrap();
    gate.release(wait_lock.id).unwrap();
    assert_eq!(
        gate.settle(wait_lock.id, deadline()).unwrap(),
        Settled::Blocked
    );
    drop(a.stdin.take());
    gate.release_all_and_wait().unwrap();
    (
        gate.records().to_vec(),
        gate.timeline().to_vec(),
        gate.processes(),
    )
}

#[test]
fn a_clean_forced_to_wait_for_a_reader_is_a_behaviour_of_uv_0_13_not_of_autoprune() {
    let sb = Sandbox::new("0.13.9");
    sb.fill_cache();
    let (records, timeline, processes) = forced_clean_behind_a_reader(&sb);
    let ok = check(Policy::Uv013, &records, &timeline, &processes).unwrap();
    assert_eq!(ok.scenario, "run,clean");
    assert_eq!(ok.verdict, Ok(()));
    // Under uv-autoprune a clean gives up when the lock is busy: it never waits.
    let d = check(Policy::UvAutoprune, &records, &timeline, &processes)
        .unwrap()
        .verdict
        .unwrap_err();
    assert_eq!(d.label, "clean#1", "{d}");
    assert!(d.model.contains("finished"), "{d}");
}

#[test]
fn concurrent_runs_and_a_clean_traced_from_a_shell_are_a_behaviour_of_uv_0_13() {
    let sb = Sandbox::new("0.13.9");
    sb.fill_cache();
    let run = sb.run("pass");
    let uv = sb.uv.display().to_string();
    let script = format!(
        "{uv} run --no-project python3 -c pass & {uv} run --no-project python3 -c pass & {uv} cache clean -q; wait"
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    for (k, v) in run.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh.stdout(Stdio::null()).stderr(Stdio::null());
    let t = trace(sh, &sb.cache, Box::new(std::io::sink())).unwrap();
    let c = check(Policy::Uv013, &t.records, &t.timeline, &t.processes).unwrap();
    assert_eq!(c.pids.len(), 3, "{}", c.scenario);
    assert_eq!(c.verdict, Ok(()), "{}", c.scenario);
}
