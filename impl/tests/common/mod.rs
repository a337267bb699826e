//! Helpers for the integration tests: the built binary, temp dirs, and polling with a
//! deadline instead of fixed sleeps.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The `cachelock` binary with a clean environment: no inherited cache or timeout
/// settings, a 20 s lock timeout so that a broken test fails instead of hanging.
pub fn cachelock(cache: &Path) -> Command {
    cachelock_at(Path::new(env!("CARGO_BIN_EXE_cachelock")), cache)
}

/// [`cachelock`] with the binary at `program`.
pub fn cachelock_at(program: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("CACHELOCK_LOCK_TIMEOUT")
        .env_remove("UV_LOCK_TIMEOUT")
        .env_remove("RUST_LOG")
        .env("CACHELOCK_CACHE_DIR", cache)
        .env("CACHELOCK_LOCK_TIMEOUT", "20")
        .stdin(Stdio::null());
    cmd
}

/// A test directory: `cache` for the cache, `tmp` for TMPDIR, and flag files.
pub struct Dirs {
    pub dir: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        let dir = tempfile::Builder::new()
            .prefix("cachelock-test-")
            .tempdir()
            .expect("a temporary directory for the test");
        std::fs::create_dir(dir.path().join("tmp")).expect("mkdir tmp");
        Dirs { dir }
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A shell snippet that creates flag `name`.
    pub fn touch(&self, name: &str) -> String {
        format!("touch '{}'", self.file(name).display())
    }
    /// A shell snippet that waits until flag `name` exists (for at most about 30 s, so
    /// that a failed test leaves no process behind for long).
    pub fn await_flag(&self, name: &str) -> String {
        format!(
            "i=0; while [ ! -e '{}' ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done",
            self.file(name).display()
        )
    }
    pub fn set(&self, name: &str) {
        std::fs::write(self.file(name), "").expect("write a flag file");
    }
    /// The `cachelock` command on this test's cache, with TMPDIR inside the test dir
    /// and stderr captured in `<name>.err`.
    pub fn cmd(&self, name: &str, args: &[&str]) -> Command {
        self.cmd_of(Path::new(env!("CARGO_BIN_EXE_cachelock")), name, args)
    }
    /// [`Dirs::cmd`] with another copy of the binary (one another user can run).
    pub fn cmd_of(&self, program: &Path, name: &str, args: &[&str]) -> Command {
        let mut cmd = cachelock_at(program, &self.cache());
        cmd.env("TMPDIR", self.tmp()).args(args);
        let err = std::fs::File::create(self.file(&format!("{name}.err"))).expect("stderr file");
        let out = std::fs::File::create(self.file(&format!("{name}.out"))).expect("stdout file");
        cmd.stderr(err).stdout(out);
        cmd
    }
    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(&format!("{name}.err"))).unwrap_or_default()
    }
    pub fn stdout(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(&format!("{name}.out"))).unwrap_or_default()
    }
}

/// Polls `cond` every 10 ms until it holds or the deadline passes.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A spawned process that is killed if the test fails before it exits.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        Proc {
            child: cmd.spawn().expect("spawn the cachelock binary"),
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
    /// Waits (with the deadline) and returns the exit code.
    pub fn exit_code(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(
                start.elapsed() < DEADLINE,
                "process {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.pid()).expect("pid");
        // SAFETY: sending a signal to a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything under `dir`, not following links: relative path -> file content, link
/// target, or `<dir>`. Two snapshots compare equal when nothing under `dir` changed.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_symlink() {
                let target = std::fs::read_link(&p).unwrap_or_default();
                out.insert(rel, target.as_os_str().as_bytes().to_vec());
            } else if meta.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// True while process `pid` is blocked in flock(2) (a waiting entry of its own in the
/// kernel's lock table).
pub fn blocked_in_flock(pid: u32) -> bool {
    cachelock_inspect::locks::blocked_in_flock(pid)
}

/// uv release `version`, installed by `conformance/scripts/install-uv.sh` on first use
/// (it prints the binary's path last).
pub fn uv(version: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/scripts/install-uv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(version)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .filter(|p| out.status.success() && p.exists())
        .unwrap_or_else(|| {
            panic!(
                "could not install uv {version} with {} ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
