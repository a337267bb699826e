//! Property tests: random command lines, environment names, paths and cache contents
//! never panic the command and never touch anything outside the cache (a canary
//! directory beside it, linked to from inside it, stays byte-for-byte the same).

mod common;
use common::snapshot;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

/// A sandbox: `canary/` (precious files), `cache/` (a cache whose environment links to
/// the canary and hard-links one of its files), `work/` (the current directory).
fn sandbox() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("cachelock-prop-")
        .tempdir()
        .expect("tempdir");
    let canary = dir.path().join("canary");
    let cache = dir.path().join("cache");
    let work = dir.path().join("work");
    std::fs::create_dir_all(canary.join("sub")).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(canary.join("precious"), "do not delete").expect("write");
    std::fs::write(canary.join("sub/deeper"), "nor this").expect("write");
    let env = cache.join("environments/e");
    std::fs::create_dir_all(&env).expect("mkdir");
    cachelock::cache::create_scaffold(&cache).expect("scaffold");
    std::fs::write(env.join("cachelock-env"), "e\n").expect("write");
    std::os::unix::fs::symlink(&canary, env.join("to-canary")).expect("symlink");
    std::os::unix::fs::symlink(&canary, cache.join("environments/linked")).expect("symlink");
    std::fs::hard_link(canary.join("precious"), env.join("hard")).expect("hard link");
    (dir, canary, cache, work)
}

/// A token of a command line: a subcommand, a flag, a value, or random text (no `/`,
/// so that random text never names the canary).
fn token() -> impl Strategy<Value = OsString> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "run", "tool-run", "clean", "prune", "status", "hold", "--env",
            "--script", "--no-cache", "--force", "--policy", "--cache-dir", "--shared",
            "--exclusive", "--", "-v", "--help", "--timeout", "cachelock", "uv-0.13",
            "uv-0.8.19", "uv-pr15977", "/bin/true", "..", ".", "", "e", "linked", "cache",
            "cache/sub dir", "-", "--version",
        ])
        .prop_map(OsString::from),
        1 => "[a-z .\n_-]{0,10}".prop_map(OsString::from),
        1 => prop::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 0..8)
            .prop_map(OsString::from_vec),
    ]
}

/// Subcommands that would start a server or model-check for long.
const EXCLUDED: [&str; 2] = ["explore", "check"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_command_lines_never_panic_nor_touch_anything_outside_the_cache(
        args in prop::collection::vec(token(), 0..7)
    ) {
        prop_assume!(!args.first().is_some_and(|a| EXCLUDED.iter().any(|x| a == *x)));
        let (_dir, canary, cache, work) = sandbox();
        let before = snapshot(&canary);
        let empty_path = work.join("no-programs-here");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cachelock"))
            .args(&args)
            .current_dir(&work)
            .env_clear()
            // Nothing random can be executed: only `/bin/true` by its full path.
            .env("PATH", &empty_path)
            .env("CACHELOCK_CACHE_DIR", &cache)
            .env("CACHELOCK_LOCK_TIMEOUT", "5")
            .env("TMPDIR", &work)
            .env("HOME", &work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cachelock");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cachelock {args:?} did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        prop_assert!(status.code() != Some(101) && !stderr.contains("panicked"),
            "cachelock {args:?} panicked: {stderr}");
        prop_assert_eq!(snapshot(&canary), before, "cachelock {:?} touched the canary", args);
    }

    #[test]
    fn deleting_random_cache_contents_never_touches_anything_outside_the_cache(
        entries in prop::collection::vec(
            (
                prop::sample::select(vec!["", "environments", "builds"]),
                prop::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..10),
                0u8..5,
            ),
            0..12,
        ),
        scaffold in any::<bool>(),
        env_locks in any::<bool>(),
    ) {
        let (_dir, canary, cache, _work) = sandbox();
        let before = snapshot(&canary);
        for (parent, name, kind) in &entries {
            let name = std::ffi::OsStr::from_bytes(name);
            if name == "." || name == ".." {
                continue;
            }
            let path = cache.join(parent).join(name);
            let _ = match kind {
                0 => std::fs::write(&path, "x"),
                1 => std::fs::create_dir_all(path.join("inner")).and_then(|()| std::fs::write(path.join("inner/f"), "y")),
                2 => std::os::unix::fs::symlink(&canary, &path),
                3 => std::os::unix::fs::symlink(canary.join("precious"), &path),
                _ => std::fs::hard_link(canary.join("sub/deeper"), &path),
            };
        }
        // A random entry may make the directory look like something else than a cache
        // (a directory named `CACHEDIR.TAG`): then the refusal is the right answer.
        if let Err(e) = cachelock::cache::check_cleanable(&cache) {
            prop_assert!(matches!(e, cachelock::Error::NotACache { .. }), "{}", e);
            prop_assert_eq!(snapshot(&canary), before);
            return Ok(());
        }
        let result = cachelock::cache::delete_entries(&cache, scaffold, env_locks);
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(snapshot(&canary), before);
        // No environment survives (nobody holds their locks), whatever its name.
        let left: Vec<_> = std::fs::read_dir(cache.join("environments"))
            .map(|es| es.flatten().map(|e| e.file_name()).filter(|n| !n.as_bytes().ends_with(b".lock")).collect())
            .unwrap_or_default();
        prop_assert!(left.is_empty(), "environments left: {:?}", left);
    }
}
