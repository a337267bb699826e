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
