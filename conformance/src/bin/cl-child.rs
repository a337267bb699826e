//! The checking child the conformance harness spawns as a run's child.
//!
//! `cl-child EXIT_FILE REPORT_FILE`: checks that its environment (`$CACHELOCK_ENV`,
//! with its marker file) is there when it starts, every 2 ms while it runs, and when it
//! exits; it exits when EXIT_FILE appears, writing to REPORT_FILE `ok` or
//! `missing <when>`: what it saw. Exit code 0 if the environment was always there, 3
//! otherwise.
//!
//! Daemons: when `EXIT_FILE.daemon` appears, the child starts a daemon, another
//! `cl-child` with `EXIT_FILE.daemon.exit` and `REPORT_FILE.daemon` as its files, which
//! inherits the child's open descriptors (an inherited environment lock included) and
//! outlives it; the daemon's pid is written to `EXIT_FILE.daemon.pid`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(p.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(exit_file), Some(report)) = (args.next(), args.next()) else {
        eprintln!("usage: cl-child EXIT_FILE REPORT_FILE");
        std::process::exit(2);
    };
    let (exit_file, report) = (PathBuf::from(exit_file), PathBuf::from(report));
    let daemon_request = with_suffix(&exit_file, ".daemon");
    let mut daemon_started = false;
    let env = std::env::var_os("CACHELOCK_ENV").map(PathBuf::from);
    let present = || {
        env.as_ref()
            .is_some_and(|e| e.join(cachelock::cache::ENV_MARKER).is_file())
    };
    let mut seen = if present() { None } else { Some("at start") };
    loop {
        let done = exit_file.exists();
        if seen.is_none() && !present() {
            seen = Some(if done { "at exit" } else { "while running" });
        }
        if done {
            break;
        }
        if !daemon_started && daemon_request.exists() {
            daemon_started = true;
            let spawned = std::env::current_exe().and_then(|me| {
                std::process::Command::new(me)
                    .arg(with_suffix(&daemon_request, ".exit"))
                    .arg(with_suffix(&report, ".daemon"))
                    .spawn()
            });
            match spawned {
                Ok(daemon) => {
                    let _ = std::fs::write(
                        with_suffix(&daemon_request, ".pid"),
                        daemon.id().to_string(),
                    );
                }
                Err(e) => eprintln!("cl-child: cannot start the daemon: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let text = match seen {
        None => "ok".to_string(),
        Some(when) => format!("missing {when}"),
    };
    let _ = std::fs::write(&report, text);
    std::process::exit(if seen.is_none() { 0 } else { 3 });
}
