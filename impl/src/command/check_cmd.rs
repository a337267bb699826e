//! `cachelock check` and `cachelock explore`: the model checker from the command line.
//!
//! `check` with no arguments checks every policy against the CI scenario set, prints the
//! verdict table and exits 1 if any verdict differs from what its policy declares. With
//! `--policy` and/or `--scenario` it checks just that and tells each failing property's
//! shortest counterexample as a numbered story.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use cachelock_model::check::{self, PairResult, ScenarioSet};
use cachelock_model::properties::Kind3;
use cachelock_model::{Kind, Policy, Scenario, report};

fn scenario_help() -> String {
    let kinds: Vec<String> = Kind::ALL
        .iter()
        .map(|k| format!("  {:18} {}", k.token(), k.summary()))
        .collect();
    format!(
        "A scenario is a comma-separated list of processes sharing one cache, e.g. \
         `run-script+crash,clean`.\nProcesses:\n{}\nSuffixes: +crash (the process may be killed with \
         SIGKILL after any step), +timeout (its lock waits may time out, exit 2).\nA process may run \
         another policy than the checked one (an old uv release beside a new one): `@POLICY` goes \
         last, after the suffixes, e.g. `run,clean+timeout@uv-0.13`. A process without `@` runs the \
         checked policy; a violation counts against it only if one of its processes is the victim or \
         the culprit.\nPolicies: {}",
        kinds.join("\n"),
        Policy::ALL.map(Policy::name).join(", ")
    )
}

// Arguments of `cachelock check` (a plain comment: see `defer` on the command enum).
#[derive(Debug, clap::Args)]
#[command(after_long_help = scenario_help())]
pub struct CheckArgs {
    /// Check only this policy (default: every policy). Names: uv-0.8.19, uv-0.8.20,
    /// uv-0.13, uv-pr15977, cachelock, and the variants built to break one property.
    #[arg(long)]
    pub policy: Option<String>,
    /// Check only this scenario (default: the CI scenario set), e.g. `run,clean,clean`.
    /// See `--help` for the process tokens.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Print JSON (one object per checked policy and scenario) instead of a table.
    #[arg(long, conflicts_with_all = ["markdown", "traces"])]
    pub json: bool,
    /// Print docs/verdicts.md (the generated design reference) instead of a table.
    #[arg(long, conflicts_with_all = ["policy", "scenario", "traces"])]
    pub markdown: bool,
    /// Print docs/traces.md (every declared failure's shortest story).
    #[arg(long, conflicts_with_all = ["policy", "scenario"])]
    pub traces: bool,
    /// Print docs/protocol.md (the rules, each policy's design choices, the vocabulary).
    #[arg(long, conflicts_with_all = ["policy", "scenario", "json", "markdown", "traces"])]
    pub protocol: bool,
    /// Sample N random walks instead of checking exhaustively, for scenarios beyond
    /// exhaustive reach (up to 16 processes; needs --scenario). Per property: whether a
    /// violation was found, with its shortest sampled trace, and how many distinct states
    /// were visited. A sampled "no violation found" is NOT a proof: the walks see a
    /// fraction of the states and may miss a rare interleaving; a violation found is real.
    #[arg(long, value_name = "N", requires = "scenario", conflicts_with_all = ["markdown", "traces", "protocol"])]
    pub simulate: Option<usize>,
    /// The random seed of --simulate (the same seed gives the same walks).
    #[arg(long, default_value_t = 1, requires = "simulate")]
    pub seed: u64,
    /// `-v`: one line per policy and scenario checked (states, time), also when stderr
    /// is not a terminal.
    #[arg(skip)]
    pub verbose: bool,
}

// Arguments of `cachelock explore` (a plain comment: see `defer` on the command enum).
#[derive(Debug, clap::Args)]
#[command(after_long_help = scenario_help())]
pub struct ExploreArgs {
    /// The policy to explore.
    #[arg(long)]
    pub policy: String,
    /// The scenario to explore, e.g. `run,clean,clean`.
    #[arg(long)]
    pub scenario: String,
    /// Address to serve stateright's Explorer on (loopback only).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub addr: String,
}

fn bad_input(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Progress on stderr: a line rewritten in place on a terminal, nothing otherwise
/// except one line per policy.
struct Progress {
    tty: bool,
    verbose: bool,
    started: Instant,
}

impl Progress {
    fn new(verbose: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            verbose,
            started: Instant::now(),
        }
    }

    fn pair(&self, done: usize, total: usize, r: &PairResult) {
        if self.verbose {
            if self.tty {
                eprint!("\r\x1b[2K");
            }
            eprintln!(
                "[{done}/{total}] {} on {}: {} states in {:.2}s",
                r.policy,
                r.scenario,
                r.states,
                r.elapsed.as_secs_f64()
            );
        } else if self.tty {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[2K[{done}/{total}] {} on {} ({} states, {:.1}s elapsed)",
                r.policy,
                r.scenario,
                r.states,
                self.started.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        }
    }

    fn policy_done(&self, row: &check::Row) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "checked {:24} {:>9} states in {:>6.2}s",
            row.policy.name(),
            row.states,
            row.elapsed.as_secs_f64()
        );
    }
}

