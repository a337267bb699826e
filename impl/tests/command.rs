//! The command as a uv user meets it: which cache it acts on, what `status` explains, and
//! the everyday edges (hold's flock(1)-like options, scripts, errors, help, explore).
//! Real processes, real flock(2), real temp dirs; interleavings are controlled by flag
//! files and observed in `/proc/locks`, never decided by a sleep.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Dirs, Proc, blocked_in_flock, eventually};

/// `cachelock ARGS` as a uv user runs it: no CACHELOCK_CACHE_DIR, and HOME, XDG and
/// UV_CACHE_DIR only as given.
fn plain(d: &Dirs, name: &str, env: &[(&str, &Path)], args: &[&str]) -> Command {
    let mut cmd = d.cmd(name, args);
    cmd.env_remove("CACHELOCK_CACHE_DIR")
        .env_remove("UV_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", d.file("home"));
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// A directory laid out as uv 0.13 lays out its cache (what `uv run --with` leaves).
fn uv_like_cache(root: &Path) {
    for dir in [
        "archive-v0/abc/clpkg",
        "wheels-v5/pypi",
        "environments-v2/e-1",
        "sdists-v11",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(
        root.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .expect("tag");
    std::fs::write(root.join(".gitignore"), "*\n").expect("gitignore");
    std::fs::write(root.join(".lock"), "").expect("lock");
    std::fs::write(root.join("archive-v0/abc/clpkg/__init__.py"), "X = 1\n").expect("file");
    std::fs::write(root.join("wheels-v5/pypi/clpkg.http"), "cached\n").expect("file");
    // uv links environments to the archive: a symlink and a hard link.
    std::os::unix::fs::symlink("../../archive-v0/abc", root.join("environments-v2/e-1/lib"))
        .expect("symlink");
    std::fs::hard_link(
        root.join("archive-v0/abc/clpkg/__init__.py"),
        root.join("environments-v2/e-1/clpkg.py"),
    )
    .expect("hard link");
}

/// A `hold --shared` on `cache` (given by --cache-dir) whose command signals `ready` and
/// waits for `go`.
fn holding(d: &Dirs, name: &str, cache: &Path) -> Proc {
    let script = format!(
        "{}; {}",
        d.touch(&format!("{name}-ready")),
        d.await_flag("go")
    );
    let cache = cache.to_str().expect("utf-8 path");
    let proc = Proc::spawn(d.cmd(
        name,
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
    let ready = d.file(&format!("{name}-ready"));
    eventually("the hold's command is ready", || ready.exists());
    proc
}

/// Environment variables for a command, and the cache it should pick with their source.
type Case<'a> = (&'a [(&'a str, &'a Path)], PathBuf, &'a str);

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn status_and_hold_use_uvs_cache_as_uv_finds_it() {
    let d = Dirs::new();
    let uv_cache = d.file("uvc");
    let xdg = d.file("xdg");
    let home = d.file("home");
    let cases: [Case; 3] = [
        (
            &[("UV_CACHE_DIR", &uv_cache), ("XDG_CACHE_HOME", &xdg)],
            uv_cache.clone(),
            "UV_CACHE_DIR",
        ),
        (
            &[("XDG_CACHE_HOME", &xdg)],
            xdg.join("uv"),
            "$XDG_CACHE_HOME/uv",
        ),
        (&[], home.join(".cache/uv"), "~/.cache/uv"),
    ];
    for (env, expected, source) in cases {
        assert_eq!(
            Proc::spawn(plain(&d, "status", env, &["status"])).exit_code(),
            0
        );
        let out = d.stdout("status");
        assert!(
            out.starts_with(&format!("cache: {} (from {source})\n", expected.display())),
            "{out}"
        );
    }
    // --cache-dir wins over UV_CACHE_DIR.
    let flag = d.file("flag");
    let flag_s = flag.to_str().expect("utf-8 path");
    assert_eq!(
        Proc::spawn(plain(
            &d,
            "status",
            &[("UV_CACHE_DIR", &uv_cache)],
            &["status", "--cache-dir", flag_s]
        ))
        .exit_code(),
        0
    );
    assert!(
        d.stdout("status")
            .starts_with(&format!("cache: {flag_s} (from --cache-dir)"))
    );

    // hold locks UV_CACHE_DIR's `.lock`, and a uv-policy clean on the same variable waits.
    std::fs::create_dir_all(&uv_cache).expect("mkdir");
    let script = format!("{}; {}", d.touch("ready"), d.await_flag("go"));
    let env: &[(&str, &Path)] = &[("UV_CACHE_DIR", &uv_cache)];
    let mut hold = Proc::spawn(plain(
        &d,
        "hold",
        env,
        &["hold", "--shared", "--", "sh", "-c", &script],
    ));
    eventually("hold ready", || d.file("ready").exists());
    let mut clean = Proc::spawn(plain(&d, "clean", env, &["clean", "--policy", "uv-0.13"]));
    eventually("the clean blocks in flock(2)", || {
        blocked_in_flock(clean.pid())
    });
    let err = d.stderr("clean");
    assert!(
        err.contains(&format!(
            "cache: {} (from UV_CACHE_DIR)",
            uv_cache.display()
        )) && err.contains(&format!("pid {}", hold.pid())),
        "the waiting clean says which cache and who holds it: {err}"
    );
    d.set("go");
    assert_eq!(hold.exit_code(), 0, "{}", d.stderr("hold"));
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));

    // cachelock's own policy keeps cachelock's cache, not uv's.
    let env: &[(&str, &Path)] = &[("UV_CACHE_DIR", &uv_cache), ("XDG_CACHE_HOME", &xdg)];
    assert_eq!(
        Proc::spawn(plain(&d, "run", env, &["run", "--env", "e", "--", "true"])).exit_code(),
        0,
        "{}",
        d.stderr("run")
    );
    assert!(xdg.join("cachelock/environments/e").is_dir());
    assert!(!uv_cache.join("environments").exists());
}

#[test]
fn readme_backup_example_archives_uvs_cache_under_a_shared_lock() {
    let d = Dirs::new();
    let home = d.file("home");
    uv_like_cache(&home.join(".cache/uv"));
    // As the README has it, through a shell (for `~`), from HOME.
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        "cachelock hold --shared -- tar czf cache.tgz ~/.cache/uv 2>tar.err",
    ])
    .env_remove("CACHELOCK_CACHE_DIR")
    .env_remove("UV_CACHE_DIR")
    .env_remove("XDG_CACHE_HOME")
    .env_remove("CACHELOCK_LOCK_TIMEOUT")
    .env("HOME", &home)
    .env(
        "PATH",
        format!(
            "{}:{}",
            Path::new(env!("CARGO_BIN_EXE_cachelock"))
                .parent()
                .expect("dir")
                .display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .current_dir(&home);
    assert!(sh.status().expect("sh").success());
    let list = Command::new("tar")
        .args(["tzf", "cache.tgz"])
        .current_dir(&home)
        .output()
        .expect("tar");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains(".cache/uv/archive-v0/abc/clpkg/__init__.py"),
        "{list}"
    );
    // And the README's status example on the same cache.
    let cache = home.join(".cache/uv");
    let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .args(["status", "--cache-dir", cache.to_str().expect("utf-8")])
        .env("HOME", &home)
        .output()
        .expect("status");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("locks: none"));
}

#[test]
fn a_busy_clean_leaves_a_uv_cache_alone_without_waiting() {
    // Under the default policy a clean that finds .lock held (here by a uv-like holder)
    // deletes only cachelock's own unlocked environments: a uv cache has none.
    let d = Dirs::new();
    let cache = d.file("uvc");
    uv_like_cache(&cache);
    let before = common::snapshot(&cache);
    let mut hold = holding(&d, "hold", &cache);
    let cache_s = cache.to_str().expect("utf-8 path");
    let clean = d.cmd("clean", &["clean", "--cache-dir", cache_s]);
    assert_eq!(Proc::spawn(clean).exit_code(), 0, "{}", d.stderr("clean"));
    assert_eq!(
        common::snapshot(&cache),
        before,
        "names now: {:?}",
        names(&cache)
    );
    d.set("go");
    assert_eq!(hold.exit_code(), 0);
}

#[test]
fn a_timed_out_clean_leaves_nothing_of_its_own_in_a_uv_cache() {
    let d = Dirs::new();
    let cache = d.file("uvc");
    uv_like_cache(&cache);
    let before = common::snapshot(&cache);
    let mut hold = holding(&d, "hold", &cache);
    let cache_s = cache.to_str().expect("utf-8 path");
    // The policy whose clean waits for the lock (the default never waits).
    let mut clean = d.cmd(
        "clean",
        &["clean", "--policy", "cachelock", "--cache-dir", cache_s],
    );
    clean.env("CACHELOCK_LOCK_TIMEOUT", "0.3");
    assert_eq!(Proc::spawn(clean).exit_code(), 2, "{}", d.stderr("clean"));
    assert!(
        d.stderr("clean").contains("timed out"),
        "{}",
        d.stderr("clean")
    );
    assert_eq!(
        common::snapshot(&cache),
        before,
        "names now: {:?}",
        names(&cache)
    );
    d.set("go");
    assert_eq!(hold.exit_code(), 0);
}

#[test]
fn prune_on_a_uv_cache_says_what_it_left_alone() {
    let d = Dirs::new();
    let cache = d.file("uvc");
    uv_like_cache(&cache);
    let cache_s = cache.to_str().expect("utf-8 path");
    assert_eq!(
        Proc::spawn(d.cmd("prune", &["prune", "--cache-dir", cache_s])).exit_code(),
        0
    );
    let err = d.stderr("prune");
    assert!(
        err.contains("Left alone")
            && err.contains("archive-v0, environments-v2, sdists-v11, wheels-v5"),
        "{err}"
    );
    assert!(cache.join("archive-v0/abc/clpkg/__init__.py").exists());
}

#[test]
fn status_and_clean_count_files_and_links_alike() {
    let d = Dirs::new();
    let cache = d.file("uvc");
    uv_like_cache(&cache);
    let cache_s = cache.to_str().expect("utf-8 path");
    assert_eq!(
        Proc::spawn(d.cmd("status", &["status", "--cache-dir", cache_s])).exit_code(),
        0
    );
    let out = d.stdout("status");
    let counted = |text: &str, before: &str, after: &str| -> u64 {
        let start = text.find(before).expect(before) + before.len();
        let rest = &text[start..];
        rest[..rest.find(after).expect(after)]
            .trim()
            .parse()
            .expect("a number")
    };
    let files = counted(&out, " in ", " files and links");
    assert_eq!(
        Proc::spawn(d.cmd(
            "clean",
            &["clean", "--policy", "uv-0.13", "--cache-dir", cache_s]
        ))
        .exit_code(),
        0
    );
    let removed = counted(&d.stderr("clean"), "Removed ", " files");
    // uv 0.13's clean keeps `.lock` and nothing else.
    assert_eq!(names(&cache), [".lock"]);
    assert_eq!(
        removed + 1,
        files,
        "status: {out}\nclean: {}",
        d.stderr("clean")
    );
}

#[test]
fn status_shows_a_waiting_clean_with_the_holder_it_waits_for_and_json() {
    let d = Dirs::new();
    let cache = d.file("c");
    std::fs::create_dir_all(&cache).expect("mkdir");
    let hold = holding(&d, "hold", &cache);
    let cache_s = cache.to_str().expect("utf-8 path");
    let mut clean = Proc::spawn(d.cmd(
        "clean",
        &["clean", "--policy", "uv-0.13", "--cache-dir", cache_s],
    ));
    eventually("the clean blocks in flock(2)", || {
        blocked_in_flock(clean.pid())
    });
    assert_eq!(
        Proc::spawn(d.cmd("status", &["status", "-v", "--cache-dir", cache_s])).exit_code(),
        0
    );
    let out = d.stdout("status");
    let (h, c) = (hold.pid(), clean.pid());
    assert!(
        out.contains(&format!("pid {c} waits for exclusive lock on .lock")),
        "{out}"
    );
    assert!(out.contains(&format!("    blocked by pid {h}\n")), "{out}");
    assert!(
        out.contains(&format!("remedy: pid {c} (")) && out.contains("stop pid"),
        "{out}"
    );
    // The holder's child, which keeps it holding, with its arguments quoted.
    assert!(
        out.contains("└ pid ") && out.contains("sh -c 'touch "),
        "{out}"
    );
    // -v: the /proc/locks entries read, the waiter's `->` among them.
    assert!(out.contains(&format!("-> FLOCK WRITE pid {c} ")), "{out}");

    assert_eq!(
        Proc::spawn(d.cmd("json", &["status", "--json", "--cache-dir", cache_s])).exit_code(),
        0
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.stdout("json")).expect("status --json is JSON");
    let locks = v["locks"].as_array().expect("locks");
    let waiter = locks
        .iter()
        .find(|l| l["pid"] == c)
        .expect("the clean is listed");
    assert_eq!(waiter["waiting"], true);
    assert_eq!(waiter["mode"], "exclusive");
    assert_eq!(waiter["waits_for"], serde_json::json!([h]));
    let holder = locks
        .iter()
        .find(|l| l["pid"] == h)
        .expect("the hold is listed");
    assert_eq!(holder["waiting"], false);
    assert_eq!(holder["file"], ".lock");
    assert!(holder["children"].as_array().is_some_and(|c| !c.is_empty()));
    d.set("go");
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
}

#[test]
fn status_on_a_file_says_it_is_not_a_directory() {
    let d = Dirs::new();
    std::fs::write(d.file("afile"), "x").expect("write");
    let path = d.file("afile");
    let path = path.to_str().expect("utf-8");
    assert_eq!(
        Proc::spawn(d.cmd("status", &["status", "--cache-dir", path])).exit_code(),
        0
    );
    let out = d.stdout("status");
    assert!(
        out.contains("is not a directory") && !out.contains("No cache found"),
        "{out}"
    );
    // And an OS error is said once.
    assert_eq!(
        Proc::spawn(d.cmd("clean", &["clean", "--cache-dir", path])).exit_code(),
        2
    );
    let err = d.stderr("clean");
    assert_eq!(err.matches("os error 20").count(), 1, "{err}");
}

#[test]
fn hold_has_flock_like_nonblock_timeout_and_conflict_exit_code() {
    let d = Dirs::new();
    let cache = d.file("c");
    std::fs::create_dir_all(&cache).expect("mkdir");
    let mut hold = holding(&d, "hold", &cache);
    let cache_s = cache.to_str().expect("utf-8 path");
    for (name, args) in [
        ("n", vec!["-n"]),
        ("w", vec!["-w", "0.2"]),
        ("long", vec!["--nonblock"]),
    ] {
        let mut all = vec!["hold", "--exclusive", "-E", "75", "--cache-dir", cache_s];
        all.extend(args);
        let flag = d.touch(&format!("{name}-ran"));
        all.extend(["--", "sh", "-c", &flag]);
        assert_eq!(
            Proc::spawn(d.cmd(name, &all)).exit_code(),
            75,
            "{}",
            d.stderr(name)
        );
        let err = d.stderr(name);
        assert!(
            !err.contains("--force") && err.contains(&format!("pid {}", hold.pid())),
            "{err}"
        );
        assert!(
            !d.file(&format!("{name}-ran")).exists(),
            "the command did not run"
        );
    }
    // Without a conflict the command's own exit 2 passes through.
    let other = d.file("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let other = other.to_str().expect("utf-8");
    assert_eq!(
        Proc::spawn(d.cmd(
            "own",
            &[
                "hold",
                "--shared",
                "-E",
                "75",
                "--cache-dir",
                other,
                "--",
                "sh",
                "-c",
                "exit 2"
            ]
        ))
        .exit_code(),
        2
    );
    d.set("go");
    assert_eq!(hold.exit_code(), 0);
}

#[test]
fn run_script_takes_a_relative_path_and_a_missing_one_leaves_no_environment() {
    let d = Dirs::new();
    let work = d.file("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(
        work.join("myscript.sh"),
        format!("#!/bin/sh\n{}\n", d.touch("ran")),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        work.join("myscript.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let mut run = d.cmd("run", &["run", "--script", "myscript.sh"]);
    run.current_dir(&work);
    assert_eq!(Proc::spawn(run).exit_code(), 0, "{}", d.stderr("run"));
    assert!(d.file("ran").exists());
    let envs = || names(&d.cache().join("environments"));
    let before = envs();
    let mut missing = d.cmd("missing", &["run", "--script", "nope.sh"]);
    missing.current_dir(&work);
    assert_eq!(Proc::spawn(missing).exit_code(), 2);
    assert!(
        d.stderr("missing").contains("nope.sh"),
        "{}",
        d.stderr("missing")
    );
    assert_eq!(
        envs(),
        before,
        "no environment directory for the missing script"
    );
}

#[test]
fn help_gives_the_cache_rule_the_default_timeout_and_uv_lock_timeout() {
    for args in [
        &["--help"][..],
        &["hold", "--help"],
        &["clean", "--help"],
        &["status", "--help"],
        &["run", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
            .args(args)
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in ["300 s", "UV_LOCK_TIMEOUT", "UV_CACHE_DIR", "~/.cache/uv"] {
            assert!(
                text.contains(needle),
                "{args:?} --help lacks {needle}: {text}"
            );
        }
    }
}

/// Subcommands' arguments are built only when invoked (`defer`): each one's help still
/// opens with what the command enum says of it, not with its argument struct's text.
#[test]
fn each_subcommands_help_opens_with_its_own_description() {
    for (sub, first) in [
        ("hold", "Hold the cache lock while a command runs"),
        ("check", "Check the protocol model"),
        ("explore", "Explore one scenario of the model"),
        ("trace", "Run a command under the gate"),
        ("replay", "Replay the model's counterexamples"),
    ] {
        for help in ["-h", "--help"] {
            let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
                .args([sub, help])
                .output()
                .expect("help");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.starts_with(first),
                "`{sub} {help}` does not open with {first:?}: {text}"
            );
        }
    }
}

/// The command links its unwinder statically (see `main.rs`): the dynamic loader loads
/// libc for it, and not libgcc_s.so.1, whose loading was a measurable part of `hold`'s
/// start-up.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_command_does_not_load_libgcc_s() {
    // What ldd(1) does: the loader lists the objects it loads instead of running.
    let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .expect("run the command under the loader's trace");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("libc.so"),
        "no list of loaded objects: {text}"
    );
    assert!(!text.contains("libgcc_s"), "libgcc_s is loaded: {text}");
}

#[test]
fn explore_on_a_busy_port_is_a_one_line_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .args([
            "explore",
            "--policy",
            "cachelock",
            "--scenario",
            "run,clean",
            "--addr",
            &addr,
        ])
        .output()
        .expect("explore");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&addr) && err.contains("--addr") && !err.contains("panicked"),
        "{err}"
    );
    drop(listener);
}

#[test]
fn verbose_check_lists_each_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .args(["check", "-v", "--policy", "serial"])
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .filter(|l| l.contains("serial on ") && l.contains(" states in "))
            .count()
            > 1,
        "{err}"
    );
}

/// A `RUST_LOG` the command cannot read is said, not silently dropped; the command
/// still runs.
#[test]
fn an_unreadable_rust_log_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .args(["status", "--cache-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "cachelock[span]=x")
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("warning: RUST_LOG=\"cachelock[span]=x\" is not a list of"),
        "{err}"
    );
}
