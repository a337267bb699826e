//! `cachelock replay`: the model's counterexamples replayed step by step with real
//! processes, on uv 0.8.19, 0.8.20 and 0.13.9 and on cachelock itself, each story step
//! with the real event beside it; a binary that does not follow the policy is caught at
//! the first step it does not take as the story has it; bad input exits 2.
//!
//! The uv releases are installed on first use (`conformance/scripts/install-uv.sh`, PyPI
//! once; `CACHELOCK_UV_VERSIONS_DIR` points at an existing install); the test fails, never
//! skips, when that is impossible.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::uv;

fn cachelock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachelock"))
}

fn replay(policy: &str, scenario: &str, uv: Option<&Path>) -> Output {
    let mut cmd = cachelock();
    cmd.args(["replay", "--policy", policy, "--scenario", scenario]);
    if let Some(uv) = uv {
        cmd.arg("--uv").arg(uv);
    }
    cmd.output().expect("run cachelock replay")
}

/// Replays and checks that every verdict was reproduced; at least `stories`
/// counterexamples step by step, each step with a real event beside it. Returns stdout.
fn reproduced(policy: &str, scenario: &str, uv: Option<&Path>, stories: usize) -> String {
    let out = replay(policy, scenario, uv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "replay of {policy} on `{scenario}` ({uv:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every verdict of the model was reproduced"),
        "{stdout}"
    );
    // The real side is the gate's: stops named with the model's steps.
    assert!(stdout.contains("under the gate"), "{stdout}");
    let driven = stdout
        .matches("its shortest story, played step by step under the gate:")
        .count();
    assert!(
        driven >= stories,
        "{driven} stories played step by step, {stories} wanted:\n{stdout}"
    );
    assert!(!stdout.contains("DIVERGES"), "{stdout}");
    // Every numbered model step has a real line beside it.
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let numbered = t
            .split_once(". ")
            .is_some_and(|(n, rest)| n.parse::<usize>().is_ok() && rest.contains(" -> "));
        if numbered && driven > 0 && !stdout.contains("not driven step by step") {
            let next = lines.get(i + 1).map_or("", |n| n.trim_start());
            assert!(
                next.starts_with("real: "),
                "no real event beside `{t}`:\n{stdout}"
            );
        }
    }
    stdout.into_owned()
}

#[test]
fn uv_0_8_19_reproduces_its_counterexamples() {
    let uv = uv("0.8.19");
    let stdout = reproduced("uv-0.8.19", "run,clean", Some(&uv), 3);
    // The lost environment of `run,clean`: uv releases `.lock` before it spawns (seen in
    // the gate), the clean is granted at once, and the child reports the loss.
    for want in [
        "model: live-env-intact fails; its shortest story, played step by step under the gate:",
        "6. run#1: release-root-lock -> releases the lock on .lock",
        "flock(LOCK_UN) cache/.lock: returned 0",
        "flock(LOCK_EX|LOCK_NB) cache/.lock: granted (returned 0)",
        "real: live-env-intact fails: run#1's child lost its environment",
        "real: clean-succeeds fails: clean#1's remove-root failed ENOTEMPTY",
    ] {
        assert!(stdout.contains(want), "`{want}` missing:\n{stdout}");
    }
    let stdout = reproduced("uv-0.8.19", "clean,run,clean", Some(&uv), 4);
    assert!(
        stdout.contains("real: mutual-exclusion fails: clean#2 deleted"),
        "{stdout}"
    );
}

#[test]
fn uv_0_8_20_reproduces_its_counterexamples() {
    let uv = uv("0.8.20");
    reproduced("uv-0.8.20", "run,clean", Some(&uv), 1);
    let stdout = reproduced("uv-0.8.20", "run-script,clean-force", Some(&uv), 4);
    for want in [
        "busy: goes on without the lock (--force)",
        "flock(LOCK_EX|LOCK_NB) cache/.lock: failed EAGAIN (busy): it goes on without it",
        "real: mutual-exclusion fails: clean-force#1 deleted",
    ] {
        assert!(stdout.contains(want), "`{want}` missing:\n{stdout}");
    }
}