/// Runs `cachelock check`.
pub fn check(args: CheckArgs) -> ExitCode {
    if args.protocol {
        print!("{}", report::protocol_markdown());
        return ExitCode::SUCCESS;
    }
    let policies = match &args.policy {
        Some(name) => match Policy::parse(name) {
            Ok(p) => vec![p],
            Err(e) => return bad_input(e),
        },
        None => Policy::ALL.to_vec(),
    };
    let max = if args.simulate.is_some() {
        cachelock_model::protocol::MAX_SIMULATED_PROCS
    } else {
        cachelock_model::protocol::MAX_PROCS
    };
    let scenario = match &args.scenario {
        Some(text) => match Scenario::parse_at_most(text, max) {
            Ok(s) => Some(s),
            Err(e) => return bad_input(e),
        },
        None => None,
    };
    match (scenario, args.simulate) {
        (Some(sc), Some(walks)) => simulate(&policies, &sc, walks, args.seed, args.json),
        (sc, _) => match sc {
            Some(sc) => check_one_scenario(&policies, &sc, args.json),
            None => check_ci_set(&policies, &args),
        },
    }
}

/// `check --simulate N`: random walks on both cores, per property what they found.
fn simulate(policies: &[Policy], sc: &Scenario, walks: usize, seed: u64, json: bool) -> ExitCode {
    if walks == 0 {
        return bad_input("--simulate takes a number of walks above 0");
    }
    let mut values = Vec::new();
    for policy in policies {
        let r = cachelock_model::simulate::simulate(*policy, sc, walks, 2, seed);
        if json {
            let props: Vec<serde_json::Value> = r
                .properties
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "property": p.property.name(),
                        "found": sampled_word(p),
                        "walk": p.found.as_ref().map(|(w, _)| *w),
                        "trace": p.found.as_ref().map(|_| p.story.clone()),
                    })
                })
                .collect();
            values.push(serde_json::json!({
                "policy": policy.name(),
                "scenario": sc.to_string(),
                "walks": r.walks,
                "seed": seed,
                "distinct_states": r.distinct_states,
                "seconds": r.elapsed.as_secs_f64(),
                "properties": props,
            }));
            continue;
        }
        println!(
            "{policy} on {sc}: {} random walks (seed {seed}), {} distinct states in {:.2}s; \
             sampled, not exhaustive: \"no violation found\" is not a proof",
            r.walks,
            r.distinct_states,
            r.elapsed.as_secs_f64()
        );
        for p in &r.properties {
            let at = p
                .found
                .as_ref()
                .map(|(w, path)| format!(" (walk {w}, {} steps)", path.len() - 1))
                .unwrap_or_default();
            println!("  {:22} {}{at}", p.property.name(), sampled_word(p));
        }
        for p in &r.properties {
            if p.found.is_some() && p.property.expectation() != Kind3::Sometimes {
                println!("\n{} fails:", p.property.name());
                for line in &p.story {
                    println!("  {line}");
                }
            }
        }
        println!();
    }
    if json {
        println!("{}", serde_json_array(&values));
    }
    ExitCode::SUCCESS
}

fn sampled_word(p: &cachelock_model::simulate::Sampled) -> &'static str {
    match (p.property.expectation(), p.found.is_some()) {
        (Kind3::Sometimes, true) => "witness found",
        (Kind3::Sometimes, false) => "no witness found",
        (_, true) => "violation found",
        (_, false) => "no violation found",
    }
}

