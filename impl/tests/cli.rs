//! The `cachelock` command with real processes on real temporary caches.

mod common;

use std::time::{Duration, Instant};

use common::{Dirs, Proc, eventually};

/// A run in env `env` whose child signals `ready`, waits for `go`, and then records
/// whether its environment is still intact (`<env>-ok` or `<env>-gone`).
fn blocking_run(d: &Dirs, name: &str, policy: &str, env: &str) -> Proc {
    let script = format!(
        "{}; {}; if [ -e \"$CACHELOCK_ENV/cachelock-env\" ]; then touch '{}'; else touch '{}'; fi",
        d.touch(&format!("{name}-ready")),
        d.await_flag("go"),
        d.file(&format!("{name}-ok")).display(),
        d.file(&format!("{name}-gone")).display(),
    );
    let proc = Proc::spawn(d.cmd(
        name,
        &[
            "run", "--policy", policy, "--env", env, "--", "sh", "-c", &script,
        ],
    ));
    let ready = d.file(&format!("{name}-ready"));
    eventually("the run's child is ready", || ready.exists());
    proc
}

fn quick_run(d: &Dirs, name: &str, policy: &str, env: &str) -> i32 {
    Proc::spawn(d.cmd(
        name,
        &["run", "--policy", policy, "--env", env, "--", "true"],
    ))
    .exit_code()
}

fn env_dir(d: &Dirs, env: &str) -> std::path::PathBuf {
    d.cache().join("environments").join(env)
}

#[test]
fn two_runs_share_the_cache_under_uv_0_13_and_cachelock() {
    for policy in ["uv-0.13", "cachelock"] {
        let d = Dirs::new();
        let mut a = blocking_run(&d, "a", policy, "a");
        assert_eq!(quick_run(&d, "b", policy, "b"), 0, "{}", d.stderr("b"));
        assert!(a.running(), "{policy}: the first run is still running");
        d.set("go");
        assert_eq!(a.exit_code(), 0, "{}", d.stderr("a"));
        assert!(d.file("a-ok").exists());
    }
}

#[test]
fn clean_waits_for_running_child_under_uv_0_13() {
    let d = Dirs::new();
    let mut run = blocking_run(&d, "run", "uv-0.13", "e");
    let mut clean = Proc::spawn(d.cmd("clean", &["clean", "--policy", "uv-0.13"]));
    eventually("clean says it waits", || {
        d.stderr("clean").contains("waiting")
    });
    let msg = d.stderr("clean");
    assert!(
        msg.contains(&format!("cache is in use by 1 process (pid {})", run.pid()))
            && msg.contains("--force"),
        "{msg}"
    );
    assert!(clean.running() && env_dir(&d, "e").exists());
    d.set("go");
    assert_eq!(run.exit_code(), 0);
    assert!(d.file("run-ok").exists(), "the child kept its environment");
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(!env_dir(&d, "e").exists(), "clean deleted it afterwards");
}

#[test]
fn clean_skips_env_in_use_and_reports_it_under_cachelock() {
    let d = Dirs::new();
    assert_eq!(quick_run(&d, "old", "cachelock", "unused"), 0);
    let mut run = blocking_run(&d, "run", "cachelock", "busy");
    let mut clean = Proc::spawn(d.cmd("clean", &["clean"]));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(run.running(), "clean did not wait for the run");
    assert!(
        d.stderr("clean")
            .contains("Kept environment `busy`: it is in use"),
        "{}",
        d.stderr("clean")
    );
    assert!(env_dir(&d, "busy").exists() && !env_dir(&d, "unused").exists());
    d.set("go");
    assert_eq!(run.exit_code(), 0);
    assert!(d.file("run-ok").exists(), "the child kept its environment");
}

#[test]
fn clean_force_does_not_wait_and_deletes_the_live_env_under_uv_0_13() {
    let d = Dirs::new();
    let mut run = blocking_run(&d, "run", "uv-0.13", "e");
    let mut clean = Proc::spawn(d.cmd("clean", &["clean", "--force", "--policy", "uv-0.13"]));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    d.set("go");
    assert_eq!(run.exit_code(), 0);
    assert!(
        d.file("run-gone").exists(),
        "--force deleted the live environment"
    );
}

