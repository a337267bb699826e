//! A file system without flock(2): none can be made here (every local Linux file system
//! has it; NFS and FUSE need servers), so the `faults` feature makes every lock attempt
//! fail as it would there (`CACHELOCK_FAULT=flock-unsupported`). The documented fallback,
//! as uv's and cargo's: one clear warning, then the command works without locks.

use std::process::Command;

fn cachelock(cache: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .args(args)
        .env("CACHELOCK_CACHE_DIR", cache)
        .env("CACHELOCK_FAULT", "flock-unsupported")
        .output()
        .expect("run cachelock")
}

#[test]
fn a_file_system_without_flock_gets_one_warning_and_works_without_locks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = cachelock(
        &cache,
        &[
            "run",
            "--env",
            "web",
            "--",
            "sh",
            "-c",
            "test -f \"$CACHELOCK_ENV/cachelock-env\"",
        ],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("does not support file locks").count(),
        1,
        "one warning: {err}"
    );
    assert!(err.contains("not protected from each other"), "{err}");
    assert!(cache.join("environments/web/cachelock-env").is_file());

    let clean = cachelock(&cache, &["clean"]);
    let err = String::from_utf8_lossy(&clean.stderr);
    assert_eq!(clean.status.code(), Some(0), "{err}");
    assert!(err.contains("does not support file locks"), "{err}");
    assert!(
        !cache.join("environments/web").exists(),
        "the clean worked: {err}"
    );
}
