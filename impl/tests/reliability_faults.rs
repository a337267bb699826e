//! SIGKILL at every step of the `run`, `run --no-cache`, `clean` and `prune` programs
//! under `cachelock` (`CACHELOCK_FAULT=kill-at-step=N`, the `faults` feature).
//!
//! After each kill: the next run and the next clean succeed, no lock of the cache is
//! left held, an orphaned child keeps its environment, and a leaked temporary cache is
//! handled by `status` and `prune`.
//!
//! Needs the `faults` feature (`required-features` in impl/Cargo.toml): it is built by
//! `cargo test --workspace` (the conformance crate enables `faults` on `cachelock`) and
//! skipped by `cargo test -p cachelock` (run `cargo test -p cachelock --features faults`).

mod common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cachelock::{Kind, Policy, Step};
use common::{Dirs, Proc, eventually};

const SIGKILL_EXIT: i32 = 128 + 9;

/// Every lock file of the cache (root, environments, announcements) can be locked
/// exclusive now: nobody holds anything.
fn assert_no_lock_held(cache: &Path, what: &str) {
    let mut files = vec![cache.join(".lock")];
    for dir in ["environments", ".cleans"] {
        if let Ok(entries) = std::fs::read_dir(cache.join(dir)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.is_file() && (dir == ".cleans" || p.extension().is_some_and(|e| e == "lock"))
            }));
        }
    }
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        assert!(
            file.try_lock().is_ok(),
            "{what}: `{}` is still locked by someone",
            f.display()
        );
    }
}

/// The run whose child touches `<tag>-started`, waits for `<tag>-go`, then records
/// whether its environment is intact (`<tag>-ok` / `<tag>-gone`).
fn child_script(d: &Dirs, tag: &str) -> String {
    format!(
        "{}; {}; if [ -e \"$CACHELOCK_ENV/cachelock-env\" ]; then touch '{}'; else touch '{}'; fi",
        d.touch(&format!("{tag}-started")),
        d.await_flag(&format!("{tag}-go")),
        d.file(&format!("{tag}-ok")).display(),
        d.file(&format!("{tag}-gone")).display(),
    )
}

fn run_ok(d: &Dirs, name: &str) {
    let code = Proc::spawn(d.cmd(name, &["run", "--env", "e", "--", "true"])).exit_code();
    assert_eq!(code, 0, "{name}: {}", d.stderr(name));
}

fn clean_ok(d: &Dirs, name: &str) {
    let code = Proc::spawn(d.cmd(name, &["clean"])).exit_code();
    assert_eq!(code, 0, "{name}: {}", d.stderr(name));
}

