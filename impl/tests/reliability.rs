//! Reliability and hostile input: killed cleans, leaked temporary caches, full disks,
//! signals during lock waits, links out of the cache, bad lock files and names.
//! Each test is named for the behaviour it pins down; none may panic the command or
//! lose data outside the cache.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Dirs, Proc, eventually, snapshot};

/// A canary directory outside the cache, with a file, a subdirectory and a link.
fn canary(d: &Dirs) -> PathBuf {
    let c = d.file("canary");
    std::fs::create_dir_all(c.join("sub")).expect("mkdir canary");
    std::fs::write(c.join("precious"), "do not delete").expect("write");
    std::fs::write(c.join("sub/deeper"), "nor this").expect("write");
    c
}

fn no_panic(d: &Dirs, name: &str) {
    let err = d.stderr(name);
    assert!(!err.contains("panicked"), "{name} panicked: {err}");
}

fn code(cmd: Command) -> i32 {
    Proc::spawn(cmd).exit_code()
}

/// `d.cmd` as user `nobody` (uid 65534), for permission tests: this suite runs as root.
/// The binary it runs is a copy in the test directory (opened up with [`open_up`]): the
/// build's own may lie in a checkout `nobody` cannot enter (a clone under `/root`, or
/// in a `mktemp -d` directory, mode 0700).
fn as_nobody(d: &Dirs, name: &str, args: &[&str]) -> Command {
    let bin = d.file("bin/cachelock");
    if !bin.exists() {
        let dir = d.file("bin");
        std::fs::create_dir_all(&dir).expect("mkdir bin");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::copy(env!("CARGO_BIN_EXE_cachelock"), &bin).expect("copy the binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Every directory above the copy must let others through, or `nobody` gets a
    // confusing "Permission denied" from exec instead of the tests' own checks.
    for dir in bin.ancestors().skip(1) {
        let mode = std::fs::metadata(dir).map(|m| m.permissions().mode()).ok();
        assert!(
            mode.is_some_and(|m| m & 0o001 != 0),
            "user nobody cannot reach {} (the test directory's ancestor {} has mode {:o}): \
             run the tests with TMPDIR set to a directory every user may enter",
            bin.display(),
            dir.display(),
            mode.unwrap_or(0) & 0o7777
        );
    }
    let mut cmd = d.cmd_of(&bin, name, args);
    cmd.uid(65534).gid(65534);
    cmd
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the test directory traversable by other users.
fn open_up(d: &Dirs) {
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

// ---------------------------------------------------------------- killed cleans

#[test]
fn clean_killed_while_deleting_leaves_no_half_deleted_environment_and_the_next_clean_finishes() {
    let d = Dirs::new();
    let run = |name| code(d.cmd(name, &["run", "--env", "big", "--", "true"]));
    assert_eq!(run("build"), 0, "{}", d.stderr("build"));
    let env = d.cache().join("environments/big");
    const FILES: usize = 20_000;
    for i in 0..FILES {
        std::fs::write(env.join(format!("f{i:05}")), "").expect("fill the environment");
    }
    let expected = FILES + 1; // and the marker
    let mut clean = Proc::spawn(d.cmd("clean", &["clean"]));
    let samples: Vec<PathBuf> = (0..FILES)
        .step_by(97)
        .map(|i| env.join(format!("f{i:05}")))
        .collect();
    eventually("the clean starts deleting the environment", || {
        !clean.running() || !env.exists() || samples.iter().any(|s| !s.exists())
    });
    clean.signal(libc::SIGKILL);
    let _ = clean.exit_code();
    // Whatever moment the kill hit: the environment is whole, or it is not there.
    if env.exists() {
        let n = std::fs::read_dir(&env).expect("list").count();
        assert_eq!(
            n, expected,
            "a half-deleted environment is left under its name"
        );
    }
    let child = format!(
        "test -e \"$CACHELOCK_ENV/cachelock-env\" && test \"$(ls \"$CACHELOCK_ENV\" | wc -l)\" -eq 1 -o \"$(ls \"$CACHELOCK_ENV\" | wc -l)\" -eq {expected}"
    );
    let code_run = code(d.cmd("after", &["run", "--env", "big", "--", "sh", "-c", &child]));
    assert_eq!(
        code_run,
        0,
        "the next run starts on a whole environment: {}",
        d.stderr("after")
    );
    assert_eq!(
        code(d.cmd("next-clean", &["clean"])),
        0,
        "{}",
        d.stderr("next-clean")
    );
    let builds: Vec<_> = std::fs::read_dir(d.cache().join("builds"))
        .map(|es| es.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        builds.is_empty(),
        "the next clean finished the job: {builds:?}"
    );
    assert!(!env.exists());
}

// ---------------------------------------------------------------- leaked temp caches

#[test]
fn leaked_temp_cache_is_reported_and_pruned_only_when_unlocked_and_ours() {
    use cachelock::cache::{create_scaffold, leaked_temp_caches, lock_temp_cache};
    let d = Dirs::new();
    let tmp = d.tmp();
    let canary = canary(&d);
    let before = snapshot(&canary);
    // A live one (locked), a leaked one (its lock gone with its process), and three that
    // are not ours: no tag, a foreign tag, a link to the canary.
    let live = tmp.join(".tmplive");
    let leaked = tmp.join(".tmpleaked");
    for dir in [&live, &leaked] {
        create_scaffold(dir).expect("scaffold");
    }
    let live_lock = lock_temp_cache(&live).expect("lock the live one");
    drop(lock_temp_cache(&leaked).expect("lock, then 'die'"));
    std::fs::create_dir_all(tmp.join(".tmpuser")).expect("mkdir");
    std::fs::write(tmp.join(".tmpuser/.lock"), "").expect("write");
    std::fs::write(tmp.join(".tmpuser/notes"), "mine").expect("write");
    create_scaffold(&tmp.join(".tmpforeign")).expect("scaffold");
    std::fs::write(
        tmp.join(".tmpforeign/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .expect("write");
    std::fs::write(tmp.join(".tmpforeign/.lock"), "").expect("write");
    std::os::unix::fs::symlink(&canary, tmp.join(".tmplink")).expect("symlink");

    assert_eq!(leaked_temp_caches(&tmp), vec![leaked.clone()]);
    // The prune's `remove-leaked-temp` is a step of its program, which (as in the model)
    // ends early when there is no cache at all: give it one.
    create_scaffold(&d.cache()).expect("scaffold the cache");
    assert_eq!(code(d.cmd("status", &["status"])), 0);
    let status = d.stdout("status");
    assert!(
        status.contains("leaked temporary caches: 1") && status.contains(".tmpleaked"),
        "{status}"
    );
    assert_eq!(code(d.cmd("prune", &["prune"])), 0, "{}", d.stderr("prune"));
    assert!(
        d.stderr("prune").contains("Removed leaked temporary cache"),
        "{}",
        d.stderr("prune")
    );
    assert!(!leaked.exists(), "prune removed the leaked one");
    for kept in [".tmplive", ".tmpuser", ".tmpforeign", ".tmplink"] {
        assert!(tmp.join(kept).exists(), "prune kept {kept}");
    }
    assert_eq!(snapshot(&canary), before);
    drop(live_lock);
}

// ---------------------------------------------------------------- full disk

/// A 512 KiB tmpfs mounted at `d/disk`, unmounted when the guard drops. Mounting needs
/// root (CI and the developers' machines are root); elsewhere the test fails unless
/// `CACHELOCK_ALLOW_NO_MOUNT=1` says to skip it, so it never passes unnoticed.
fn small_disk(d: &Dirs) -> Option<(PathBuf, Unmount)> {
    let dir = d.file("disk");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some((dir.clone(), Unmount(dir)));
    }
    assert!(
        std::env::var_os("CACHELOCK_ALLOW_NO_MOUNT").is_some(),
        "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); set CACHELOCK_ALLOW_NO_MOUNT=1 to skip"
    );
    println!("WARNING: no tmpfs mount here: the full-disk and read-only checks are skipped");
    None
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with a file `dir/filler`.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).expect("create filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn full_disk_gives_a_clear_error_and_loses_nothing() {
    let d = Dirs::new();
    let Some((disk, _unmount)) = small_disk(&d) else {
        return;
    };
    let cache = disk.join("cache");
    let run = |name: &str, env: &str, tmpdir: &Path| {
        let mut cmd = d.cmd(
            name,
            &[
                "run",
                "--cache-dir",
                cache.to_str().expect("utf-8"),
                "--env",
                env,
                "--",
                "true",
            ],
        );
        cmd.env("TMPDIR", tmpdir);
        code(cmd)
    };
    assert_eq!(run("setup", "kept", &d.tmp()), 0, "{}", d.stderr("setup"));
    fill(&disk);
    // A new environment cannot be written: a clear error, exit 2, no panic.
    assert_eq!(run("new", "new", &d.tmp()), 2);
    let err = d.stderr("new");
    assert!(err.contains("No space left on device"), "{err}");
    no_panic(&d, "new");
    assert!(
        !cache.join("environments/new").exists(),
        "no half-built environment is visible"
    );
    // The existing environment is intact and still usable.
    assert_eq!(run("reuse", "kept", &d.tmp()), 0, "{}", d.stderr("reuse"));
    assert!(cache.join("environments/kept/cachelock-env").is_file());
    // A --no-cache run with TMPDIR on the full disk: a clear error too.
    let mut cmd = d.cmd("nocache", &["run", "--no-cache", "--", "true"]);
    cmd.env("TMPDIR", &disk);
    assert_eq!(code(cmd), 2);
    assert!(
        d.stderr("nocache").contains("No space left on device"),
        "{}",
        d.stderr("nocache")
    );
    no_panic(&d, "nocache");
    // Clean works on a full disk (it only removes), and frees the space.
    let mut cmd = d.cmd(
        "clean",
        &["clean", "--cache-dir", cache.to_str().expect("utf-8")],
    );
    cmd.env("TMPDIR", d.tmp());
    assert_eq!(code(cmd), 0, "{}", d.stderr("clean"));
    assert!(
        disk.join("filler").exists(),
        "nothing outside the cache was touched"
    );
}

// ---------------------------------------------------------------- signals during lock waits

#[test]
fn lock_waits_survive_signals_and_stop_continue() {
    for policy in ["cachelock", "uv-0.8.20"] {
        // uv-0.8.20 has no lock timeout: its wait blocks in the kernel's flock.
        let d = Dirs::new();
        assert_eq!(code(d.cmd("setup", &["run", "--", "true"])), 0);
        let script = d.await_flag("go");
        let mut hold =
            Proc::spawn(d.cmd("hold", &["hold", "--exclusive", "--", "sh", "-c", &script]));
        eventually("hold holds", || File_locked(&d.cache().join(".lock")));
        let mut clean = Proc::spawn(d.cmd("clean", &["clean", "--policy", policy]));
        eventually("the clean waits", || d.stderr("clean").contains("waiting"));
        for _ in 0..20 {
            for sig in [libc::SIGWINCH, libc::SIGCHLD, libc::SIGURG, libc::SIGCONT] {
                clean.signal(sig);
            }
            clean.signal(libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(5));
            clean.signal(libc::SIGCONT);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            clean.running(),
            "{policy}: the clean still waits: {}",
            d.stderr("clean")
        );
        assert!(
            d.cache().join("environments/with/cachelock-env").exists(),
            "{policy}: nothing deleted yet"
        );
        d.set("go");
        assert_eq!(hold.exit_code(), 0);
        assert_eq!(clean.exit_code(), 0, "{policy}: {}", d.stderr("clean"));
        assert!(
            !d.cache().join("environments/with").exists(),
            "{policy}: then it cleaned"
        );
    }
}

#[allow(non_snake_case)]
fn File_locked(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|f| f.try_lock_shared().is_err())
}

// ---------------------------------------------------------------- links out of the cache

#[test]
fn clean_and_prune_never_follow_links_out_of_the_cache() {
    for (policy, command) in [
        ("cachelock", "clean"),
        ("cachelock", "prune"),
        ("uv-0.13", "clean"),
        ("uv-0.8.20", "clean"),
        ("uv-0.13", "prune"),
    ] {
        let d = Dirs::new();
        let canary = canary(&d);
        assert_eq!(
            code(d.cmd(
                "setup",
                &["run", "--policy", policy, "--env", "e", "--", "true"]
            )),
            0
        );
        let cache = d.cache();
        let link =
            |target: &Path, at: &Path| std::os::unix::fs::symlink(target, at).expect("symlink");
        link(&canary, &cache.join("environments/e/to-dir"));
        link(
            &canary.join("precious"),
            &cache.join("environments/e/to-file"),
        );
        link(&canary, &cache.join("environments/linked-env"));
        link(&canary, &cache.join("builds/linked-build"));
        link(&canary, &cache.join("outside"));
        std::fs::hard_link(canary.join("precious"), cache.join("environments/e/hard"))
            .expect("hard link");
        std::fs::hard_link(canary.join("sub/deeper"), cache.join("hard-root")).expect("hard link");
        let before = snapshot(&canary);
        let what = format!("{command} under {policy}");
        assert_eq!(
            code(d.cmd("clean", &[command, "--policy", policy])),
            0,
            "{what}: {}",
            d.stderr("clean")
        );
        assert_eq!(
            snapshot(&canary),
            before,
            "{what}: the outside is untouched"
        );
        assert!(
            !cache.join("environments/e").exists(),
            "{what}: the environment went"
        );
        assert!(
            !cache.join("environments/linked-env").exists(),
            "{what}: the link went, not its target"
        );
    }
}

// ---------------------------------------------------------------- not a cache

#[test]
fn clean_refuses_the_root_the_home_directory_and_directories_that_are_not_caches() {
    let d = Dirs::new();
    let check = |name: &str, dir: &Path, home: &Path, reason: &str| {
        // Never walk the whole file system.
        let before = if dir == Path::new("/") {
            BTreeMap::new()
        } else {
            snapshot(dir)
        };
        let mut cmd = d.cmd(name, &["clean", "--cache-dir"]);
        cmd.arg(dir).env("HOME", home);
        assert_eq!(code(cmd), 2, "{name}: {}", d.stderr(name));
        let err = d.stderr(name);
        assert!(
            err.contains("refusing to clean") && err.contains(reason),
            "{name}: {err}"
        );
        no_panic(&d, name);
        if dir != Path::new("/") {
            assert_eq!(snapshot(dir), before, "{name}: nothing deleted");
        }
    };
    check("root", Path::new("/"), &d.tmp(), "root directory");
    // The home directory, even with a cache tag in it.
    let home = d.file("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(
        home.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .expect("write");
    std::fs::write(home.join("thesis.tex"), "years of work").expect("write");
    check("home", &home, &home, "home directory");
    let notes = canary(&d);
    check("not-a-cache", &notes, &d.tmp(), "CACHEDIR.TAG");
}

// ---------------------------------------------------------------- bad lock files and roots

#[test]
fn a_lock_file_that_is_a_directory_or_a_dangling_link_gives_a_clear_error() {
    for (what, make) in [
        (
            "directory",
            (|p: &Path| std::fs::create_dir(p).expect("mkdir")) as fn(&Path),
        ),
        ("dangling link", |p: &Path| {
            std::os::unix::fs::symlink("/nonexistent/cachelock-lock", p).expect("link")
        }),
    ] {
        let d = Dirs::new();
        assert_eq!(code(d.cmd("setup", &["run", "--", "true"])), 0);
        let lock = d.cache().join(".lock");
        std::fs::remove_file(&lock).expect("rm .lock");
        make(&lock);
        for (name, args) in [
            ("run", &["run", "--", "true"][..]),
            ("clean", &["clean"][..]),
            ("prune", &["prune"][..]),
        ] {
            assert_eq!(
                code(d.cmd(name, args)),
                2,
                "{what} {name}: {}",
                d.stderr(name)
            );
            let err = d.stderr(name);
            assert!(
                err.contains("lock file") && err.contains(".lock"),
                "{what} {name}: {err}"
            );
            no_panic(&d, name);
        }
        assert!(
            d.cache().join("environments/with/cachelock-env").exists(),
            "{what}: nothing lost"
        );
    }
}

#[test]
fn a_lock_file_linked_to_a_file_outside_is_followed_as_uv_does_and_never_deleted() {
    let d = Dirs::new();
    let canary = canary(&d);
    assert_eq!(code(d.cmd("setup", &["run", "--", "true"])), 0);
    let lock = d.cache().join(".lock");
    std::fs::remove_file(&lock).expect("rm .lock");
    std::os::unix::fs::symlink(canary.join("precious"), &lock).expect("link");
    let before = snapshot(&canary);
    for (name, args) in [
        ("run", &["run", "--", "true"][..]),
        ("clean", &["clean"][..]),
    ] {
        assert_eq!(code(d.cmd(name, args)), 0, "{name}: {}", d.stderr(name));
    }
    assert_eq!(
        snapshot(&canary),
        before,
        "the link's target is locked, never written or deleted"
    );
}

#[test]
fn unreadable_or_foreign_lock_files_and_caches_give_clear_errors_without_loss() {
    if !is_root() {
        println!("WARNING: not root: cannot switch to user nobody; permission checks skipped");
        return;
    }
    let d = Dirs::new();
    open_up(&d);
    assert_eq!(code(d.cmd("setup", &["run", "--", "true"])), 0);
    let cache = d.cache();
    let before = snapshot(&cache);
    std::fs::set_permissions(d.tmp(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // The cache belongs to root (0755): user nobody may share existing environments
    // (lock files are 0666, as uv's), but can neither build a new one nor delete.
    let rc = code(as_nobody(&d, "share", &["run", "--", "true"]));
    assert_eq!(rc, 0, "{}", d.stderr("share"));
    for (name, args) in [
        ("run", &["run", "--env", "fresh", "--", "true"][..]),
        ("clean", &["clean"][..]),
        ("prune", &["prune"][..]),
    ] {
        let rc = code(as_nobody(&d, name, args));
        let err = d.stderr(name);
        assert_eq!(rc, 2, "{name}: {err}");
        assert!(
            err.contains("Permission denied") && err.contains("error:"),
            "{name}: {err}"
        );
        no_panic(&d, name);
    }
    assert_eq!(snapshot(&cache), before, "nothing lost");
    // An unreadable `.lock` (mode 000) in a cache nobody may write to.
    let lock = cache.join(".lock");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let rc = code(as_nobody(&d, "unreadable", &["run", "--", "true"]));
    let err = d.stderr("unreadable");
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains("could not open the lock file") && err.contains("Permission denied"),
        "{err}"
    );
    // A `.lock` owned by another user: root still locks it (flock needs only an open).
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&lock, Some(65534), Some(65534)).expect("chown");
    assert_eq!(
        code(d.cmd("foreign", &["run", "--", "true"])),
        0,
        "{}",
        d.stderr("foreign")
    );
    assert!(cache.join("environments/with/cachelock-env").exists());
}

#[test]
fn a_cache_root_that_is_a_file_gives_a_clear_error() {
    let d = Dirs::new();
    std::fs::write(d.cache(), "I am a file").expect("write");
    for (name, args) in [
        ("run", &["run", "--", "true"][..]),
        ("clean", &["clean"][..]),
        ("prune", &["prune"][..]),
        ("tool", &["tool-run", "t", "--", "true"][..]),
    ] {
        assert_eq!(code(d.cmd(name, args)), 2, "{name}: {}", d.stderr(name));
        let err = d.stderr(name);
        assert!(
            err.contains("error:") && err.contains(&d.cache().display().to_string()),
            "{name}: {err}"
        );
        no_panic(&d, name);
    }
    assert_eq!(
        std::fs::read_to_string(d.cache()).ok().as_deref(),
        Some("I am a file")
    );
    assert_eq!(
        code(d.cmd("status", &["status"])),
        0,
        "{}",
        d.stderr("status")
    );
}

#[test]
fn a_read_only_cache_gives_a_clear_error_and_loses_nothing() {
    let d = Dirs::new();
    let Some((disk, _unmount)) = small_disk(&d) else {
        return;
    };
    let cache = disk.join("cache");
    let cache_arg = cache.to_str().expect("utf-8");
    assert_eq!(
        code(d.cmd("setup", &["run", "--cache-dir", cache_arg, "--", "true"])),
        0
    );
    let remount = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk)
        .status();
    assert!(remount.is_ok_and(|s| s.success()), "remount read-only");
    let before = snapshot(&cache);
    for (name, args) in [
        ("run", &["run", "--cache-dir", cache_arg, "--", "true"][..]),
        ("clean", &["clean", "--cache-dir", cache_arg][..]),
        ("prune", &["prune", "--cache-dir", cache_arg][..]),
    ] {
        let rc = code(d.cmd(name, args));
        let err = d.stderr(name);
        assert_eq!(rc, 2, "{name}: {err}");
        assert!(err.contains("Read-only file system"), "{name}: {err}");
        no_panic(&d, name);
    }
    assert_eq!(snapshot(&cache), before);
}

#[test]
fn clean_and_prune_of_a_missing_cache_say_no_cache_found_and_exit_0() {
    let d = Dirs::new();
    for name in ["clean", "prune"] {
        assert_eq!(code(d.cmd(name, &[name])), 0, "{}", d.stderr(name));
        assert!(
            d.stderr(name).contains("No cache found at: "),
            "{}",
            d.stderr(name)
        );
    }
    assert!(!d.cache().exists(), "nothing was created");
}

// ---------------------------------------------------------------- names and values

#[test]
fn odd_names_and_paths_are_refused_clearly_or_work() {
    let d = Dirs::new();
    // Environment and tool names that cannot be directory names: refused, exit 2.
    for (name, args) in [
        ("space", &["run", "--env", "a b", "--", "true"][..]),
        ("newline", &["run", "--env", "a\nb", "--", "true"][..]),
        ("slash", &["run", "--env", "../escape", "--", "true"][..]),
        ("dot", &["run", "--env", "..", "--", "true"][..]),
        ("tool", &["tool-run", "a b", "--", "true"][..]),
    ] {
        assert_eq!(code(d.cmd(name, args)), 2, "{name}: {}", d.stderr(name));
        assert!(
            d.stderr(name).contains("cannot name an environment"),
            "{name}: {}",
            d.stderr(name)
        );
        no_panic(&d, name);
    }
    // A non-UTF-8 environment name: refused by the parser, exit 2.
    let mut cmd = d.cmd("bytes", &["run", "--env"]);
    cmd.arg(OsStr::from_bytes(b"caf\xe9")).args(["--", "true"]);
    assert_eq!(code(cmd), 2);
    assert!(
        d.stderr("bytes").contains("invalid UTF-8"),
        "{}",
        d.stderr("bytes")
    );
    no_panic(&d, "bytes");
    // Cache directories and scripts with spaces, newlines and non-UTF-8 bytes work.
    for raw in [&b"with space"[..], b"new\nline", b"caf\xe9"] {
        let dir = d.dir.path().join(OsStr::from_bytes(raw));
        let script = dir.with_extension("py");
        std::fs::write(&script, "").expect("write script");
        for (name, args) in [
            ("odd-run", vec![OsStr::new("run")]),
            (
                "odd-script",
                vec![
                    OsStr::new("run"),
                    OsStr::new("--script"),
                    script.as_os_str(),
                ],
            ),
            ("odd-clean", vec![OsStr::new("clean")]),
        ] {
            let mut cmd = d.cmd(name, &[]);
            cmd.args(args).arg("--cache-dir").arg(&dir);
            if name != "odd-clean" {
                cmd.args(["--", "true"]);
            }
            assert_eq!(code(cmd), 0, "{name} {raw:?}: {}", d.stderr(name));
        }
        assert!(dir.join(".lock").exists() && !dir.join("environments/with").exists());
    }
}

#[test]
fn malformed_timeout_values_are_refused_with_the_variable_named() {
    let d = Dirs::new();
    for (var, value) in [
        ("CACHELOCK_LOCK_TIMEOUT", "abc"),
        ("CACHELOCK_LOCK_TIMEOUT", "-1"),
        ("CACHELOCK_LOCK_TIMEOUT", "1e400"),
        ("CACHELOCK_LOCK_TIMEOUT", "30 s"),
        ("UV_LOCK_TIMEOUT", "NaN"),
    ] {
        let mut cmd = d.cmd("t", &["run", "--", "true"]);
        cmd.env_remove("CACHELOCK_LOCK_TIMEOUT").env(var, value);
        assert_eq!(code(cmd), 2, "{var}={value}");
        let err = d.stderr("t");
        assert!(
            err.contains(var) && err.contains("is not a number of seconds"),
            "{err}"
        );
        no_panic(&d, "t");
    }
    let mut cmd = d.cmd("empty", &["run", "--", "true"]);
    cmd.env("CACHELOCK_LOCK_TIMEOUT", "");
    assert_eq!(
        code(cmd),
        0,
        "an empty value means the default: {}",
        d.stderr("empty")
    );
}
