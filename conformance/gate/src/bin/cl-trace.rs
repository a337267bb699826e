//! `cl-trace [--cache DIR] [--policy P] -- CMD...`: runs CMD under the gate with nothing
//! held and prints every process's protocol steps as they happen (`pid step path`).
//! With `--policy`, the recorded interleaving is then checked against P's model, and the
//! first step the model does not allow is printed (exit 1).
//!
//! The cache the steps are named against is `--cache`, else uv's default
//! (`UV_CACHE_DIR`, `$XDG_CACHE_HOME/uv`, `$HOME/.cache/uv`). Exits with the command's
//! exit code (128+n if it was killed by signal n), 1 if the check found a divergence, 2
//! on bad input or when it cannot trace.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use cachelock_gate::check::check;
use cachelock_gate::{Exit, trace, trace::default_cache};
use cachelock_model::protocol::Policy;

const USAGE: &str = "usage: cl-trace [--cache DIR] [--policy P] -- CMD [ARG...]";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut cache: Option<PathBuf> = None;
    let mut policy: Option<Policy> = None;
    let mut i = 0;
    while i < args.len() && args[i] != "--" {
        match args[i].to_str() {
            Some("--cache") if i + 1 < args.len() => {
                cache = Some(PathBuf::from(&args[i + 1]));
                i += 2;
            }
            Some("--policy") if i + 1 < args.len() => {
                match args[i + 1].to_str().map(Policy::parse) {
                    Some(Ok(p)) => policy = Some(p),
                    Some(Err(e)) => {
                        eprintln!("cl-trace: {e}");
                        return ExitCode::from(2);
                    }
                    None => {
                        eprintln!("cl-trace: --policy takes a policy name\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
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
        Ok(report) => {
            if let Some(policy) = policy {
                match check(policy, &report.records, &report.timeline) {
                    Ok(c) => match c.verdict {
                        Ok(()) => println!(
                            "check: the interleaving of {} ({} steps) is a behaviour of {policy}",
                            c.scenario, c.steps
                        ),
                        Err(d) => {
                            println!("check: not a behaviour of {policy} ({}): {d}", c.scenario);
                            return ExitCode::from(1);
                        }
                    },
                    Err(e) => println!("check: nothing to check: {e}"),
                }
            }
            exit_code(report.exit)
        }
        Err(e) => {
            eprintln!("cl-trace: {e}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(exit: Option<Exit>) -> ExitCode {
    match exit {
        Some(Exit::Code(c)) => ExitCode::from(c.clamp(0, 255) as u8),
        Some(Exit::Signal(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
        None => ExitCode::from(1),
    }
}