/// Kills a process of `kind` at each step in turn and checks the aftermath.
fn kill_at_every_step(kind: Kind) {
    let program = Policy::DEFAULT.program(kind);
    for (n, step) in program.iter().enumerate() {
        let what = format!("{} killed before step {n} ({step})", kind.token());
        let d = Dirs::new();
        run_ok(&d, "setup"); // a cache with environment `e` in it
        let tag = "victim";
        let script = child_script(&d, tag);
        let args: Vec<&str> = match kind {
            Kind::Run => vec!["run", "--env", "e", "--", "sh", "-c", &script],
            Kind::RunNoCache => vec!["run", "--no-cache", "--", "sh", "-c", &script],
            Kind::Clean => vec!["clean"],
            Kind::Prune => vec!["prune"],
            _ => unreachable!(),
        };
        let mut cmd = d.cmd("victim", &args);
        cmd.env("CACHELOCK_FAULT", format!("kill-at-step={n}"));
        let mut victim = Proc::spawn(cmd);
        let started = d.file(&format!("{tag}-started"));
        // What happened before the kill follows from the program, not from which of the
        // victim and its child the scheduler ran first: a child spawned before step n
        // always touches its start file; a victim past `wait-for-child` got there only
        // because the child exited, which it does once let go.
        let spawned = program[..n].contains(&Step::SpawnChild);
        let waited = program[..n].contains(&Step::WaitForChild);
        if spawned {
            eventually(&format!("{what}: the child starts"), || started.exists());
            if waited {
                d.set(&format!("{tag}-go"));
            }
        }
        let orphan = spawned && !waited;
        assert_eq!(
            victim.exit_code(),
            SIGKILL_EXIT,
            "{what}: {}",
            d.stderr("victim")
        );
        assert!(
            spawned || !started.exists(),
            "{what}: a child started though the victim was killed before spawning it"
        );
        if orphan {
            // The orphan still runs in its environment: a clean must leave it alone.
            clean_ok(&d, "clean-during-orphan");
            d.set(&format!("{tag}-go"));
            eventually(&format!("{what}: the orphan finishes"), || {
                d.file(&format!("{tag}-ok")).exists() || d.file(&format!("{tag}-gone")).exists()
            });
            assert!(
                d.file(&format!("{tag}-ok")).exists(),
                "{what}: the orphaned child lost its environment"
            );
            // Its inherited lock goes when it exits (for `--no-cache`, the temporary
            // cache's own lock, which it inherited).
            eventually(&format!("{what}: the orphan's lock is released"), || {
                let temp_locks_free = std::fs::read_dir(d.tmp()).is_ok_and(|es| {
                    es.flatten().all(|e| {
                        File::open(e.path().join(".lock"))
                            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                            || File::open(e.path().join(".lock"))
                                .is_ok_and(|f| f.try_lock().is_ok())
                    })
                });
                temp_locks_free
                    && File::open(d.cache().join("environments/e.lock"))
                        .is_ok_and(|f| f.try_lock().is_ok())
            });
        }
        assert_no_lock_held(&d.cache(), &what);
        run_ok(&d, "next-run");
        clean_ok(&d, "next-clean");
        assert_no_lock_held(&d.cache(), &what);
        let leftovers: Vec<_> = std::fs::read_dir(d.tmp())
            .map(|es| es.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let created_temp = program[..n].contains(&Step::CreateTempCache);
        let dropped_temp = program[..n].contains(&Step::DropTempCache);
        if kind == Kind::RunNoCache && created_temp && !dropped_temp {
            assert_eq!(
                leftovers.len(),
                1,
                "{what}: the temporary cache leaked: {leftovers:?}"
            );
            leaked_temp_cache_aftermath(&d, &what, &leftovers[0]);
        } else {
            assert!(leftovers.is_empty(), "{what}: nothing leaks: {leftovers:?}");
        }
    }
}

/// A killed `--no-cache` run leaked its temporary cache: `status` reports it and `prune`
/// removes it. The run locked it when it created it (`cache::lock_temp_cache`), so once
/// the run and its child are gone it is provably leaked.
fn leaked_temp_cache_aftermath(d: &Dirs, what: &str, leaked: &Path) {
    assert!(
        leaked.join(".lock").exists(),
        "{what}: the temporary cache has its .lock"
    );
    assert_eq!(Proc::spawn(d.cmd("status", &["status"])).exit_code(), 0);
    let status = d.stdout("status");
    assert!(
        status.contains("leaked temporary caches: 1")
            && status.contains(&leaked.display().to_string()),
        "{what}: status reports the leak: {status}"
    );
    assert_eq!(
        Proc::spawn(d.cmd("prune", &["prune"])).exit_code(),
        0,
        "{}",
        d.stderr("prune")
    );
    assert!(
        !leaked.exists(),
        "{what}: prune removed the leaked temporary cache"
    );
    assert!(d.stderr("prune").contains("Removed leaked temporary cache"));
}

#[test]
fn run_killed_at_any_step_leaves_no_lock_and_its_orphan_keeps_its_env() {
    kill_at_every_step(Kind::Run);
}

#[test]
fn no_cache_run_killed_at_any_step_leaves_no_lock_and_a_leak_prune_can_handle() {
    kill_at_every_step(Kind::RunNoCache);
}

#[test]
fn clean_killed_at_any_step_leaves_no_lock_and_the_next_clean_succeeds() {
    kill_at_every_step(Kind::Clean);
}

#[test]
fn prune_killed_at_any_step_leaves_no_lock_and_the_next_clean_succeeds() {
    kill_at_every_step(Kind::Prune);
}

/// Creates the FIFO `DIR/POINT.go` and returns the `CACHELOCK_PAUSE` value that stops a
/// process at `point` (see `cachelock::faults`).
fn pause_at(d: &Dirs, point: &str) -> String {
    let fifo = std::ffi::CString::new(
        d.file(&format!("{point}.go"))
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("a path without NUL");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    format!("{point}:{}", d.dir.path().display())
}

/// Waits until the process reached `point`; its pid.
fn reached(d: &Dirs, point: &str, victim: &mut Proc) -> u32 {
    let file = d.file(&format!("{point}.reached"));
    eventually(&format!("the process reaches {point}"), || {
        file.exists() || !victim.running()
    });
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("the process ended before {point}"))
}

/// Lets a process paused at `point` go on.
fn resume(d: &Dirs, point: &str) {
    std::fs::write(d.file(&format!("{point}.go")), b"").expect("open the FIFO");
}

/// A clean's announcement is never visible under its final name unlocked: paused just
/// after it got that name, it is already locked (a run that finds it then waits for the
/// clean instead of taking it for a stale one).
#[test]
fn a_clean_announcement_is_locked_as_soon_as_it_has_its_name() {
    let d = Dirs::new();
    run_ok(&d, "setup");
    let point = "announcement-published";
    let mut cmd = d.cmd("clean", &["clean"]);
    cmd.env("CACHELOCK_PAUSE", pause_at(&d, point));
    let mut clean = Proc::spawn(cmd);
    reached(&d, point, &mut clean);
    let published: Vec<_> = std::fs::read_dir(d.cache().join(".cleans"))
        .expect("the announcements directory")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.path())
        .collect();
    assert_eq!(published.len(), 1, "one announcement: {published:?}");
    let file = File::open(&published[0]).expect("open the announcement");
    let unlocked = file.try_lock_shared().is_ok();
    drop(file);
    resume(&d, point);
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(
        !unlocked,
        "the announcement {} was visible under its final name before it was locked",
        published[0].display()
    );
}

