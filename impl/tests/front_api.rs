//! The front API (`cachelock::api`) as a package manager uses it: the example's own
//! functions (`examples/package_manager.rs`) beside real cleans, a `cachelock clean`
//! process and `Cache::clean` from another thread. Every verdict comes from files, exit
//! codes and the reports; the child is held by a pipe, never by a sleep.

mod common;

#[path = "../examples/package_manager.rs"]
#[allow(dead_code)]
mod example;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use cachelock::{Cache, CacheError, CleanOutcome, Mode, Policy, Progress, Step};

const NAME: &str = "black@24.1";

fn env_dir(cache: &Path, name: &str) -> PathBuf {
    cache.join("environments").join(name)
}

fn code(output: &std::process::Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

#[test]
fn the_child_keeps_its_environment_beside_a_cachelock_clean_process() {
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache());
    let env = example::install(&cache, NAME).expect("install");
    let running = example::start(&env).expect("start the child");
    // From now on only the child's inherited descriptor keeps the environment alive.
    drop(env);

    let out = common::cachelock(&d.cache())
        .args(["clean"])
        .output()
        .expect("cachelock clean");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(
        stderr.contains(&format!("Kept environment `{NAME}`: it is in use")),
        "{stderr}"
    );
    assert!(env_dir(&d.cache(), NAME).join("payload").is_file());

    let status = running.finish().expect("the child ends");
    assert_eq!(
        status.code(),
        Some(0),
        "the child found its environment whole"
    );

    // Nobody uses it any more: a second clean process removes it.
    let out = common::cachelock(&d.cache())
        .args(["clean"])
        .output()
        .expect("cachelock clean");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!env_dir(&d.cache(), NAME).exists());
}

#[test]
fn the_child_keeps_its_environment_beside_a_clean_on_another_thread() {
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache());
    let env = example::install(&cache, NAME).expect("install");
    // Another environment, committed and let go: nobody uses it.
    drop(example::install(&cache, "ruff").expect("install ruff"));
    let running = example::start(&env).expect("start the child");
    drop(env);

    let cleaner = cache.clone();
    let report = std::thread::spawn(move || example::clean(&cleaner))
        .join()
        .expect("the clean thread")
        .expect("clean");
    assert_eq!(report.outcome, CleanOutcome::Cleaned);
    let kept: Vec<&str> = report.in_use.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(kept, [NAME]);
    // `payload` holds the name, the marker the name and a newline, and `bin/tool`.
    let expected = (NAME.len() + NAME.len() + 1 + "#!/bin/sh\necho hello\n".len()) as u64;
    assert_eq!(report.in_use[0].bytes, expected);
    assert!(report.removed_files >= 3, "{report:?}"); // ruff's three files, at least
    assert!(!env_dir(&d.cache(), "ruff").exists());
    assert!(env_dir(&d.cache(), NAME).join("payload").is_file());

    assert_eq!(running.finish().expect("the child ends").code(), Some(0));
    // The clean removed the scaffold; a lease makes it again.
    drop(example::install(&cache, "ruff").expect("install ruff"));
    let report = cache.prune(|_| {}).expect("prune");
    assert!(report.in_use.is_empty(), "{report:?}");
    assert!(!env_dir(&d.cache(), NAME).exists());
    assert!(!env_dir(&d.cache(), "ruff").exists());
    assert!(
        d.cache().join("CACHEDIR.TAG").is_file(),
        "prune keeps the scaffold"
    );
}

/// The same run under a policy whose child does not inherit the lock: the clean takes the
/// environment from under the child. This is the failure the tests above would see if
/// `configure` did not hand the lock over.
#[test]
fn without_the_inherited_lock_the_clean_takes_the_environment() {
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache()).policy(Policy::CachelockCloexec);
    let env = example::install(&cache, NAME).expect("install");
    assert!(!env.child_inherits_lock());
    let running = example::start(&env).expect("start the child");
    drop(env);
    let report = example::clean(&cache).expect("clean");
    assert!(report.in_use.is_empty(), "{report:?}");
    assert!(!env_dir(&d.cache(), NAME).exists());
    assert_eq!(running.finish().expect("the child ends").code(), Some(1));
}

#[test]
fn a_clean_beside_a_lease_being_filled_does_not_wait_and_keeps_it() {
    // The default policy: the lease holds .lock (as a fence against old uv) and its
    // environment's lock; a clean finds .lock busy and deletes only unlocked
    // environments of cachelock's layout, without waiting.
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache());
    drop(example::install(&cache, "warm").expect("the cache exists"));
    let lease = cache.lease(NAME).expect("lease");
    let build = lease.build_dir().expect("a new environment").to_path_buf();
    fs::write(build.join("payload"), "x").expect("fill");
    let report = example::clean(&cache).expect("clean");
    assert!(build.join("payload").is_file(), "the build is kept");
    assert!(!env_dir(&d.cache(), "warm").exists(), "{report:?}");
    let env = lease.commit().expect("commit");
    assert!(env.dir().join("payload").is_file());
}

