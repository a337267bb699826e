//! The default policy beside real old uv releases on one cache: what an upgrade meets.
//!
//! - A `cachelock run` under the default policy holds `.lock` shared while its child
//!   runs (and the child inherits it): a real `uv cache clean` (0.8.20, 0.13.9) or
//!   `uv cache prune` (0.13.9) started meanwhile waits, seen blocked in flock(2) in
//!   `/proc/locks`, and the child keeps its environment; under `--policy cachelock` the
//!   same uv command does not wait and deletes it (the bug the default fixes).
//! - A real `uv run --with` (0.13.9) holds `.lock` shared while its child runs: a
//!   `cachelock clean` under the default policy does not wait for it, deletes only
//!   cachelock's own unlocked environments, and uv's child keeps its environment.
//! - The same with `cachelock clean --force` beside a real `uv tool run` and `uv run
//!   --with` (the model's `tool-run@uv-0.13,clean-force`): under the default the forced
//!   clean deletes what a busy clean deletes, and uv's child keeps its environment; under
//!   the rejected `fenced-force-unlocked` (the default's forced clean as it was) and under
//!   `--policy cachelock` it deletes uv's layout and the child loses its environment.
//!
//! Why the plain-clean test beside `uv run` cannot fail on the old default
//! (`--policy cachelock`), from the model: in `run@uv-0.13,clean` and
//! `run@uv-0.8.20,clean` the cachelock policy keeps `live-env-intact` and
//! `mutual-exclusion` (`cachelock check --policy cachelock --scenario
//! run@uv-0.13,clean`): its clean finds `.lock` busy and *waits* for it
//! (`Design::clean_on_busy` is `Wait`), and uv holds `.lock` until its child exits, so the
//! clean deletes nothing while the child runs. What it breaks there is only the witness
//! `clean-overlaps-child` (it never cleans beside a running uv), and beside an old server
//! `clean-terminates`/`clean-succeeds` (`run-server@uv-0.13,run-script@uv-0.13,clean`):
//! the cost the default removes, shown by `the_cachelock_policy_clean_waits_for_a_real_uv_run`.
//! The old default's real failure beside a running uv is its `clean --force`
//! (`tool-run@uv-0.13,clean-force`, declared failing for `cachelock`), tested below. An old
//! run that holds nothing while its child runs (uv 0.8.19 releases `.lock` before
//! spawning) loses its environment to any clean, its own release's too: the model counts
//! that as 0.8.19's bug, and no policy of ours can protect a run that takes no lock.
//!
//! Children are held by a pipe on their stdin: they signal that they run with a flag
//! file and go on when the test writes a line. Needs the uv releases
//! (`conformance/scripts/install-uv.sh VERSION`: into `.uv-versions/`, or
//! `$CACHELOCK_UV_VERSIONS_DIR`); fails, never skips, when they cannot be installed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};

use common::{Dirs, Proc, blocked_in_flock, eventually, uv};

/// The offline probe wheel the install script builds next to the uv releases.
fn probe_wheel(uv: &Path) -> PathBuf {
    // <versions>/<version>/bin/uv -> <versions>/wheels/
    let versions = uv
        .ancestors()
        .nth(3)
        .expect("the uv releases live in <versions>/<version>/bin/uv");
    let wheel = versions.join("wheels/clprobe-0.1.0-py3-none-any.whl");
    assert!(wheel.is_file(), "{} is missing", wheel.display());
    wheel
}

fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the real-uv tests");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// uv `version` with `args` on the test's cache, offline, output into `<name>.out/.err`.
fn uv_cmd(d: &Dirs, version: &str, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(uv(version));
    cmd.args(args)
        .env("UV_CACHE_DIR", d.cache())
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_NO_CONFIG", "1")
        .env("UV_OFFLINE", "1")
        .env("UV_PYTHON", python())
        .env("UV_LOCK_TIMEOUT", "20")
        .env("TMPDIR", d.tmp())
        .current_dir(d.dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(d.file(&format!("{name}.out"))).expect("stdout file"))
        .stderr(std::fs::File::create(d.file(&format!("{name}.err"))).expect("stderr file"));
    cmd
}

