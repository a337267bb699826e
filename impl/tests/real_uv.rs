//! cachelock and a real uv on one cache directory exclude each other.
//!
//! Needs a uv from PyPI: `CACHELOCK_UV=/path/to/uv`, or uv 0.13.9, which the first test
//! that needs it installs (`conformance/scripts/install-uv.sh 0.13.9`: into
//! `.uv-versions/`, or `$CACHELOCK_UV_VERSIONS_DIR`; once, serialised by the script's
//! lock, with the machine's `python3`). Fails, never skips, when it cannot.
//! Everything else is offline: a private UV_CACHE_DIR, no Python downloads, no config.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::{Dirs, Proc, blocked_in_flock, eventually};

/// The uv release these tests install when `CACHELOCK_UV` does not name one.
const UV_VERSION: &str = "0.13.9";

fn uv() -> PathBuf {
    static UV: OnceLock<PathBuf> = OnceLock::new();
    UV.get_or_init(|| {
        if let Some(uv) = std::env::var_os("CACHELOCK_UV") {
            return PathBuf::from(uv);
        }
        common::uv(UV_VERSION)
    })
    .clone()
}

fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the real-uv tests");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `uv ARGS` on the test's cache, offline, stderr into `<name>.err`.
fn uv_cmd(d: &Dirs, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(uv());
    cmd.args(args)
        .env("UV_CACHE_DIR", d.cache())
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_NO_CONFIG", "1")
        .env("UV_OFFLINE", "1")
        .env("UV_PYTHON", python())
        .env("UV_LOCK_TIMEOUT", "20")
        .env("TMPDIR", d.tmp())
        .current_dir(d.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(d.file(&format!("{name}.out"))).expect("stdout file"))
        .stderr(std::fs::File::create(d.file(&format!("{name}.err"))).expect("stderr file"));
    cmd
}

/// A `uv run` whose Python child signals `ready` and waits for `go`.
fn blocking_uv_run(d: &Dirs) -> Proc {
    let code = format!(
        "import os, time\nopen({:?}, 'w').close()\nfor _ in range(1500):\n    if os.path.exists({:?}): break\n    time.sleep(0.02)\n",
        d.file("ready").display().to_string(),
        d.file("go").display().to_string(),
    );
    let run = Proc::spawn(uv_cmd(
        d,
        "uv-run",
        &["run", "--no-project", "python3", "-c", &code],
    ));
    eventually("uv run's child is ready", || d.file("ready").exists());
    run
}

#[test]
fn hold_exclusive_waits_while_uv_run_holds_the_uv_cache() {
    let d = Dirs::new();
    let mut run = blocking_uv_run(&d);
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    let mut hold = Proc::spawn(d.cmd(
        "hold",
        &[
            "hold",
            "--exclusive",
            "--cache-dir",
            cache,
            "--",
            "sh",
            "-c",
            &d.touch("held"),
        ],
    ));
    eventually("hold says it waits", || {
        d.stderr("hold").contains("waiting")
    });
    assert!(
        d.stderr("hold")
            .contains(&format!("1 process (pid {})", run.pid())),
        "names uv as the holder: {}",
        d.stderr("hold")
    );
    assert!(hold.running() && !d.file("held").exists());
    d.set("go");
    assert_eq!(run.exit_code(), 0, "{}", d.stderr("uv-run"));
    assert_eq!(hold.exit_code(), 0, "{}", d.stderr("hold"));
    assert!(d.file("held").exists());
}

