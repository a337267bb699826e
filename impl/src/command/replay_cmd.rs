//! `cachelock replay`: plays each of the model's counterexamples step by step on real
//! processes under the gate and puts each story step beside what really happened; the
//! `holds` verdicts come from the scenario's per-property plays. The story player, the
//! plays and the comparison are the gate crate's (`cachelock_gate::realuv::story`, and
//! the fidelity suite's engine); this file only reads the command line and prints.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use cachelock::Policy;
use cachelock_gate::realuv::cachelock::Cachelock;
use cachelock_gate::realuv::compare::{Agreement, Predictions, compare};
use cachelock_gate::realuv::scenarios::{SCENARIOS, WITNESSES, play};
use cachelock_gate::realuv::story::{play_story, undrivable};
use cachelock_gate::realuv::{Runner, Seen, Setup, UvBinary};
use cachelock_model::Scenario;
use cachelock_model::check::{Verdict, shortest_traces};
use cachelock_model::properties::PropertyName;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// What `cachelock replay --help` says after the options.
pub const REPLAY_HELP: &str = "\
What it does: for every property the model says --policy breaks on --scenario, the model's \
shortest counterexample (its story) is played step by step on real processes (the uv binary \
given with --uv, else this cachelock under --policy), each under ptrace with a seccomp \
filter that stops it at the cache-lock protocol's steps. Each process starts at its first \
step of the story; for each step, that process runs to its next stop at the gate, which must \
be that step (steps the gate cannot see, such as a scaffold already there, are taken without \
a call, by the same rules as `cachelock trace`), and is released. A lock the model grants \
must return 0; a lock the model makes wait must be seen asleep in the kernel's lock wait, \
not guessed from a timeout; a crash is SIGKILL; a child's exit lets the probe child check \
its environment. Each story step is printed with the real event beside it (pid, system \
call, path, granted/blocked/returned), then the property as the real side shows it (the \
child's report, who held .lock when a deletion was released, the order of lock grants, exit \
codes, what is left in the cache and TMPDIR). The properties the model says hold are played \
by the scenario's per-property plays (the fidelity suite's), forced by the gate, and must \
hold.
Scenarios it can play (the fidelity suite's, model syntax): run,clean run-script,clean \
tool-run,clean run,prune tool-run,prune run-script,clean-force run-no-cache \
run-no-cache+crash run-server,clean+timeout run-daemon,clean run-nested-clean \
run-nested-clean+timeout run,run run+crash,clean run,clean,run clean,run,clean.
A nested clean (run-nested-clean) is a process of the story of its own, under its run's \
gate: the run's child, held at its signal, is let go at the clean's first step and starts \
it, and the events of the process that exec'd the clean's command line (and its threads) \
are the clean's, the rest the run's. A daemon (run-daemon) is forked by the child, which \
signals in its place: child-starts-daemon releases that signal, child-exits the child's \
exit, daemon-exits lets the daemon check its environment and report, its exit seen at the \
gate.
Stories it does not drive step by step (it says so, and takes that verdict from the \
per-property plays): those with a lock timeout on a binary that has none (uv 0.8.x), and \
clean-force on uv 0.8.19 (it has no --force).
Needs: Linux with ptrace allowed, a Python 3 (`python3`, or CACHELOCK_PYTHON) for the probe \
child, no network (the probe is a local wheel, uv runs offline).
Exit codes: 0 when every verdict of the model was reproduced (every counterexample conformed \
step by step and broke the property on the real side, every `holds` held); 1 at the first \
divergence, after a line naming the step and both sides (`divergence: step 6: run#1 \
release-root-lock: model releases the lock on .lock, real ...`), or the property (`divergence: \
PROPERTY: model fails, real holds`); 2 on bad input (an unknown policy or scenario, a \
scenario it cannot play, a --uv that does not run), or when processes cannot be traced here.";

// Arguments of `cachelock replay` (a plain comment: see `defer` on the command enum).
#[derive(Debug, clap::Args)]
#[command(after_help = REPLAY_HELP)]
pub struct ReplayArgs {
    /// The policy whose model's counterexamples are replayed (and which the real side is
    /// claimed to follow).
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(Policy::ALL.map(Policy::name)).try_map(|s| Policy::parse(&s)),
    )]
    pub policy: Policy,
    /// The scenario, in the model's syntax (`run,clean`, `clean,run,clean`).
    #[arg(long, value_name = "SCENARIO")]
    pub scenario: String,
    /// A uv binary to play the scenario with [default: this cachelock under --policy].
    #[arg(long, value_name = "PATH")]
    pub uv: Option<PathBuf>,
}

