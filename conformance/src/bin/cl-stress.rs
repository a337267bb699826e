//! The stress harness: many real `cachelock` processes hammering one cache, and the
//! checking child that notices when its environment disappears (see
//! `cachelock_conformance::stress`).
//!
//! `cl-stress [--processes N] [--seconds S] [--operations K] [--policy POLICY] [--cache-dir DIR] [--seed N]`
//! runs `cachelock` (the binary beside this one, or `$CACHELOCK_BIN`) in `N` parallel
//! workers (16) for `S` seconds (60), or until `K` operations have started (no limit),
//! under `POLICY` (`cachelock`), and prints the
//! operations completed, lock waits (median, p99), environments found missing, leaked
//! temporary caches and processes stuck past their timeout; exits 1 if any of those is
//! not zero, 2 if it could not run.
//!
//! `cl-stress check-env [--millis N] [--interval-ms M]` is the checking child every run
//! starts: it verifies `$CACHELOCK_ENV/cachelock-env` at start, every `M` ms (2) for `N`
//! ms (10), and at exit (exit 86 if it is missing).

use std::process::ExitCode;

use cachelock_conformance::realuv::cachelock::Cachelock;
use cachelock_conformance::stress::{self, Config};
use cachelock_model::Policy;

const USAGE: &str = "usage: cl-stress [--processes N] [--seconds S] [--operations K] [--policy POLICY] \
                     [--cache-dir DIR] [--seed N]\n       cl-stress check-env [--millis N] [--interval-ms M]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("check-env") {
        check_env(&args[1..])
    } else {
        run(&args)
    };
    result.unwrap_or_else(|e| {
        eprintln!("cl-stress: {e}\n{USAGE}");
        ExitCode::from(2)
    })
}

/// The option pairs of `args` (`--name value`), in order.
fn pairs(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    if !args.len().is_multiple_of(2) {
        return Err(format!("`{}` needs a value", args[args.len() - 1]));
    }
    Ok(args
        .chunks(2)
        .map(|c| (c[0].as_str(), c[1].as_str()))
        .collect())
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name} `{value}` is not a number"))
}

fn check_env(args: &[String]) -> Result<ExitCode, String> {
    let (mut millis, mut interval_ms) = (10, 2);
    for (name, value) in pairs(args)? {
        match name {
            "--millis" => millis = number(name, value)?,
            "--interval-ms" => interval_ms = number(name, value)?,
            _ => return Err(format!("unknown option `{name}`")),
        }
    }
    Ok(stress::check_env(millis, interval_ms))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let checker = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut config = Config::new(Policy::Cachelock, Cachelock::locate()?, checker);
    for (name, value) in pairs(args)? {
        match name {
            "--processes" => config.processes = number(name, value)?,
            "--seconds" => config.seconds = number(name, value)?,
            "--operations" => config.operations = Some(number(name, value)?),
            "--policy" => config.policy = Policy::parse(value).map_err(|e| e.to_string())?,
            "--cache-dir" => config.cache_dir = Some(value.into()),
            "--seed" => config.seed = Some(number(name, value)?),
            _ => return Err(format!("unknown option `{name}`")),
        }
    }
    Ok(if stress::run(config)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