/// A `cachelock run` (with `policy_args`) whose child touches `ready`, reads a line from
/// its stdin, then exits 0 only if its environment is still there. Returns the run and
/// the pipe that lets the child go on.
fn held_cachelock_run(d: &Dirs, policy_args: &[&str]) -> (Proc, ChildStdin) {
    let script = format!(
        "{}; read line; test -e \"$CACHELOCK_ENV/cachelock-env\"",
        d.touch("ready")
    );
    let mut args = vec!["run"];
    args.extend_from_slice(policy_args);
    args.extend(["--", "sh", "-c", &script]);
    let mut cmd = d.cmd("run", &args);
    cmd.stdin(Stdio::piped());
    let mut run = Proc::spawn(cmd);
    let stdin = run.child.stdin.take().expect("the child's stdin");
    eventually("the run's child is ready", || d.file("ready").exists());
    (run, stdin)
}

fn env_of_run(d: &Dirs) -> PathBuf {
    d.cache().join("environments/with/cachelock-env")
}

/// Lets a held child go on.
fn release(mut stdin: ChildStdin) {
    stdin.write_all(b"go\n").expect("write to the child");
    drop(stdin);
}

/// An old uv command started while the default policy's child runs waits for it, and
/// the child keeps its environment.
fn old_command_waits_for_the_default_run(version: &str, args: &[&str]) {
    let d = Dirs::new();
    let (mut run, stdin) = held_cachelock_run(&d, &[]);
    assert!(env_of_run(&d).exists());
    let mut old = Proc::spawn(uv_cmd(&d, version, "uv", args));
    eventually("uv waits in flock or exits", || {
        blocked_in_flock(old.pid()) || !old.running()
    });
    assert!(
        old.running(),
        "uv {version} {args:?} did not wait: {}",
        d.stderr("uv")
    );
    assert!(env_of_run(&d).exists(), "deleted while the child runs");
    release(stdin);
    assert_eq!(
        run.exit_code(),
        0,
        "the child lost its environment: {}",
        d.stderr("run")
    );
    assert_eq!(old.exit_code(), 0, "{}", d.stderr("uv"));
}

#[test]
fn uv_0_8_20_cache_clean_waits_for_the_default_run_child() {
    old_command_waits_for_the_default_run("0.8.20", &["cache", "clean"]);
}

#[test]
fn uv_0_13_9_cache_clean_waits_for_the_default_run_child() {
    old_command_waits_for_the_default_run("0.13.9", &["cache", "clean"]);
}

#[test]
fn uv_0_13_9_cache_prune_waits_for_the_default_run_child() {
    old_command_waits_for_the_default_run("0.13.9", &["cache", "prune"]);
}

/// Under `--policy cachelock` the run releases `.lock` before spawning: the old clean
/// does not wait and deletes the running child's environment.
fn old_clean_deletes_the_cachelock_policy_child_env(version: &str) {
    let d = Dirs::new();
    let (mut run, stdin) = held_cachelock_run(&d, &["--policy", "cachelock"]);
    assert!(env_of_run(&d).exists());
    let mut old = Proc::spawn(uv_cmd(&d, version, "uv", &["cache", "clean"]));
    assert_eq!(old.exit_code(), 0, "{}", d.stderr("uv"));
    assert!(!env_of_run(&d).exists(), "uv {version} kept it this time");
    release(stdin);
    assert_eq!(run.exit_code(), 1, "the child finds its environment gone");
}

#[test]
fn uv_0_8_20_cache_clean_deletes_a_cachelock_policy_child_env() {
    old_clean_deletes_the_cachelock_policy_child_env("0.8.20");
}

#[test]
fn uv_0_13_9_cache_clean_deletes_a_cachelock_policy_child_env() {
    old_clean_deletes_the_cachelock_policy_child_env("0.13.9");
}

/// A real `uv run --with` (0.13.9) whose child touches `ready`, reads a line, then
/// imports the probe from its environment.
fn held_uv_run(d: &Dirs) -> (Proc, ChildStdin) {
    let wheel = probe_wheel(&uv("0.13.9"));
    let code = format!(
        "import sys\nopen({:?}, 'w').close()\nsys.stdin.readline()\nimport clprobe\n",
        d.file("ready").display().to_string()
    );
    let wheel = wheel.to_str().expect("utf-8 path").to_string();
    let mut cmd = uv_cmd(
        d,
        "0.13.9",
        "uv-run",
        &[
            "run",
            "--no-project",
            "--with",
            &wheel,
            "python3",
            "-c",
            &code,
        ],
    );
    cmd.stdin(Stdio::piped());
    let mut run = Proc::spawn(cmd);
    let stdin = run.child.stdin.take().expect("the child's stdin");
    eventually("uv run's child is ready", || {
        d.file("ready").exists() || !run.running()
    });
    assert!(run.running(), "uv run ended: {}", d.stderr("uv-run"));
    (run, stdin)
}