#[test]
fn no_cache_child_fails_to_spawn_under_uv_0_8_19_like_uv_issue_15967() {
    let d = Dirs::new();
    let mut run = Proc::spawn(d.cmd(
        "run",
        &["run", "--no-cache", "--policy", "uv-0.8.19", "--", "true"],
    ));
    assert_eq!(run.exit_code(), 2);
    let err = d.stderr("run");
    assert!(
        err.contains("failed to spawn `true`")
            && err.contains("is missing")
            && err.contains("temporary cache was removed"),
        "{err}"
    );
    assert!(!d.cache().exists(), "--no-cache never touches the cache");
}

#[test]
fn no_cache_run_keeps_its_temp_cache_until_the_child_exits_under_cachelock() {
    let d = Dirs::new();
    let script = format!(
        "test -e \"$CACHELOCK_ENV/cachelock-env\" && echo \"$CACHELOCK_ENV\" > '{}'",
        d.file("env-path").display()
    );
    let mut run = Proc::spawn(d.cmd("run", &["run", "--no-cache", "--", "sh", "-c", &script]));
    assert_eq!(run.exit_code(), 0, "{}", d.stderr("run"));
    let env = std::fs::read_to_string(d.file("env-path")).unwrap_or_default();
    assert!(
        env.trim().starts_with(d.tmp().to_str().unwrap_or("?")),
        "{env}"
    );
    assert!(
        !std::path::Path::new(env.trim()).exists(),
        "the temp cache is removed"
    );
    assert_eq!(std::fs::read_dir(d.tmp()).map(|r| r.count()).ok(), Some(0));
    assert!(!d.cache().exists());
}

#[test]
fn killed_parents_child_keeps_its_env_through_a_clean_under_cachelock() {
    let d = Dirs::new();
    let mut run = blocking_run(&d, "run", "cachelock", "e");
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit_code(), 128 + libc::SIGKILL);
    assert_eq!(Proc::spawn(d.cmd("status", &["status"])).exit_code(), 0);
    let status = d.stdout("status");
    assert!(
        status.contains("holds (inherited descriptor) shared lock on environments/e.lock")
            && status.contains("sh -c"),
        "status names the orphan that holds the environment: {status}"
    );
    let mut clean = Proc::spawn(d.cmd("clean", &["clean"]));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(
        d.stderr("clean").contains("Kept environment `e`"),
        "{}",
        d.stderr("clean")
    );
    d.set("go");
    eventually("the orphaned child finishes", || {
        d.file("run-ok").exists() || d.file("run-gone").exists()
    });
    assert!(
        d.file("run-ok").exists(),
        "the orphan's environment survived"
    );
}

#[test]
fn killed_parents_child_loses_its_env_to_a_clean_under_uv_0_13() {
    let d = Dirs::new();
    let mut run = blocking_run(&d, "run", "uv-0.13", "e");
    run.signal(libc::SIGKILL);
    run.exit_code();
    let mut clean = Proc::spawn(d.cmd("clean", &["clean", "--policy", "uv-0.13"]));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    d.set("go");
    eventually("the orphaned child finishes", || {
        d.file("run-ok").exists() || d.file("run-gone").exists()
    });
    assert!(
        d.file("run-gone").exists(),
        "uv 0.13 protects nothing after a crash"
    );
}

#[test]
fn exit_code_passes_through() {
    let d = Dirs::new();
    let code = |args: &[&str]| Proc::spawn(d.cmd("run", args)).exit_code();
    assert_eq!(code(&["run", "--", "sh", "-c", "exit 7"]), 7);
    assert_eq!(code(&["run", "--", "sh", "-c", "kill -TERM $$"]), 128 + 15);
    assert_eq!(code(&["tool-run", "t", "--", "sh", "-c", "exit 3"]), 3);
    assert_eq!(code(&["run", "--no-cache", "--", "sh", "-c", "exit 4"]), 4);
}

#[test]
fn sigterm_is_forwarded_and_the_run_waits_for_its_child() {
    let d = Dirs::new();
    let script = format!(
        "trap \"{}; exit 5\" TERM; {}; {}",
        d.touch("got-term"),
        d.touch("ready"),
        d.await_flag("never")
    );
    let mut run = Proc::spawn(d.cmd(
        "run",
        &["run", "--policy", "uv-0.13", "--", "sh", "-c", &script],
    ));
    eventually("child ready", || d.file("ready").exists());
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit_code(), 5, "{}", d.stderr("run"));
    assert!(d.file("got-term").exists());
}