/// A clean that deletes an environment keeps its lock file: paused just after the
/// deletion, `environments/<env>.lock` is still the inode the run created and the clean
/// holds it exclusive (per `/proc/locks`); after the clean it is still there. A clean
/// that unlinked it would let a run waiting on the old inode and a run on a new one both
/// believe they hold the environment.
#[test]
fn a_clean_keeps_the_lock_file_of_an_environment_it_deletes() {
    let d = Dirs::new();
    run_ok(&d, "setup");
    let lock = d.cache().join("environments/e.lock");
    let ino = std::fs::metadata(&lock)
        .expect("the environment's lock file")
        .ino();
    let point = "env-deleted";
    let mut cmd = d.cmd("clean", &["clean"]);
    cmd.env("CACHELOCK_PAUSE", pause_at(&d, point));
    let mut clean = Proc::spawn(cmd);
    let pid = reached(&d, point, &mut clean);
    let env_gone = !d.cache().join("environments/e").exists();
    let now = std::fs::metadata(&lock).ok().map(|m| m.ino());
    let locks = cachelock_inspect::locks::held_by(pid);
    let held = locks
        .iter()
        .any(|l| l.mode == cachelock::Mode::Exclusive && l.inode == ino);
    resume(&d, point);
    assert_eq!(clean.exit_code(), 0, "{}", d.stderr("clean"));
    assert!(env_gone, "the clean paused after deleting environment `e`");
    assert_eq!(
        now,
        Some(ino),
        "while the clean deleted environment `e`, its lock file was unlinked or replaced"
    );
    assert!(
        held,
        "the clean held `e.lock` exclusive while deleting: {locks:?}"
    );
    assert_eq!(
        std::fs::metadata(&lock).ok().map(|m| m.ino()),
        Some(ino),
        "after the clean, `e.lock` is the same file"
    );
}

