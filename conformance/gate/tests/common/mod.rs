//! A private, offline sandbox for real uv under the gate: its own `UV_CACHE_DIR` and
//! `TMPDIR`, `UV_PYTHON_DOWNLOADS=never`, `UV_NO_CONFIG=1`, `UV_OFFLINE=1`, the
//! system Python.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bound on any wait of these tests: reaching it fails the test, saying what was
/// not seen; it never decides an order.
pub const LIMIT: Duration = Duration::from_secs(60);

pub fn deadline() -> Instant {
    Instant::now() + LIMIT
}

/// The uv release `version`, from `CACHELOCK_UV_VERSIONS_DIR` (else the repository's
/// `.uv-versions`). Missing is a failure that says how to install it, not a skip.
pub fn uv(version: &str) -> PathBuf {
    let dir = std::env::var_os("CACHELOCK_UV_VERSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.uv-versions"));
    let uv = dir.join(version).join("bin").join("uv");
    assert!(
        uv.exists(),
        "uv {version} is not installed at {} (run conformance/scripts/install-uv.sh, or set CACHELOCK_UV_VERSIONS_DIR)",
        uv.display()
    );
    uv
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CACHELOCK_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub cache: PathBuf,
    pub tmp: PathBuf,
    pub uv: PathBuf,
    python: PathBuf,
}

impl Sandbox {
    pub fn new(version: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("cl-gate-")
            .tempdir()
            .unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        Sandbox {
            cache: dir.path().join("cache"),
            tmp,
            uv: uv(version),
            python: python(),
            _dir: dir,
        }
    }

    pub fn lock_file(&self) -> PathBuf {
        self.cache.join(".lock")
    }

    /// `uv ARGS` in the sandbox, output discarded.
    pub fn uv_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.uv);
        c.args(args)
            .env("UV_CACHE_DIR", &self.cache)
            .env("TMPDIR", &self.tmp)
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_NO_CONFIG", "1")
            .env("UV_OFFLINE", "1")
            .env("UV_PYTHON", &self.python)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// `uv run --no-project python3 -c CODE`.
    pub fn run(&self, code: &str) -> Command {
        self.uv_cmd(&["run", "--no-project", "python3", "-c", code])
    }

    /// Fills the cache with what a run leaves there (untraced).
    pub fn fill_cache(&self) {
        let st = self.run("pass").status().unwrap();
        assert!(st.success(), "an untraced uv run failed: {st}");
        assert!(self.lock_file().exists());
    }
}

/// True if `pid` is gone, or dead and only waiting to be reaped by its parent (a
/// zombie): not running, not stopped, not traced.
pub fn gone_or_dead(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    state == "Z" || state == "X"
}