#[test]
fn a_clean_waits_for_a_lease_being_filled_and_keeps_what_it_commits() {
    let d = common::Dirs::new();
    // The policy whose clean waits for the cache's lock.
    let cache = Cache::open(d.cache()).policy(Policy::Cachelock);
    drop(example::install(&cache, "warm").expect("the cache exists")); // cleanable
    let lease = cache.lease(NAME).expect("lease");
    let build = lease.build_dir().expect("a new environment").to_path_buf();
    fs::write(build.join("payload"), "x").expect("fill");

    let (tx, rx) = mpsc::channel();
    let cleaner = cache.clone();
    let clean = std::thread::spawn(move || {
        cleaner.clean(|p| {
            if let Progress::Waiting { .. } = p {
                let _ = tx.send(p.clone());
            }
        })
    });
    // The clean announces itself, then finds the cache's lock held by the lease.
    let waiting = rx.recv_timeout(common::DEADLINE).expect("the clean waits");
    assert_eq!(
        waiting,
        Progress::Waiting {
            step: Step::LockExclusive,
            lock: std::path::absolute(d.cache()).unwrap().join(".lock"),
        }
    );
    assert!(
        build.join("payload").is_file(),
        "nothing deleted while it waits"
    );
    let env = lease.commit().expect("commit");
    let report = clean.join().expect("clean thread").expect("clean");
    assert_eq!(
        report
            .in_use
            .iter()
            .map(|e| &e.name[..])
            .collect::<Vec<_>>(),
        [NAME]
    );
    assert!(env.dir().join("payload").is_file());
    assert!(!env_dir(&d.cache(), "warm").exists());
}

#[test]
fn a_temporary_cache_lives_until_the_child_that_inherited_it_is_gone() {
    let lease = Cache::temporary().lease("scratch").expect("lease");
    fs::write(lease.build_dir().expect("new").join("payload"), "x").expect("fill");
    let env = lease.commit().expect("commit");
    let root = env.cache_root().to_path_buf();
    let lock = root.join(".lock");
    let running = example::start(&env).expect("start the child");

    // Dropping the environment waits for the child, on another thread.
    let dropper = std::thread::spawn(move || drop(env));
    // Wait until that drop is blocked on the temporary cache's lock (seen in
    // /proc/locks), so that what follows checks a drop that is really waiting.
    common::eventually("the drop waits for the lock", || blocked_on(&lock));
    assert!(root.join("environments/scratch/payload").is_file());
    assert!(!dropper.is_finished());

    assert_eq!(running.finish().expect("the child ends").code(), Some(0));
    dropper.join().expect("the drop");
    assert!(!root.exists(), "removed once the child was gone");

    // The example's own temporary-cache job.
    assert!(example::scratch("job").expect("scratch").success());
}

/// True if /proc/locks shows a process blocked on the lock of `path`.
fn blocked_on(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    cachelock_inspect::locks::waiters()
        .iter()
        .any(|l| l.inode == meta.ino())
}

#[test]
fn dropping_an_uncommitted_lease_removes_its_build_and_a_refilled_build_is_kept() {
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache());
    let lease = cache.lease(NAME).expect("lease");
    let build = lease.build_dir().expect("new").to_path_buf();
    assert!(build.is_dir());
    drop(lease);
    assert!(!build.exists(), "the build is removed");
    assert!(!env_dir(&d.cache(), NAME).exists(), "nothing persisted");

    // A filler that empties the build directory (as an installer with `--clear` would)
    // still gets a complete environment: the lease marks it again at commit.
    let lease = cache.lease(NAME).expect("lease");
    assert!(!lease.is_reused());
    let build = lease.build_dir().expect("new").to_path_buf();
    fs::remove_dir_all(&build).expect("clear");
    fs::create_dir(&build).expect("recreate");
    fs::write(build.join("payload"), "x").expect("fill");
    drop(lease.commit().expect("commit"));
    let again = cache.lease(NAME).expect("lease again");
    assert!(again.is_reused(), "the committed environment is reused");
    assert!(again.build_dir().is_none());
}