fn check_ci_set(policies: &[Policy], args: &CheckArgs) -> ExitCode {
    let scenarios = check::ci_scenarios();
    let mixed = cachelock_model::expect::mixed_scenarios();
    let progress = Progress::new(args.verbose);
    // Every policy on the CI set, and the policies meant to live beside old uv on the
    // mixed set too: one job each.
    let jobs: Vec<(Policy, ScenarioSet)> = policies
        .iter()
        .map(|p| (*p, ScenarioSet::Ci))
        .chain(
            policies
                .iter()
                .filter(|p| Policy::BESIDE_OLD_UV.contains(p))
                .map(|p| (*p, ScenarioSet::Mixed)),
        )
        .collect();
    let total: usize = jobs
        .iter()
        .map(|(_, set)| match set {
            ScenarioSet::Ci => scenarios.len(),
            ScenarioSet::Mixed => mixed.len(),
        })
        .sum();
    // Jobs run on two threads (each check is single-threaded and independent); the
    // rows keep the jobs' order.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: std::sync::Mutex<Vec<Option<check::Row>>> =
        std::sync::Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((policy, set)) = jobs.get(i) else {
                        break;
                    };
                    let mut tick = |r: &PairResult| {
                        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        progress.pair(n, total, r);
                    };
                    let row = match set {
                        ScenarioSet::Ci => check::check_policy(*policy, &scenarios, &mut tick),
                        ScenarioSet::Mixed => check::check_policy_mixed(*policy, &mut tick),
                    };
                    progress.policy_done(&row);
                    slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(row);
                }
            });
        }
    });
    let all_rows: Vec<check::Row> = slots
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let (rows, mixed_rows): (Vec<check::Row>, Vec<check::Row>) =
        all_rows.into_iter().partition(|r| r.set == ScenarioSet::Ci);
    if args.json {
        let all: Vec<_> = rows
            .iter()
            .chain(&mixed_rows)
            .flat_map(|row| row.pairs.iter())
            .map(|r| {
                let traces = check::shortest_traces(r.policy, &r.scenario, &check::failing(r));
                check::pair_json(r, &traces)
            })
            .collect();
        println!("{}", serde_json_array(&all));
    } else if args.markdown {
        print!("{}", report::verdicts_markdown(&rows, &mixed_rows));
    } else if args.traces {
        print!("{}", report::traces_markdown(&rows, &mixed_rows));
    } else {
        print!("{}", report::table(&rows, true));
        if !mixed_rows.is_empty() {
            println!("\nbeside old uv ({} mixed scenarios):", mixed.len());
            print!("{}", report::table(&mixed_rows, true));
        }
        eprintln!(
            "{} policies x {} scenarios and {} x {} mixed scenarios in {:.1}s",
            rows.len(),
            scenarios.len(),
            mixed_rows.len(),
            mixed.len(),
            progress.started.elapsed().as_secs_f64()
        );
    }
    let mismatches = report::mismatches(&rows)
        .into_iter()
        .chain(report::mismatches(&mixed_rows))
        .collect::<Vec<_>>();
    if mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} verdict(s) differ from their declaration:",
            mismatches.len()
        );
        for m in mismatches {
            eprintln!("  {m}");
        }
        ExitCode::from(1)
    }
}

fn serde_json_array(values: &[impl std::fmt::Display]) -> String {
    let items: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("[{}]", items.join(",\n"))
}

/// `check --scenario`: each policy's verdicts and stories, in the order of `policies`.
/// The policies are checked on two threads (each check is single-threaded and
/// independent); each policy's text is printed as soon as it and those before it are
/// done.
fn check_one_scenario(policies: &[Policy], sc: &Scenario, json: bool) -> ExitCode {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (done, results) = std::sync::mpsc::channel::<(usize, PairResult, Vec<check::Trace>)>();
    let mut values = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let done = done.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(policy) = policies.get(i) else {
                        break;
                    };
                    let (r, traces) = check::check_pair_and_traces(*policy, sc);
                    if done.send((i, r, traces)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        let mut waiting: Vec<Option<(PairResult, Vec<check::Trace>)>> = vec![None; policies.len()];
        let mut printed = 0;
        for (i, r, traces) in results {
            waiting[i] = Some((r, traces));
            while let Some(Some((r, traces))) = waiting.get_mut(printed).map(Option::take) {
                if json {
                    values.push(check::pair_json(&r, &traces));
                } else {
                    print_pair(&r, &traces);
                }
                printed += 1;
            }
        }
    });
    if json {
        println!("{}", serde_json_array(&values));
    }
    ExitCode::SUCCESS
}

/// One policy's verdicts on one scenario and its failing properties' stories.
fn print_pair(r: &PairResult, traces: &[check::Trace]) {
    println!(
        "{} on {}: {} states in {:.2}s",
        r.policy,
        r.scenario,
        r.states,
        r.elapsed.as_secs_f64()
    );
    for (p, v) in &r.verdicts {
        println!("  {:22} {}", p.name(), v.name());
    }
    for t in traces {
        println!("\n{} fails:", t.property.name());
        for line in &t.story {
            println!("  {line}");
        }
    }
    println!();
}

/// Runs `cachelock explore`: serves stateright's Explorer until interrupted.
pub fn explore(args: ExploreArgs) -> ExitCode {
    let policy = match Policy::parse(&args.policy) {
        Ok(p) => p,
        Err(e) => return bad_input(e),
    };
    let sc = match Scenario::parse(&args.scenario) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    let addr: std::net::SocketAddr = match args.addr.parse() {
        Ok(a) => a,
        Err(e) => return bad_input(format!("--addr `{}`: {e}", args.addr)),
    };
    if !addr.ip().is_loopback() {
        return bad_input(format!(
            "--addr `{addr}` is not a loopback address: the Explorer serves on 127.0.0.1 or [::1] only"
        ));
    }
    // stateright panics when it cannot bind: find out first, and say it in one line.
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => drop(listener),
        Err(e) => {
            return bad_input(format!(
                "cannot serve the Explorer on {addr}: {e}; pick another address with --addr \
                 (e.g. --addr 127.0.0.1:3001)"
            ));
        }
    }
    eprintln!("serving the Explorer for {policy} on {sc} at http://{addr}/ (Ctrl-C to stop)");
    let model = match crate::explorer::Explained::new(policy, &sc) {
        Ok(m) => m,
        Err(e) => return bad_input(e),
    };
    use stateright::Model;
    model.checker().serve(addr);
    ExitCode::SUCCESS
}