#[test]
fn uv_cache_clean_waits_while_cachelock_hold_shared_holds_it() {
    let d = Dirs::new();
    assert_eq!(
        Proc::spawn(uv_cmd(
            &d,
            "init",
            &["run", "--no-project", "python3", "-c", "pass"]
        ))
        .exit_code(),
        0,
        "{}",
        d.stderr("init")
    );
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    let script = format!("{}; {}", d.touch("ready"), d.await_flag("go"));
    let mut hold = Proc::spawn(d.cmd(
        "hold",
        &[
            "hold",
            "--shared",
            "--cache-dir",
            cache,
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    eventually("hold ready", || d.file("ready").exists());
    let mut clean = Proc::spawn(uv_cmd(&d, "clean", &["cache", "clean", "-v"]));
    eventually("uv cache clean waits", || {
        d.stderr("clean")
            .contains("Waiting to acquire exclusive lock")
    });
    assert!(clean.running() && d.cache().join("CACHEDIR.TAG").exists());
    d.set("go");
    assert_eq!(hold.exit_code(), 0, "{}", d.stderr("hold"));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(
        !d.cache().join("CACHEDIR.TAG").exists(),
        "uv cleaned after the hold ended"
    );
}

#[test]
fn status_shows_the_uv_process_with_its_command_line() {
    let d = Dirs::new();
    let run = blocking_uv_run(&d);
    let cache = d.cache();
    let cache = cache.to_str().expect("utf-8 path");
    assert_eq!(
        Proc::spawn(d.cmd("status", &["status", "--cache-dir", cache])).exit_code(),
        0
    );
    let out = d.stdout("status");
    assert!(
        out.contains(&format!("pid {} holds shared lock on .lock", run.pid()))
            && out.contains("run --no-project python3 -c"),
        "{out}"
    );
    d.set("go");
}

/// `cachelock ARGS` as a uv user runs it: the cache only from `UV_CACHE_DIR`.
fn cachelock_on_uv_cache(d: &Dirs, name: &str, args: &[&str]) -> Command {
    let mut cmd = d.cmd(name, args);
    cmd.env_remove("CACHELOCK_CACHE_DIR")
        .env("UV_CACHE_DIR", d.cache());
    cmd
}

/// A `uv run` whose Python child writes its pid to `ready` and waits for `go`; returns
/// the run and the child's pid.
fn blocking_uv_run_with_child(d: &Dirs) -> (Proc, u32) {
    let code = format!(
        "import os, time\nopen({ready:?} + '.tmp', 'w').write(str(os.getpid()))\nos.rename({ready:?} + '.tmp', {ready:?})\nfor _ in range(1500):\n    if os.path.exists({go:?}): break\n    time.sleep(0.02)\n",
        ready = d.file("ready").display().to_string(),
        go = d.file("go").display().to_string(),
    );
    let run = Proc::spawn(uv_cmd(
        d,
        "uv-run",
        &["run", "--no-project", "python3", "-c", &code],
    ));
    eventually("uv run's child is ready", || d.file("ready").exists());
    let child: u32 = std::fs::read_to_string(d.file("ready"))
        .expect("the child's pid")
        .trim()
        .parse()
        .expect("a pid");
    (run, child)
}

#[test]
fn status_from_uv_cache_dir_names_a_running_uv_run_and_its_python_child() {
    let d = Dirs::new();
    let (run, child) = blocking_uv_run_with_child(&d);
    assert_eq!(
        Proc::spawn(cachelock_on_uv_cache(&d, "status", &["status"])).exit_code(),
        0,
        "{}",
        d.stderr("status")
    );
    let out = d.stdout("status");
    assert!(
        out.contains(&format!(
            "cache: {} (from UV_CACHE_DIR)",
            d.cache().display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("pid {} holds shared lock on .lock", run.pid()))
            && out.contains("run --no-project python3 -c 'import os, time"),
        "{out}"
    );
    assert!(
        out.contains(&format!("└ pid {child} ")) && out.contains(": python3 -c 'import os"),
        "the python3 child that keeps uv holding: {out}"
    );
    d.set("go");
}

#[test]
fn hold_shared_from_uv_cache_dir_keeps_a_real_uv_cache_clean_out() {
    let d = Dirs::new();
    assert_eq!(
        Proc::spawn(uv_cmd(
            &d,
            "init",
            &["run", "--no-project", "python3", "-c", "pass"]
        ))
        .exit_code(),
        0,
        "{}",
        d.stderr("init")
    );
    let before = common::snapshot(&d.cache());
    let script = format!("{}; {}", d.touch("ready"), d.await_flag("go"));
    let mut hold = Proc::spawn(cachelock_on_uv_cache(
        &d,
        "hold",
        &["hold", "--shared", "--", "sh", "-c", &script],
    ));
    eventually("hold ready", || d.file("ready").exists());
    let mut clean = uv_cmd(&d, "clean", &["cache", "clean"]);
    clean.env("UV_LOCK_TIMEOUT", "1");
    assert_eq!(
        Proc::spawn(clean).exit_code(),
        2,
        "uv's clean gives up: {}",
        d.stderr("clean")
    );
    assert_eq!(
        common::snapshot(&d.cache()),
        before,
        "the cache is untouched"
    );
    d.set("go");
    assert_eq!(hold.exit_code(), 0, "{}", d.stderr("hold"));
}

#[test]
fn status_links_a_waiting_cachelock_clean_and_a_waiting_uv_clean_to_the_uv_run() {
    let d = Dirs::new();
    let (mut run, child) = blocking_uv_run_with_child(&d);
    let mut cl_clean = Proc::spawn(cachelock_on_uv_cache(
        &d,
        "cl-clean",
        &["clean", "--policy", "uv-0.13"],
    ));
    let mut uv_clean = Proc::spawn(uv_cmd(&d, "uv-clean", &["cache", "clean"]));
    eventually("both cleans block in flock(2)", || {
        blocked_in_flock(cl_clean.pid()) && blocked_in_flock(uv_clean.pid())
    });
    assert_eq!(
        Proc::spawn(cachelock_on_uv_cache(&d, "status", &["status"])).exit_code(),
        0
    );
    let out = d.stdout("status");
    let r = run.pid();
    for waiter in [cl_clean.pid(), uv_clean.pid()] {
        assert!(
            out.contains(&format!("pid {waiter} waits for exclusive lock on .lock"))
                && out.contains(&format!("remedy: pid {waiter} (")),
            "{out}"
        );
    }
    assert_eq!(
        out.matches(&format!("    blocked by pid {r}\n")).count(),
        2,
        "{out}"
    );
    assert!(
        out.contains(&format!("stop pid {child} (python3 -c")),
        "the remedy names the python3 child: {out}"
    );
    assert!(out.contains("cachelock's policy"), "{out}");

    assert_eq!(
        Proc::spawn(cachelock_on_uv_cache(&d, "json", &["status", "--json"])).exit_code(),
        0
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.stdout("json")).expect("status --json is JSON");
    let locks = v["locks"].as_array().expect("locks");
    for waiter in [cl_clean.pid(), uv_clean.pid()] {
        let w = locks
            .iter()
            .find(|l| l["pid"] == waiter)
            .expect("the waiter is listed");
        assert_eq!(w["waiting"], true);
        assert_eq!(w["waits_for"], serde_json::json!([r]));
    }
    let holder = locks.iter().find(|l| l["pid"] == r).expect("uv run");
    assert!(
        holder["children"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["pid"] == child)),
        "{holder}"
    );
    d.set("go");
    assert_eq!(run.exit_code(), 0, "{}", d.stderr("uv-run"));
    assert_eq!(cl_clean.exit_code(), 0, "{}", d.stderr("cl-clean"));
    assert_eq!(uv_clean.exit_code(), 0, "{}", d.stderr("uv-clean"));
}
