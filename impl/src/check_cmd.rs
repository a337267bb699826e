//! `cachelock check` and `cachelock explore`: the model checker, from the command line.
//! (Owned by the model work; filled in with the checker.)

use std::process::ExitCode;

/// Arguments of `cachelock check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Check only this policy (default: every policy).
    #[arg(long)]
    pub policy: Option<String>,
    /// Check only this scenario (default: the CI scenario set).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `cachelock explore`.
#[derive(Debug, clap::Args)]
pub struct ExploreArgs {
    /// The policy to explore.
    #[arg(long)]
    pub policy: String,
    /// The scenario to explore.
    #[arg(long)]
    pub scenario: String,
    /// Address to serve on (loopback only).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub addr: String,
}

/// Runs `cachelock check`.
pub fn check(_args: CheckArgs) -> ExitCode {
    eprintln!("cachelock check: the checker is being wired in");
    ExitCode::from(2)
}

/// Runs `cachelock explore`.
pub fn explore(_args: ExploreArgs) -> ExitCode {
    eprintln!("cachelock explore: the checker is being wired in");
    ExitCode::from(2)
}
