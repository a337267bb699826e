//! `cl-trace [--cache DIR] -- CMD...`: runs CMD under the gate with nothing held and
//! prints every process's protocol steps as they happen (`pid step path`).
//!
//! The cache the steps are named against is `--cache`, else uv's default
//! (`UV_CACHE_DIR`, `$XDG_CACHE_HOME/uv`, `$HOME/.cache/uv`). Exits with the command's
//! exit code (128+n if it was killed by signal n), 2 on bad input or when it cannot
//! trace.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use cachelock_gate::{Exit, trace, trace::default_cache};

const USAGE: &str = "usage: cl-trace [--cache DIR] -- CMD [ARG...]";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut cache: Option<PathBuf> = None;
    let mut i = 0;
    while i < args.len() && args[i] != "--" {
        match args[i].to_str() {
            Some("--cache") if i + 1 < args.len() => {
                cache = Some(PathBuf::from(&args[i + 1]));
                i += 2;
            }
            Some("-h") | Some("--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("cl-trace: unexpected argument {:?}\n{USAGE}", args[i]);
                return ExitCode::from(2);
            }
        }
    }
    let cmd_args = args.get(i + 1..).unwrap_or_default();
    let Some((program, rest)) = cmd_args.split_first() else {
        eprintln!("cl-trace: no command given\n{USAGE}");
        return ExitCode::from(2);
    };
    let Some(cache) = cache.or_else(default_cache) else {
        eprintln!("cl-trace: no cache directory: give --cache DIR or set UV_CACHE_DIR");
        return ExitCode::from(2);
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    match trace(cmd, &cache, Box::new(std::io::stdout())) {
        Ok(report) => match report.exit {
            Some(Exit::Code(c)) => ExitCode::from(c.clamp(0, 255) as u8),
            Some(Exit::Signal(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
            None => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("cl-trace: {e}");
            ExitCode::from(2)
        }
    }
}