#[test]
fn names_a_package_manager_uses_are_accepted_and_paths_refused() {
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache());
    for name in [
        "black@24.1",
        "torch+cu121",
        "pkg==1.0",
        "tool-ruff",
        "a.b_c",
    ] {
        let env = cache.lease(name).expect(name).commit().expect(name);
        assert_eq!(
            env.dir(),
            std::path::absolute(env_dir(&d.cache(), name)).unwrap()
        );
    }
    let before = common::snapshot(&d.cache());
    for name in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        ".hidden",
        "nul\0byte",
        "a b",
        "new\nline",
        "x.lock",
        "a.build-x",
        "a.overlay-x",
        "back\\slash",
        &"n".repeat(201),
    ] {
        match cache.lease(name) {
            Err(CacheError::InvalidEnvName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
    assert_eq!(
        before,
        common::snapshot(&d.cache()),
        "a refused name changes nothing"
    );
}

#[test]
fn errors_say_what_happened_without_command_line_advice() {
    let d = common::Dirs::new();
    let cache_dir = d.cache();
    drop(example::install(&Cache::open(&cache_dir), "warm").expect("the cache exists"));
    // Hold the cache's lock exclusive, as a clean does.
    let holder = fs::File::open(cache_dir.join(".lock")).expect("open .lock");
    holder.lock().expect("lock exclusive");
    let (tx, rx) = mpsc::channel();
    let cache = Cache::open(&cache_dir)
        .lock_timeout(Some(Duration::from_millis(200)))
        .on_wait(move |p| {
            let _ = tx.send(p.clone());
        });
    let err = cache.lease(NAME).expect_err("times out");
    let CacheError::LockTimeout { lock, mode, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(mode, &Mode::Shared);
    assert!(lock.ends_with(".lock"));
    let text = err.to_string();
    assert!(text.starts_with("timed out after"), "{text}");
    for advice in ["--force", "CACHELOCK_", "--cache-dir", "run the command"] {
        assert!(!text.contains(advice), "{text}");
    }
    assert!(matches!(
        rx.try_recv(),
        Ok(Progress::Waiting {
            step: Step::LockShared,
            ..
        })
    ));
    drop(holder);

    // A directory that is not a cache is refused by name, with no advice either.
    let thesis = d.file("thesis");
    fs::create_dir(&thesis).expect("mkdir");
    fs::write(thesis.join("thesis.tex"), "x").expect("write");
    let err = Cache::open(&thesis).clean(|_| {}).expect_err("refused");
    assert!(matches!(err, CacheError::NotACache { .. }), "{err:?}");
    assert!(!err.to_string().contains("--cache-dir"), "{err}");
    assert!(thesis.join("thesis.tex").is_file());
    let report = Cache::open(d.file("missing"))
        .clean(|_| {})
        .expect("no cache");
    assert_eq!(report.outcome, CleanOutcome::NoCache);
}

#[test]
fn the_readme_shows_the_example_word_for_word() {
    let example = include_str!("../examples/package_manager.rs");
    let readme = include_str!("../../README.md");
    let part = |text: &'static str, start: &str, end: &str| -> &'static str {
        let from = text.find(start).map(|i| i + start.len()).expect(start);
        let to = text[from..].find(end).map(|i| from + i).expect(end);
        text[from..to].trim()
    };
    let code = part(example, "// README-BEGIN", "// README-END");
    assert!(code.contains("pub fn install"));
    let main = example[example.find("fn main()").expect("main")..].trim();
    assert!(
        readme.contains(code),
        "README.md's \"The library\" section must hold examples/package_manager.rs \
         between its README markers"
    );
    assert!(
        readme.contains(main),
        "README.md must hold the example's main"
    );
}

#[test]
fn the_policy_is_a_choice_and_uv_policies_behave_as_uv() {
    // The guards move between threads, and a cache is shared by reference.
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<cachelock::EnvLease>();
    send::<cachelock::LiveEnv>();
    sync::<Cache>();
    sync::<cachelock::TempCache>();

    // uv 0.13 holds the cache's lock shared until its child is done: here, until the
    // `LiveEnv` is dropped. A clean cannot get it meanwhile.
    let d = common::Dirs::new();
    let cache = Cache::open(d.cache()).policy(Policy::Uv013);
    let env = example::install(&cache, NAME).expect("install");
    assert!(!env.child_inherits_lock());
    let impatient = cache.clone().lock_timeout(Some(Duration::from_millis(100)));
    match impatient.clean(|_| {}) {
        Err(CacheError::LockTimeout {
            mode: Mode::Exclusive,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(env.dir().join("payload").is_file());
    drop(env);
    let report = impatient.clean(|_| {}).expect("clean");
    assert!(report.in_use.is_empty());
    assert!(!env_dir(&d.cache(), NAME).exists());

    // uv 0.8.19 removed a `--no-cache` run's temporary cache before spawning its child.
    let lease = Cache::temporary()
        .policy(Policy::Uv0819)
        .lease("scratch")
        .expect("lease");
    match lease.commit() {
        Err(CacheError::EnvRemoved {
            step: Step::SpawnChild,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