fn bad(msg: String) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Runs `cachelock replay`.
pub fn replay(args: ReplayArgs) -> ExitCode {
    let scenario = args.scenario.trim().to_string();
    let sc = match Scenario::parse(&scenario) {
        Ok(sc) => sc,
        Err(e) => return bad(format!("--scenario `{scenario}`: {e}")),
    };
    if !SCENARIOS.contains(&scenario.as_str()) {
        return bad(format!(
            "scenario `{scenario}` cannot be played with real processes; these can: {}",
            SCENARIOS.join(" ")
        ));
    }
    let policy = args.policy;
    let runner: Box<dyn Runner> = match &args.uv {
        Some(path) => {
            let version = Command::new(path)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| {
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    let mut words = text.split_whitespace();
                    (words.next() == Some("uv"))
                        .then(|| words.next().map(str::to_string))
                        .flatten()
                });
            let Some(version) = version else {
                return bad(format!(
                    "--uv {}: `{0} --version` does not say it is uv",
                    path.display()
                ));
            };
            Box::new(UvBinary {
                version,
                path: path.clone(),
                policy,
            })
        }
        None => match std::env::current_exe() {
            Ok(path) => Box::new(Cachelock { path, policy }),
            Err(e) => return bad(format!("cannot find this program: {e}")),
        },
    };
    let work = match tempfile::Builder::new().prefix("cl-replay-").tempdir() {
        Ok(d) => d,
        Err(e) => return bad(format!("cannot make a working directory: {e}")),
    };
    let mut setup = Setup::from_env();
    setup.versions_dir = work.path().to_path_buf();
    if let Err(e) = setup.build_probe_wheel() {
        return bad(e);
    }

    // The model's side: its verdicts and its stories.
    let mut pred = Predictions::default();
    let result = pred.get(policy, &scenario).clone();
    let failing: Vec<PropertyName> = result
        .verdicts
        .iter()
        .filter(|(_, v)| *v == Verdict::Fails)
        .map(|(p, _)| *p)
        .collect();
    let traces = shortest_traces(policy, &sc, &failing);
    println!("replay: `{scenario}` under {policy} on {}", runner.label());

    // Each story, step by step, on real processes under the gate.
    let mut from_story: Vec<(PropertyName, Seen, String)> = Vec::new();
    for t in &traces {
        let what = if WITNESSES.contains(&t.property.name()) {
            "never arises"
        } else {
            "fails"
        };
        if let Some(why) = undrivable(runner.as_ref(), &sc, t) {
            println!("\nmodel: {} {what}; its shortest story:", t.property.name());
            for line in &t.story {
                println!("  {line}");
            }
            println!(
                "  (not driven step by step: {why}; its verdict comes from the per-property plays below)"
            );
            continue;
        }
        println!(
            "\nmodel: {} {what}; its shortest story, played step by step under the gate:",
            t.property.name()
        );
        let played = match play_story(runner.as_ref(), &setup, &sc, t) {
            Ok(p) => p,
            Err(e) => {
                if e.contains("cannot trace") {
                    return bad(e);
                }
                println!(
                    "divergence: {}: the story could not be played: {e}",
                    t.property.name()
                );
                return ExitCode::from(1);
            }
        };
        for line in &played.lines {
            println!("  {}", line.model);
            println!("      real: {}", line.real);
        }
        if let Some(d) = &played.divergence {
            println!("divergence: {d}");
            return ExitCode::from(1);
        }
        println!("  {}", played.conclusion);
        let seen = played.seen.unwrap_or(Seen::Holds);
        println!(
            "      real: {} {}: {}",
            t.property.name(),
            seen.name(),
            played.evidence
        );
        if !played.reproduced() {
            println!(
                "divergence: {}: model fails, real holds (the story conformed step by step, but {})",
                t.property.name(),
                played.evidence
            );
            return ExitCode::from(1);
        }
        from_story.push((t.property, seen, played.evidence.clone()));
    }

    // The other verdicts (every `holds`, and stories that cannot be driven): the
    // per-property plays, forced by the gate.
    println!("\nreal: the scenario's per-property plays under the gate (for the `holds` verdicts)");
    let obs = match play(runner.as_ref(), &setup, &scenario) {
        Ok(obs) => obs,
        Err(e) => {
            if e.contains("cannot trace") {
                return bad(e);
            }
            println!("divergence: the scenario could not be played as the model has it: {e}");
            return ExitCode::from(1);
        }
    };
    for line in &obs.log {
        println!("  {line}");
    }
    let compared = compare(&mut pred, obs);
    println!("\nverdicts (model | real, from):");
    let mut first_bad = None;
    for row in &compared.rows {
        if let Some((_, seen, evidence)) =
            from_story.iter().find(|(p, _, _)| p.name() == row.property)
        {
            println!(
                "  {:<22} {:<5} | {:<5} {:<13} story: {evidence}",
                row.property,
                row.predicted.name(),
                seen.name(),
                "agree",
            );
            continue;
        }
        let real = row.seen.map_or("-", |s| s.name());
        println!(
            "  {:<22} {:<5} | {:<5} {:<13} play: {}",
            row.property,
            row.predicted.name(),
            real,
            row.agreement.name(),
            row.note
        );
        if first_bad.is_none()
            && matches!(
                row.agreement,
                Agreement::Disagree | Agreement::NotForced | Agreement::NotPlayable
            )
        {
            first_bad = Some(format!(
                "divergence: {}: model {}, real {real} ({}): {}",
                row.property,
                row.predicted.name(),
                row.agreement.name(),
                row.note
            ));
        }
    }
    match first_bad {
        Some(line) => {
            println!("{line}");
            ExitCode::from(1)
        }
        None => {
            println!(
                "every verdict of the model was reproduced ({} counterexample(s) step by step)",
                from_story.len()
            );
            ExitCode::SUCCESS
        }
    }
}