#[test]
fn lock_timeout_exits_2_naming_the_holder() {
    let d = Dirs::new();
    std::fs::create_dir_all(d.cache()).ok();
    let script = format!("{}; {}", d.touch("ready"), d.await_flag("go"));
    let hold = Proc::spawn(d.cmd("hold", &["hold", "--shared", "--", "sh", "-c", &script]));
    eventually("hold ready", || d.file("ready").exists());
    let start = Instant::now();
    let mut clean = d.cmd("clean", &["clean", "--policy", "uv-0.13"]);
    clean.env("CACHELOCK_LOCK_TIMEOUT", "0.5");
    assert_eq!(Proc::spawn(clean).exit_code(), 2);
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = d.stderr("clean");
    assert!(
        err.contains("timed out after")
            && err.contains(&format!("pid {}", hold.pid()))
            && err.contains("hold --shared"),
        "{err}"
    );
    d.set("go");
}

#[test]
fn malformed_lock_timeout_is_rejected() {
    let d = Dirs::new();
    for var in ["CACHELOCK_LOCK_TIMEOUT", "UV_LOCK_TIMEOUT"] {
        let mut cmd = d.cmd("run", &["run", "--", "true"]);
        cmd.env_remove("CACHELOCK_LOCK_TIMEOUT").env(var, "soon");
        assert_eq!(Proc::spawn(cmd).exit_code(), 2);
        let err = d.stderr("run");
        assert!(
            err.contains(&format!("{var}=`soon` is not a number of seconds")),
            "{err}"
        );
    }
}

#[test]
fn clean_of_a_missing_cache_says_no_cache_found() {
    let d = Dirs::new();
    for args in [
        &["clean"][..],
        &["clean", "--policy", "uv-0.13"],
        &["prune"],
    ] {
        assert_eq!(Proc::spawn(d.cmd("clean", args)).exit_code(), 0);
        assert!(
            d.stderr("clean").contains("No cache found at:"),
            "{}",
            d.stderr("clean")
        );
        assert!(!d.cache().exists());
    }
}

#[test]
fn clean_refuses_a_directory_that_is_not_a_cache() {
    let d = Dirs::new();
    std::fs::create_dir_all(d.cache()).ok();
    std::fs::write(d.cache().join("thesis.tex"), "precious").ok();
    assert_eq!(Proc::spawn(d.cmd("clean", &["clean"])).exit_code(), 2);
    assert!(
        d.stderr("clean").contains("refusing to clean"),
        "{}",
        d.stderr("clean")
    );
    assert!(d.cache().join("thesis.tex").exists());
}

#[test]
fn status_shows_the_holder_with_its_command_line() {
    let d = Dirs::new();
    std::fs::create_dir_all(d.cache()).ok();
    let script = format!("{}; {}", d.touch("ready"), d.await_flag("go"));
    let hold = Proc::spawn(d.cmd("hold", &["hold", "--shared", "--", "sh", "-c", &script]));
    eventually("hold ready", || d.file("ready").exists());
    assert_eq!(Proc::spawn(d.cmd("status", &["status"])).exit_code(), 0);
    let out = d.stdout("status");
    assert!(
        out.contains(&format!("pid {} holds shared lock on .lock", hold.pid()))
            && out.contains("hold --shared -- sh -c"),
        "{out}"
    );
    assert!(out.contains("free space"), "{out}");
    d.set("go");
}

#[test]
fn clean_under_uv_0_8_20_removes_lock_file_and_root() {
    let d = Dirs::new();
    assert_eq!(quick_run(&d, "run", "uv-0.8.20", "e"), 0);
    assert!(d.cache().join(".lock").exists());
    assert_eq!(
        Proc::spawn(d.cmd("clean", &["clean", "--policy", "uv-0.8.20"])).exit_code(),
        0
    );
    assert!(!d.cache().exists(), "{}", d.stderr("clean"));
    // uv 0.13 keeps both.
    assert_eq!(quick_run(&d, "run", "uv-0.13", "e"), 0);
    assert_eq!(
        Proc::spawn(d.cmd("clean", &["clean", "--policy", "uv-0.13"])).exit_code(),
        0
    );
    assert!(d.cache().join(".lock").exists());
}

