//! A package manager's four jobs through cachelock's front API alone: install into an
//! environment of a shared cache, run a child in it, clean the cache beside that child,
//! and use a temporary cache.
//!
//! ```sh
//! cargo run -p cachelock --example package_manager            # in a fresh temporary directory
//! cargo run -p cachelock --example package_manager -- DIR     # in the cache DIR
//! ```
//!
//! The functions between the README markers are the README's "The library" section,
//! word for word (a test checks it), and the integration test `tests/front_api.rs` runs
//! them beside real cleans.

use std::error::Error;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use cachelock::{Cache, CacheError, CleanReport, LiveEnv, Progress};

// README-BEGIN
/// Installs `name`: reuses the environment if it is complete, else fills the build
/// directory and commits it (moved into place in one rename).
pub fn install(cache: &Cache, name: &str) -> Result<LiveEnv, Box<dyn Error>> {
    let lease = cache.lease(name)?;
    if let Some(build) = lease.build_dir() {
        fs::create_dir_all(build.join("bin"))?;
        fs::write(build.join("bin").join("tool"), "#!/bin/sh\necho hello\n")?;
        fs::write(build.join("payload"), name)?;
    }
    Ok(lease.commit()?)
}

/// A child running in an environment: it has said `ready` and waits for a line on its
/// stdin; then it exits 0 if its environment is still whole.
pub struct Running {
    child: Child,
    stdin: ChildStdin,
}

/// Starts a child in `env`, with the working directory, stdio and arguments ours; the
/// child inherits the environment's lock (`CACHELOCK_ENV_LOCK_FD`).
pub fn start(env: &LiveEnv) -> Result<Running, Box<dyn Error>> {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"echo ready; read _; test -f "$CACHELOCK_ENV/payload""#,
    ])
    .current_dir(env.dir())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    env.configure(&mut cmd)?;
    let mut child = cmd.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the child has no pipes".into());
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line != "ready\n" {
        return Err(format!("the child said {line:?}").into());
    }
    Ok(Running { child, stdin })
}

impl Running {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Lets the child check its environment and exit; returns how it exited.
    pub fn finish(mut self) -> std::io::Result<ExitStatus> {
        writeln!(self.stdin, "go")?;
        drop(self.stdin);
        self.child.wait()
    }
}

/// Cleans the cache, saying which environments were kept because they are in use.
pub fn clean(cache: &Cache) -> Result<CleanReport, CacheError> {
    cache.clean(|progress| {
        if let Progress::KeptInUse(env) = progress {
            println!("kept `{}` ({} bytes): in use", env.name, env.bytes);
        }
    })
}

/// Builds a throw-away environment in a temporary cache and runs a command in it; the
/// temporary cache is removed once the command and the lease are gone.
pub fn scratch(name: &str) -> Result<ExitStatus, Box<dyn Error>> {
    let lease = Cache::temporary().lease(name)?;
    if let Some(build) = lease.build_dir() {
        fs::write(build.join("payload"), name)?;
    }
    let env = lease.commit()?;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"test -f "$CACHELOCK_ENV/payload""#]);
    env.configure(&mut cmd)?;
    let status = cmd.status()?;
    drop(cmd); // the command holds a copy of the lock until it is dropped
    drop(env); // removes the temporary cache
    Ok(status)
}
// README-END

fn main() -> Result<(), Box<dyn Error>> {
    let fresh;
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            fresh = tempfile::tempdir()?;
            fresh.path().to_path_buf()
        }
    };
    let cache = Cache::open(&dir);

    // 1. Install into an environment.
    let env = install(&cache, "black@24.1")?;
    println!("installed `{}` in {}", env.name(), env.dir().display());

    // 2. Run a child in it. Once started, the child alone keeps the environment alive.
    let running = start(&env)?;
    println!("child {} runs in it", running.id());
    drop(env);

    // 3. Clean beside it: the environment in use is kept, and reported.
    let report = clean(&cache)?;
    println!(
        "clean removed {} files ({} bytes), kept {}",
        report.removed_files,
        report.removed_bytes,
        report.in_use.len()
    );
    let status = running.finish()?;
    println!("the child exited with {status} (0: its environment was whole)");
    if !status.success() || report.in_use.iter().all(|e| e.name != "black@24.1") {
        return Err("the child lost its environment".into());
    }

    // 4. A temporary cache.
    let status = scratch("scratch")?;
    println!("the temporary cache's child exited with {status}");
    Ok(())
}
