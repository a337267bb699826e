//! `cachelock trace`: real uv 0.8.19, 0.8.20 and 0.13.9 (`uv run`, `uv cache clean`)
//! and `cachelock run` itself, each traced and checked against the model. The policy
//! the program follows admits its interleaving; a wrong policy rejects it, and the line
//! printed names the first step that policy does not allow. A deliberately broken
//! `cachelock` (one that follows another policy than it is checked against) is rejected
//! at its first divergent step.
//!
//! The uv binaries come from `conformance/scripts/install-uv.sh VERSION` (installed on
//! first use into `.uv-versions/`, or `$CACHELOCK_UV_VERSIONS_DIR`; the machine's
//! `python3`). Fails, never skips, when it cannot install them or cannot trace.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Dirs, cachelock, uv};

fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the real-uv tests");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `cachelock trace --cache-dir <cache> [--policy P] -- PROGRAM ARGS`, with uv's
/// environment pointed at the test's cache, offline.
fn trace(d: &Dirs, policy: Option<&str>, program: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = cachelock(&d.cache());
    cmd.arg("trace").arg("--cache-dir").arg(d.cache());
    if let Some(p) = policy {
        cmd.args(["--policy", p]);
    }
    cmd.arg("--")
        .arg(program)
        .args(args)
        .env("UV_CACHE_DIR", d.cache())
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_NO_CONFIG", "1")
        .env("UV_OFFLINE", "1")
        .env("UV_PYTHON", python())
        .env("TMPDIR", d.tmp())
        .current_dir(d.dir.path())
        .stderr(Stdio::piped());
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("cachelock trace runs");
    let text = format!(
        "{}\n--- stderr:\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code(), text)
}

const UV_RUN: &[&str] = &["run", "--no-project", "python3", "-c", "pass"];
const UV_CLEAN: &[&str] = &["cache", "clean"];

/// Traces `args` of `program` under `right` (admitted, the command's exit code 0) and
/// under `wrong` (exit 1, the first divergent step named as `expected`).
fn admitted_and_rejected(
    d: &Dirs,
    program: &Path,
    args: &[&str],
    right: &str,
    wrong: &str,
    expected: &str,
) {
    let (code, text) = trace(d, Some(right), program, args);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("is a behaviour of {right}\n")),
        "{text}"
    );
    let (code, text) = trace(d, Some(wrong), program, args);
    assert_eq!(code, Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("check: not a behaviour of {wrong} ")))
        .unwrap_or_else(|| panic!("no divergence line for {wrong}:\n{text}"));
    assert!(line.contains(expected), "expected `{expected}` in: {line}");
}

/// A run on an empty cache, then a clean of what it left: each release's own order.
fn uv_release(version: &str, right: &str, wrong_run: (&str, &str), wrong_clean: (&str, &str)) {
    let uv = uv(version);
    let d = Dirs::new();
    let (code, text) = trace(&d, Some(right), &uv, UV_RUN);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("is a behaviour of {right}\n")),
        "{text}"
    );
    // The same run again on a fresh cache, against the wrong policy.
    let d = Dirs::new();
    let (code, text) = trace(&d, Some(wrong_run.0), &uv, UV_RUN);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(wrong_run.1),
        "expected `{}`:\n{text}",
        wrong_run.1
    );
    // A clean of the cache the run left, then the same again.
    let d = Dirs::new();
    let (code, _) = trace(&d, None, &uv, UV_RUN);
    assert_eq!(code, Some(0));
    let (code, text) = trace(&d, Some(right), &uv, UV_CLEAN);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("is a behaviour of {right}\n")),
        "{text}"
    );
    let (code, _) = trace(&d, None, &uv, UV_RUN);
    assert_eq!(code, Some(0));
    let (code, text) = trace(&d, Some(wrong_clean.0), &uv, UV_CLEAN);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(wrong_clean.1),
        "expected `{}`:\n{text}",
        wrong_clean.1
    );
}

#[test]
fn uv_0_8_19_is_a_behaviour_of_uv_0_8_19_it_releases_before_its_child() {
    uv_release(
        "0.8.19",
        "uv-0.8.19",
        (
            "uv-0.8.20",
            "did release-root-lock; the model allows spawn-child next",
        ),
        (
            "uv-0.13",
            "did unlink-lock-file; the model allows nothing more",
        ),
    );
}