#[test]
fn verbose_shows_each_protocol_step_by_its_model_name() {
    let d = Dirs::new();
    assert_eq!(
        Proc::spawn(d.cmd("run", &["-v", "run", "--", "true"])).exit_code(),
        0
    );
    let err = d.stderr("run");
    let steps = cachelock::Policy::DEFAULT.program(cachelock::Kind::Run);
    let mut at = 0;
    for step in steps {
        let found = err[at..].find(&format!("{}: ", step.name()));
        assert!(found.is_some(), "{step} missing or out of order in:\n{err}");
        at += found.unwrap_or(0);
    }
}

#[test]
fn script_and_tool_runs_get_their_own_environments_and_prune_keeps_the_scaffold() {
    let d = Dirs::new();
    let script = d.file("hello.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ntest -e \"$CACHELOCK_ENV/cachelock-env\"\n",
    )
    .ok();
    let script = script.to_str().unwrap_or_default().to_string();
    let code = |args: &[&str]| Proc::spawn(d.cmd("x", args)).exit_code();
    assert_eq!(code(&["run", "--script", &script, "--", "sh", &script]), 0);
    assert_eq!(code(&["tool-run", "black", "--", "true"]), 0);
    let mut envs: Vec<String> = std::fs::read_dir(d.cache().join("environments"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    envs.sort();
    assert_eq!(envs.len(), 2, "{envs:?}");
    assert!(
        envs[0].starts_with("script-hello-") && envs[1] == "tool-black",
        "{envs:?}"
    );
    assert_eq!(code(&["prune"]), 0);
    assert!(d.cache().join("CACHEDIR.TAG").exists());
    assert!(!d.cache().join("environments/tool-black").exists());
}

#[test]
fn run_times_out_with_exit_2_while_the_cache_is_held_exclusive() {
    let d = Dirs::new();
    std::fs::create_dir_all(d.cache()).ok();
    let script = format!("{}; {}", d.touch("ready"), d.await_flag("go"));
    let hold = Proc::spawn(d.cmd("hold", &["hold", "--exclusive", "--", "sh", "-c", &script]));
    eventually("hold ready", || d.file("ready").exists());
    let mut run = d.cmd("run", &["run", "--", "true"]);
    run.env("CACHELOCK_LOCK_TIMEOUT", "0.3");
    assert_eq!(Proc::spawn(run).exit_code(), 2);
    let err = d.stderr("run");
    assert!(
        err.contains(&format!("cache is locked by pid {}", hold.pid()))
            && err.contains("timed out after"),
        "{err}"
    );
    d.set("go");
}

#[test]
fn a_daemon_keeps_the_env_after_its_run_exits_under_cachelock_but_not_cachelock_unlock() {
    for (policy, kept) in [("cachelock", true), ("cachelock-unlock", false)] {
        let d = Dirs::new();
        let script = format!(
            "( {}; {} ) & {}",
            d.touch("daemon-ready"),
            d.await_flag("go"),
            d.touch("started")
        );
        let mut run = Proc::spawn(d.cmd(
            "run",
            &[
                "run", "--policy", policy, "--env", "e", "--", "sh", "-c", &script,
            ],
        ));
        assert_eq!(run.exit_code(), 0, "{}", d.stderr("run"));
        eventually("daemon ready", || d.file("daemon-ready").exists());
        assert_eq!(
            Proc::spawn(d.cmd("clean", &["clean", "--policy", policy])).exit_code(),
            0
        );
        assert_eq!(
            env_dir(&d, "e").exists(),
            kept,
            "{policy}: {}",
            d.stderr("clean")
        );
        d.set("go");
    }
}

#[test]
fn the_child_inherits_the_env_lock_only_under_cachelock() {
    let d = Dirs::new();
    let check =
        "test -e \"/proc/self/fd/$CACHELOCK_ENV_LOCK_FD\" && test -n \"$CACHELOCK_ENV_LOCK_FD\"";
    let code = |policy| {
        Proc::spawn(d.cmd("run", &["run", "--policy", policy, "--", "sh", "-c", check])).exit_code()
    };
    assert_eq!(code("cachelock"), 0, "{}", d.stderr("run"));
    assert_eq!(code("cachelock-cloexec"), 1);
    assert_eq!(code("uv-0.13"), 1);
}