#[test]
fn the_default_clean_keeps_a_real_uv_run_child_env_without_waiting() {
    let d = Dirs::new();
    let (mut run, stdin) = held_uv_run(&d);
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    // A cachelock environment nobody uses, which the clean may delete.
    assert_eq!(
        Proc::spawn(d.cmd("warm", &["run", "--env", "warm", "--", "true"])).exit_code(),
        0,
        "{}",
        d.stderr("warm")
    );
    let mut clean = Proc::spawn(d.cmd("clean", &["clean", "--cache-dir", cache]));
    // It does not wait for uv's .lock: it ends while uv's child still runs.
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(run.running(), "uv's child is still held");
    assert!(
        !d.cache().join("environments/warm").exists(),
        "cachelock's unused environment is cleaned"
    );
    release(stdin);
    assert_eq!(
        run.exit_code(),
        0,
        "uv's child lost its environment: {}",
        d.stderr("uv-run")
    );
}

#[test]
fn the_cachelock_policy_clean_waits_for_a_real_uv_run() {
    // Today's policy is safe for uv's child too, but it waits for uv's .lock while the
    // child runs (for ever beside a server); the default does not.
    let d = Dirs::new();
    let (mut run, stdin) = held_uv_run(&d);
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    let mut clean = Proc::spawn(d.cmd(
        "clean",
        &["clean", "--policy", "cachelock", "--cache-dir", cache],
    ));
    eventually("the clean waits in flock", || {
        blocked_in_flock(clean.pid()) || !clean.running()
    });
    assert!(clean.running(), "{}", d.stderr("clean"));
    release(stdin);
    assert_eq!(run.exit_code(), 0, "{}", d.stderr("uv-run"));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
}

/// A real `uv tool run` (0.13.9) of the probe, from the offline wheel: its child writes
/// `ready` once it runs, waits for the flag `go`, then imports the rest of the probe
/// from its environment, writes what it saw to `report` and exits 0 only if its
/// environment was whole (3 if not).
fn held_uv_tool_run(d: &Dirs) -> Proc {
    let wheels = probe_wheel(&uv("0.13.9"))
        .parent()
        .expect("the wheel's directory")
        .to_str()
        .expect("utf-8 path")
        .to_string();
    let mut cmd = uv_cmd(
        d,
        "0.13.9",
        "uv-tool-run",
        &[
            "tool",
            "run",
            "--no-index",
            "--find-links",
            &wheels,
            "--from",
            "clprobe",
            "clprobe",
        ],
    );
    cmd.env("CLPROBE_READY", d.file("ready"))
        .env("CLPROBE_GO", d.file("go"))
        .env("CLPROBE_REPORT", d.file("report"));
    let mut run = Proc::spawn(cmd);
    eventually("uv tool run's child is ready", || {
        d.file("ready").exists() || !run.running()
    });
    assert!(
        run.running(),
        "uv tool run ended: {}",
        d.stderr("uv-tool-run")
    );
    run
}

/// What a `cachelock clean --force` (with `policy_args`) started while a real
/// `uv tool run` child runs did: the clean's exit code, whether uv's cached environments
/// (`archive-v0`) were still there after it, and the child's exit code and report.
struct ForcedBesideUv {
    clean: i32,
    uv_running_after_clean: bool,
    archive_after_clean: bool,
    child: i32,
    report: String,
}

fn forced_clean_beside_a_real_uv_tool_run(policy_args: &[&str]) -> ForcedBesideUv {
    let d = Dirs::new();
    let mut run = held_uv_tool_run(&d);
    let archive = d.cache().join("archive-v0");
    assert!(archive.is_dir(), "uv's environment is in archive-v0");
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    let mut args = vec!["clean", "--force", "--cache-dir", cache];
    args.extend_from_slice(policy_args);
    // The clean runs to its end while uv's child waits for `go`.
    let clean = Proc::spawn(d.cmd("clean", &args)).exit_code();
    let uv_running_after_clean = run.running();
    let archive_after_clean = archive.is_dir();
    d.set("go");
    let child = run.exit_code();
    ForcedBesideUv {
        clean,
        uv_running_after_clean,
        archive_after_clean,
        child,
        report: std::fs::read_to_string(d.file("report")).unwrap_or_default()
            + &d.stderr("clean")
            + &d.stderr("uv-tool-run"),
    }
}