#[test]
fn uv_0_8_20_is_a_behaviour_of_uv_0_8_20_it_holds_the_lock_through_its_child() {
    uv_release(
        "0.8.20",
        "uv-0.8.20",
        (
            "uv-0.8.19",
            "did spawn-child; the model allows release-root-lock next",
        ),
        (
            "uv-0.13",
            "did unlink-lock-file; the model allows nothing more",
        ),
    );
}

#[test]
fn uv_0_13_is_a_behaviour_of_uv_0_13_it_locks_before_the_scaffold_and_keeps_lock() {
    uv_release(
        "0.13.9",
        "uv-0.13",
        (
            "uv-0.8.20",
            "did open-lock-file; the model allows create-scaffold next",
        ),
        (
            "uv-0.8.20",
            "did exit; the model allows unlink-lock-file next",
        ),
    );
}

/// `uv run python …` runs the interpreter it found under that file's own name
/// (`python3`, `python3.11`): that process is still the run's child.
#[test]
fn a_run_of_python_is_a_behaviour_whatever_the_interpreters_file_is_called() {
    let d = Dirs::new();
    let (code, text) = trace(
        &d,
        Some("uv-0.13"),
        &uv("0.13.9"),
        &["run", "--no-project", "python", "-c", "pass"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("is a behaviour of uv-0.13\n"), "{text}");
}

#[test]
fn without_a_policy_the_policies_admitting_the_trace_are_named() {
    let d = Dirs::new();
    let (code, text) = trace(&d, None, &uv("0.13.9"), UV_RUN);
    assert_eq!(code, Some(0), "{text}");
    let admitted = text
        .lines()
        .find(|l| l.starts_with("check: the interleaving of run "))
        .unwrap_or_else(|| panic!("no verdict line:\n{text}"));
    assert!(admitted.contains("uv-0.13"), "{admitted}");
    assert!(!admitted.contains("uv-0.8.19"), "{admitted}");
    assert!(
        text.contains("check: not a behaviour of uv-0.8.19: run#1"),
        "{text}"
    );
}

#[test]
fn cachelock_run_and_clean_are_behaviours_of_the_default_policy() {
    let d = Dirs::new();
    let me = Path::new(env!("CARGO_BIN_EXE_cachelock"));
    let cache = d.cache();
    let cache = cache.to_str().unwrap();
    admitted_and_rejected(
        &d,
        me,
        &["run", "--cache-dir", cache, "--", "true"],
        "cachelock",
        "uv-0.13",
        "did lock-env; the model allows",
    );
    admitted_and_rejected(
        &d,
        me,
        &["clean", "--cache-dir", cache],
        "cachelock",
        "uv-0.13",
        "did announce-clean; the model allows open-lock-file next",
    );
}

#[test]
fn a_cachelock_that_locks_its_environment_late_is_rejected_at_its_persist_env() {
    // `--policy cachelock-late-env-lock` builds the environment before it locks it: a
    // broken implementation as far as the default policy's model is concerned.
    let d = Dirs::new();
    let me = Path::new(env!("CARGO_BIN_EXE_cachelock"));
    let cache = d.cache();
    let args = [
        "run",
        "--policy",
        "cachelock-late-env-lock",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--",
        "true",
    ];
    let (code, text) = trace(&d, Some("cachelock"), me, &args);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("check: not a behaviour of cachelock (run): run#1 (pid ",)
            && text.contains(") did persist-env; the model allows lock-env next"),
        "{text}"
    );
}

#[test]
fn the_commands_exit_code_is_passed_through_and_bad_input_exits_2() {
    let d = Dirs::new();
    let (code, text) = trace(&d, None, Path::new("sh"), &["-c", "exit 7"]);
    assert_eq!(code, Some(7), "{text}");
    assert!(text.contains("check: nothing to check"), "{text}");
    let out = cachelock(&d.cache())
        .args(["trace", "--policy", "no-such-policy", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = cachelock(&d.cache()).arg("trace").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = cachelock(&d.cache())
        .args(["trace", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for what in [
        "What it stops at",
        "What it checks",
        "run-script",
        "+crash",
        "Exit codes",
    ] {
        assert!(help.contains(what), "{help}");
    }
}

#[test]
fn where_ptrace_is_refused_trace_exits_2_and_says_so() {
    // A traced process cannot be traced again: `cachelock trace` under itself.
    let d = Dirs::new();
    let me = Path::new(env!("CARGO_BIN_EXE_cachelock"));
    let (code, text) = trace(&d, None, me, &["trace", "--", "true"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("cannot trace processes here") && text.contains("ptrace"),
        "{text}"
    );
}