/// The trash directories of the cache, with what each holds.
fn trash_contents(cache: &Path) -> Vec<(String, Vec<String>)> {
    let mut dirs: Vec<(String, Vec<String>)> = std::fs::read_dir(cache.join(".trash"))
        .map(|es| {
            es.flatten()
                .map(|e| {
                    let mut inside: Vec<String> = std::fs::read_dir(e.path())
                        .map(|i| {
                            i.flatten()
                                .map(|x| x.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    inside.sort();
                    (e.file_name().to_string_lossy().into_owned(), inside)
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// A cache with environment `e` and 20 files of wheels; the wheels' directory.
fn trash_victim_cache(d: &Dirs) -> std::path::PathBuf {
    run_ok(d, "setup");
    let data = d.cache().join("wheels-v5").join("w");
    std::fs::create_dir_all(&data).expect("mkdir");
    for i in 0..20 {
        std::fs::write(data.join(format!("f{i}")), "wheel").expect("write");
    }
    data
}

/// A `clean` stopped at pause point `point`, and its pid.
fn paused_clean(d: &Dirs, point: &str) -> (Proc, u32) {
    let mut cmd = d.cmd("victim", &["clean"]);
    cmd.env("CACHELOCK_PAUSE", pause_at(d, point));
    let mut victim = Proc::spawn(cmd);
    let pid = reached(d, point, &mut victim);
    (victim, pid)
}

/// A clean SIGKILLed at `point` (between `move-to-trash` and `delete-trash`, or in the
/// middle of `delete-trash`) leaves its trash; the next `cleaner` (`clean` or `prune`)
/// removes it, and nothing of the killed clean is left locked. While the victim is
/// stopped, its trash directory is locked exclusive by it (per `/proc/locks`), so that
/// no other clean deletes a trash being filled.
fn killed_in_the_trash_steps(point: &str, cleaner: &str) {
    let what = format!("a clean killed at {point}, then {cleaner}");
    // How many entries a clean moves into its trash from this cache: seen on a copy.
    let moved = {
        let d = Dirs::new();
        let data = trash_victim_cache(&d);
        let (mut victim, _) = paused_clean(&d, "moved-to-trash");
        let left = trash_contents(&d.cache());
        victim.child.kill().expect("kill the victim");
        victim.child.wait().expect("wait for the victim");
        assert!(!data.exists());
        assert_eq!(left.len(), 1, "{left:?}");
        left[0].1.len()
    };
    let d = Dirs::new();
    let data = trash_victim_cache(&d);
    let (mut victim, pid) = paused_clean(&d, point);
    let left = trash_contents(&d.cache());
    assert_eq!(left.len(), 1, "{what}: one trash directory: {left:?}");
    let trash_ino = std::fs::metadata(d.cache().join(".trash").join(&left[0].0))
        .map(|m| m.ino())
        .ok();
    let locks = cachelock_inspect::locks::held_by(pid);
    let top: Vec<String> = std::fs::read_dir(d.cache())
        .expect("the cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // SIGKILL to the process this test started, by its pid.
    victim.child.kill().expect("kill the victim");
    let status = victim.child.wait().expect("wait for the victim");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{what}: {}",
        d.stderr("victim")
    );
    if point == "moved-to-trash" {
        // Everything the clean deletes is out of the cache's namespace already.
        assert!(
            !d.cache().join("environments/e").exists() && !data.exists(),
            "{what}: the entries were moved: {top:?}"
        );
        assert!(
            locks
                .iter()
                .any(|l| l.mode == cachelock::Mode::Exclusive && Some(l.inode) == trash_ino),
            "{what}: the victim held its trash directory exclusive: {locks:?}"
        );
    }
    let after_kill = trash_contents(&d.cache());
    assert_eq!(
        after_kill.len(),
        1,
        "{what}: the trash is left: {after_kill:?}"
    );
    assert!(
        !after_kill[0].1.is_empty(),
        "{what}: the trash still holds entries: {after_kill:?}"
    );
    assert!(
        moved >= 3,
        "{what}: the tag, the environment, the wheels: {moved}"
    );
    if point == "trash-deleting" {
        assert_eq!(
            left[0].1.len(),
            moved - 1,
            "{what}: one entry of {moved} deleted when it stopped: {left:?}"
        );
    } else {
        assert_eq!(left[0].1.len(), moved, "{what}: {left:?}");
    }
    assert_eq!(after_kill, left, "{what}: what the killed clean left");
    assert_no_lock_held(&d.cache(), &what);
    let code = Proc::spawn(d.cmd("cleaner", &[cleaner])).exit_code();
    assert_eq!(code, 0, "{what}: {}", d.stderr("cleaner"));
    assert!(
        !d.cache().join(".trash").exists(),
        "{what}: the trash is gone: {:?}",
        trash_contents(&d.cache())
    );
    assert!(
        d.stderr("cleaner").contains("Removed "),
        "{what}: {}",
        d.stderr("cleaner")
    );
    assert_no_lock_held(&d.cache(), &what);
    run_ok(&d, "next-run");
}

#[test]
fn a_clean_killed_after_move_to_trash_leaves_trash_the_next_clean_removes() {
    killed_in_the_trash_steps("moved-to-trash", "clean");
}

#[test]
fn a_clean_killed_after_move_to_trash_leaves_trash_the_next_prune_removes() {
    killed_in_the_trash_steps("moved-to-trash", "prune");
}

#[test]
fn a_clean_killed_while_deleting_its_trash_leaves_trash_the_next_clean_removes() {
    killed_in_the_trash_steps("trash-deleting", "clean");
}

#[test]
fn a_clean_killed_while_deleting_its_trash_leaves_trash_the_next_prune_removes() {
    killed_in_the_trash_steps("trash-deleting", "prune");
}
