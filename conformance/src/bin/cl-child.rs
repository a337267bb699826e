//! The checking child the conformance harness spawns as a run's child.
//!
//! `cl-child EXIT_FILE REPORT_FILE`: checks that its environment (`$CACHELOCK_ENV`,
//! with its marker file) is there when it starts, every 2 ms while it runs, and when it
//! exits; it exits when EXIT_FILE appears, writing to REPORT_FILE `ok` or
//! `missing <when>`: what it saw. Exit code 0 if the environment was always there, 3
//! otherwise.

use std::path::PathBuf;
use std::time::Duration;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(exit_file), Some(report)) = (args.next(), args.next()) else {
        eprintln!("usage: cl-child EXIT_FILE REPORT_FILE");
        std::process::exit(2);
    };
    let (exit_file, report) = (PathBuf::from(exit_file), PathBuf::from(report));
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
        std::thread::sleep(Duration::from_millis(2));
    }
    let text = match seen {
        None => "ok".to_string(),
        Some(when) => format!("missing {when}"),
    };
    let _ = std::fs::write(&report, text);
    std::process::exit(if seen.is_none() { 0 } else { 3 });
}
