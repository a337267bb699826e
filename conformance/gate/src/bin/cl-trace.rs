//! `cl-trace [--cache DIR] [--policy P] -- CMD...`: the `cachelock trace` command for
//! the conformance crates, which do not build the `cachelock` binary. Both call
//! [`cachelock_gate::trace_and_check`]: CMD runs under the gate with nothing held, every
//! process's protocol steps are printed as they happen (`pid step path`), and the
//! recorded interleaving is checked against P's model (without `--policy`, against every
//! policy's).
//!
//! The cache the steps are named against is `--cache`, else uv's default
//! (`UV_CACHE_DIR`, `$XDG_CACHE_HOME/uv`, `$HOME/.cache/uv`). Exits with the command's
//! exit code (128+n if it was killed by signal n), 1 if the interleaving is not a
//! behaviour of the policy (of any policy, without `--policy`), 2 on bad input or when
//! it cannot trace.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use cachelock_gate::{trace::default_cache, trace_and_check};
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
    match trace_and_check(cmd, &cache, policy, Box::new(std::io::stdout())) {
        Ok(outcome) => {
            print!("{}", outcome.verdict);
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("cl-trace: {e}");
            ExitCode::from(2)
        }
    }
}