#[test]
fn uv_0_13_reproduces_its_counterexamples() {
    let uv = uv("0.13.9");
    reproduced("uv-0.13", "run,clean", Some(&uv), 1);
    reproduced("uv-0.13", "run,clean,run", Some(&uv), 1);
    // A lock the model makes wait is seen asleep in the kernel's lock wait, and stays
    // there while the server runs.
    let stdout = reproduced("uv-0.13", "run-server,clean+timeout", Some(&uv), 2);
    for want in [
        "clean#1: lock-exclusive -> busy: waits (.lock inode 0)",
        "cache/.lock: blocked (asleep in the kernel's lock wait)",
        "real: clean-succeeds fails: when nothing else could happen in the story, clean#1 is asleep in a lock wait",
    ] {
        assert!(stdout.contains(want), "`{want}` missing:\n{stdout}");
    }
}

/// Replays a story set that must be driven step by step throughout (no story of it is
/// left to the per-property plays) and checks the lines `want`.
fn driven(policy: &str, scenario: &str, uv: Option<&Path>, stories: usize, want: &[&str]) {
    let stdout = reproduced(policy, scenario, uv, stories);
    assert!(!stdout.contains("not driven step by step"), "{stdout}");
    for w in want {
        assert!(
            stdout.contains(w),
            "`{w}` missing ({policy} on `{scenario}`):\n{stdout}"
        );
    }
}

/// The nested clean is a process of the story of its own: the run's child, held at its
/// signal, is let go to start it, and its steps are told apart from its host's.
const NESTED_STARTS: &str =
    ". nested-clean#1: open-lock-file -> opens .lock (inode 0)\n      real: pid ";
/// The daemon's start and end are the probe's: its signal, released, and its exit.
const DAEMON_STARTS: &str = "renames its ready file into place: the daemon runs";

#[test]
fn uv_0_8_19_nested_clean_and_daemon_are_driven_step_by_step() {
    let uv = uv("0.8.19");
    // uv 0.8.19 releases `.lock` before its child runs: the nested clean is granted the
    // cache and deletes its own parent's environment.
    driven(
        "uv-0.8.19",
        "run-nested-clean",
        Some(&uv),
        1,
        &[
            NESTED_STARTS,
            "9. nested-clean#1: lock-exclusive -> acquired exclusive on .lock inode 0",
            "flock(LOCK_EX|LOCK_NB) cache/.lock: granted (returned 0)",
            "real: live-env-intact fails: run-nested-clean#1's child lost its environment",
        ],
    );
    driven(
        "uv-0.8.19",
        "run-daemon,clean",
        Some(&uv),
        3,
        &[
            DAEMON_STARTS,
            "real: live-env-intact fails: run-daemon#1's daemon lost its environment (sys.prefix gone",
            "15. run-daemon#1: daemon-exits -> the daemon exits",
            "checked its environment LOST",
            "real: clean-succeeds fails: clean#1's remove-root failed ENOTEMPTY",
        ],
    );
}

#[test]
fn uv_0_8_20_nested_clean_and_daemon_are_driven_step_by_step() {
    let uv = uv("0.8.20");
    // uv 0.8.20 keeps `.lock` while its child runs: the nested clean waits for its own
    // parent, asleep in the kernel's lock wait, and nothing can move.
    driven(
        "uv-0.8.20",
        "run-nested-clean",
        Some(&uv),
        3,
        &[
            NESTED_STARTS,
            "8. nested-clean#1: lock-exclusive -> busy: waits (.lock inode 0)",
            "cache/.lock: blocked (asleep in the kernel's lock wait)",
            "real: no-deadlock fails: every live process is blocked: run-nested-clean#1 waits for its child",
            "real: clean-terminates fails: when nothing else could happen in the story, nested-clean#1 is asleep in a lock wait",
        ],
    );
    driven(
        "uv-0.8.20",
        "run-daemon,clean",
        Some(&uv),
        2,
        &[
            DAEMON_STARTS,
            "real: live-env-intact fails: run-daemon#1's daemon lost its environment",
        ],
    );
}