/// The model's `tool-run@uv-0.13,clean-force` under the default: its clean --force does
/// not wait for uv's `.lock` and deletes only cachelock's unlocked environments, so
/// uv's child keeps its environment (live-env-intact, mutual-exclusion hold).
#[test]
fn the_default_clean_force_keeps_a_real_uv_tool_run_child_env() {
    let r = forced_clean_beside_a_real_uv_tool_run(&[]);
    assert_eq!(r.clean, 0, "{}", r.report);
    assert!(r.uv_running_after_clean, "the clean did not wait for uv");
    assert!(r.archive_after_clean, "uv's environment was deleted");
    assert_eq!(r.child, 0, "uv's child lost its environment: {}", r.report);
    assert!(r.report.contains("\"ok\": true"), "{}", r.report);
}

/// The same play under the rejected `fenced-force-unlocked` (the default's forced clean
/// before it followed the model): it deletes uv's layout beside the running child, and
/// the child finds its environment gone. This is what makes the test above able to fail.
#[test]
fn the_fenced_force_unlocked_clean_force_deletes_a_real_uv_tool_run_child_env() {
    let r = forced_clean_beside_a_real_uv_tool_run(&["--policy", "fenced-force-unlocked"]);
    assert_eq!(r.clean, 0, "{}", r.report);
    assert!(r.uv_running_after_clean, "the clean did not wait for uv");
    assert!(
        !r.archive_after_clean,
        "uv's environment was kept: {}",
        r.report
    );
    assert_eq!(
        r.child, 3,
        "the child finds its environment gone: {}",
        r.report
    );
    assert!(r.report.contains("\"ok\": false"), "{}", r.report);
}

/// `--policy cachelock` (the default before cachelock-fenced) has the same forced
/// clean: `tool-run@uv-0.13,clean-force` fails live-env-intact under it in the model,
/// and here for real.
#[test]
fn the_cachelock_policy_clean_force_deletes_a_real_uv_tool_run_child_env() {
    let r = forced_clean_beside_a_real_uv_tool_run(&["--policy", "cachelock"]);
    assert_eq!(r.clean, 0, "{}", r.report);
    assert!(
        !r.archive_after_clean,
        "uv's environment was kept: {}",
        r.report
    );
    assert_eq!(
        r.child, 3,
        "the child finds its environment gone: {}",
        r.report
    );
}

/// The same with a real `uv run --with` (0.13.9): the default's clean --force keeps uv's
/// child's environment, the rejected policy's deletes it (the child's late import fails).
fn forced_clean_beside_a_real_uv_run(policy_args: &[&str]) -> (i32, bool, i32, String) {
    let d = Dirs::new();
    let (mut run, stdin) = held_uv_run(&d);
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    let mut args = vec!["clean", "--force", "--cache-dir", cache];
    args.extend_from_slice(policy_args);
    let clean = Proc::spawn(d.cmd("clean", &args)).exit_code();
    let running = run.running();
    release(stdin);
    let child = run.exit_code();
    (
        clean,
        running,
        child,
        d.stderr("clean") + &d.stderr("uv-run"),
    )
}

#[test]
fn the_default_clean_force_keeps_a_real_uv_run_with_child_env() {
    let (clean, running, child, log) = forced_clean_beside_a_real_uv_run(&[]);
    assert_eq!(clean, 0, "{log}");
    assert!(running, "the clean did not wait for uv");
    assert_eq!(child, 0, "uv's child lost its environment: {log}");
}

#[test]
fn the_fenced_force_unlocked_clean_force_deletes_a_real_uv_run_with_child_env() {
    let (clean, running, child, log) =
        forced_clean_beside_a_real_uv_run(&["--policy", "fenced-force-unlocked"]);
    assert_eq!(clean, 0, "{log}");
    assert!(running, "the clean did not wait for uv");
    assert_ne!(child, 0, "uv's child kept its environment: {log}");
    assert!(log.contains("ModuleNotFoundError"), "{log}");
}
