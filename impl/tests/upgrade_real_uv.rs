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