#[test]
fn uv_0_13_nested_clean_and_daemon_are_driven_step_by_step() {
    let uv = uv("0.13.9");
    driven(
        "uv-0.13",
        "run-nested-clean+timeout",
        Some(&uv),
        1,
        &[
            NESTED_STARTS,
            "cache/.lock: blocked (asleep in the kernel's lock wait)",
            "real: clean-succeeds fails:",
            "nested-clean#1",
        ],
    );
    driven(
        "uv-0.13",
        "run-nested-clean",
        Some(&uv),
        3,
        &["real: no-deadlock fails: every live process is blocked"],
    );
    driven(
        "uv-0.13",
        "run-daemon,clean",
        Some(&uv),
        2,
        &[
            DAEMON_STARTS,
            "real: live-env-intact fails: run-daemon#1's daemon lost its environment",
        ],
    );
}

#[test]
fn cachelock_drives_nested_cleans_and_daemons() {
    driven("uv-0.8.19", "run-nested-clean", None, 1, &[NESTED_STARTS]);
    driven("uv-0.8.20", "run-nested-clean", None, 3, &[NESTED_STARTS]);
    driven("uv-0.13", "run-daemon,clean", None, 2, &[DAEMON_STARTS]);
}

#[test]
fn nested_clean_and_daemon_stories_diverge_at_the_step_a_binary_does_not_take() {
    // uv 0.13.9 keeps `.lock` while its child runs: the uv-0.8.19 stories, in which the
    // run lets it go before its child (then the nested clean, or the daemon) starts,
    // are caught at that step.
    let new = uv("0.13.9");
    for (scenario, run) in [
        ("run-nested-clean", "run-nested-clean#1"),
        ("run-daemon,clean", "run-daemon#1"),
    ] {
        let out = replay("uv-0.8.19", scenario, Some(&new));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let want = format!(
            "divergence: step 6: {run} release-root-lock: model releases the lock on .lock, real pid"
        );
        assert!(stdout.contains(&want), "`{want}` missing:\n{stdout}");
        assert!(stdout.contains("still holds its lock on .lock"), "{stdout}");
    }
    // uv 0.8.19 lets `.lock` go before its child runs: the uv-0.8.20 story, in which the
    // nested clean waits for its parent's lock, is caught where 0.8.19 unlocks.
    let out = replay("uv-0.8.20", "run-nested-clean", Some(&uv("0.8.19")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "divergence: step 6: run-nested-clean#1 spawn-child: model the child runs, real pid"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("flock(LOCK_UN) cache/.lock (release-root-lock)"),
        "{stdout}"
    );
}

#[test]
fn cachelock_reproduces_its_policies() {
    for (policy, sc, stories) in [
        ("cachelock", "run,clean", 0),
        ("cachelock", "clean,run,clean", 0),
        ("uv-0.8.19", "run,clean", 3),
        ("uv-0.13", "run,clean,run", 1),
    ] {
        reproduced(policy, sc, None, stories);
    }
}

#[test]
fn a_binary_that_keeps_the_property_diverges() {
    // uv 0.13.9 keeps a running child's environment; the uv-0.8.19 model loses it.
    let out = replay("uv-0.8.19", "run,clean", Some(&uv("0.13.9")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // Caught at the step: uv 0.13.9 keeps `.lock` while its child runs.
    assert!(
        stdout.contains(
            "divergence: step 6: run#1 release-root-lock: model releases the lock on .lock, real pid"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("still holds its lock on .lock"), "{stdout}");
}

#[test]
fn bad_input_exits_2() {
    for (scenario, uv) in [
        ("run,frobnicate", None),
        ("run,run,clean", None),
        ("run,clean", Some(Path::new("/bin/true"))),
    ] {
        let out = replay("uv-0.13", scenario, uv);
        assert_eq!(
            out.status.code(),
            Some(2),
            "`{scenario}` {uv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = cachelock().args(["replay", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Exit codes: 0 when every verdict"), "{text}");
}
