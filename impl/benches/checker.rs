//! The model checker's costs: per policy on the CI scenario set, unique states, states per
//! second, time and peak memory of a `cachelock check --policy P` process; and a scaling
//! table, 2 to 6 processes, of how states, time and memory grow.
//!
//! The baseline for states per second is stateright's own floor on this machine,
//! measured in the same run: a depth-first search, on one thread, of a trivial model
//! (four counters) with about as many states, where a state costs only stateright's
//! hashing and bookkeeping. The scaling table compares each row with the one before.
//!
//! Peak memory is the child's `ru_maxrss` from wait4(2). A scaling row that outgrows its
//! time or memory limit is reported as stopped, with what it had used.
//!
//! `cargo bench -p cachelock --bench checker`: full mode; `CACHELOCK_WRITE_DOCS=1` also
//! rewrites its section of `docs/performance.md`. Without `--bench` (as `cargo test` runs
//! it) a smoke mode checks that every measurement works.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cachelock_model::Policy;
use common::{cachelock, full_mode};
use stateright::{Checker, Model, Property};

fn main() {
    let full = full_mode();
    let machine = common::machine();
    println!(
        "checker benchmark ({} mode) on {machine}",
        if full { "full" } else { "smoke" }
    );
    let dir = tempfile::Builder::new()
        .prefix("cachelock-bench-")
        .tempdir()
        .expect("a temporary directory");
    let floor = stateright_floor(if full { 32 } else { 10 });
    println!(
        "stateright's floor: {} states of a trivial model in {:.2}s = {:.0} states/s",
        floor.states,
        floor.time.as_secs_f64(),
        floor.rate()
    );
    let policies: Vec<Policy> = if full {
        Policy::ALL.to_vec()
    } else {
        vec![Policy::Cachelock]
    };
    let per_policy = policy_table(dir.path(), &policies, &floor);
    let scenarios: &[&str] = if full {
        &[
            "run,clean",
            "run,run-script,clean",
            "run,run-script,tool-run,clean",
            "run,run-script,tool-run,clean,prune",
            "run,run-script,tool-run,clean,prune,run",
        ]
    } else {
        &["run,clean", "run,run-script,clean"]
    };
    let limits = if full {
        Limits {
            time: Duration::from_secs(300),
            memory: 4 << 30,
        }
    } else {
        Limits {
            time: Duration::from_secs(60),
            memory: 2 << 30,
        }
    };
    let scaling = scaling_table(dir.path(), scenarios, &limits);
    let body = format!(
        "## The checker\n\nMachine: {machine}.\n\n\
         Baseline for states/s: stateright's floor on this machine in the same run, a \
         one-thread depth-first search of a trivial model (four counters): {} states in \
         {:.2} s = **{:.0} states/s**. The checker's own time counts exploration only (the \
         time `cachelock check` reports); wall time and peak memory are of the whole \
         `cachelock check --policy P` process (CI set of {} scenarios, plus the mixed \
         scenarios for the policies checked beside old uv; no counterexample stories).\n\n{per_policy}\n\
         ### Scaling, policy `cachelock` (each row compared with the one before; limits \
         {} s and {} GiB per row)\n\n{scaling}\n",
        floor.states,
        floor.time.as_secs_f64(),
        floor.rate(),
        cachelock_model::expect::CI_SCENARIOS.len(),
        limits.time.as_secs(),
        limits.memory >> 30,
    );
    common::write_doc_section("checker", &body);
}

/// States explored and the time it took.
struct Rate {
    states: usize,
    time: Duration,
}

impl Rate {
    fn rate(&self) -> f64 {
        self.states as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

/// Four counters, each stepping from 0 to `max - 1`: `max^4` states, nothing to check
/// but a property that always holds, so a state costs what stateright itself spends.
struct Counters {
    max: u8,
}

impl Model for Counters {
    type State = [u8; 4];
    type Action = usize;

    fn init_states(&self) -> Vec<[u8; 4]> {
        vec![[0; 4]]
    }

    fn actions(&self, state: &[u8; 4], actions: &mut Vec<usize>) {
        actions.extend((0..4).filter(|i| state[*i] + 1 < self.max));
    }

    fn next_state(&self, state: &[u8; 4], i: usize) -> Option<[u8; 4]> {
        let mut next = *state;
        next[i] += 1;
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![Property::always("in range", |m: &Counters, s: &[u8; 4]| {
            s.iter().all(|c| *c < m.max)
        })]
    }
}

fn stateright_floor(max: u8) -> Rate {
    let start = Instant::now();
    let checker = Counters { max }.checker().threads(1).spawn_dfs().join();
    let time = start.elapsed();
    let states = checker.unique_state_count();
    assert_eq!(
        states,
        usize::from(max).pow(4),
        "the trivial model's states"
    );
    assert!(
        checker.discovery("in range").is_none(),
        "the trivial model's property holds"
    );
    Rate { states, time }
}

struct Limits {
    time: Duration,
    memory: u64,
}

/// How a measured child process ended.
struct Measured {
    /// Exit code, or `None` when it was stopped (time limit) or killed (memory limit).
    code: Option<i32>,
    wall: Duration,
    /// Peak resident set size in bytes.
    peak: u64,
    stdout: String,
    stderr: String,
}

/// Runs `cachelock ARGS` with its address space limited to `limits.memory`, stopped after
/// `limits.time`; returns its peak memory (wait4's `ru_maxrss`) and output.
fn measure(dir: &Path, args: &[&str], limits: &Limits) -> Measured {
    let out_path = dir.join("out");
    let err_path = dir.join("err");
    let mut cmd = Command::new(cachelock());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("an output file"))
        .stderr(std::fs::File::create(&err_path).expect("an output file"));
    let memory = limits.memory;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: memory,
                rlim_max: memory,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = cmd.spawn().expect("start cachelock check");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut stopped = false;
    loop {
        // SAFETY: `pid` is our child, not yet reaped (std's `Child` never waits here).
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if !stopped && start.elapsed() > limits.time {
            // SAFETY: signalling our own, unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            stopped = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed();
    drop(child);
    let code = (libc::WIFEXITED(status) && !stopped).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        wall,
        peak: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `cachelock check --policy P` (CI set, and the mixed set for the policies checked
/// beside old uv) for each policy: states, time, memory.
fn policy_table(dir: &Path, policies: &[Policy], floor: &Rate) -> String {
    let limits = Limits {
        time: Duration::from_secs(600),
        memory: 8 << 30,
    };
    println!(
        "\nper policy on the CI set, and the mixed set beside old uv (rate ratio = states/s / stateright's floor of {:.0} states/s; goal ≥ 1 000 000 states/s)",
        floor.rate()
    );
    let mut md = String::from(
        "| policy | unique states | exploring | states/s | ratio to floor | wall | peak memory |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let (mut all_states, mut all_time, mut all_wall, mut max_peak) =
        (0usize, Duration::ZERO, Duration::ZERO, 0u64);
    for policy in policies {
        let m = measure(dir, &["check", "--policy", policy.name()], &limits);
        assert_eq!(
            m.code,
            Some(0),
            "cachelock check --policy {policy} failed:\n{}",
            m.stderr
        );
        // "checked <policy> <states> states in <secs>s": one line for the CI set and, for
        // a policy checked beside old uv, one for the mixed set; both count.
        let (mut states, mut secs, mut lines) = (0usize, 0f64, 0);
        for line in m.stderr.lines().filter(|l| l.starts_with("checked ")) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.get(1), Some(&policy.name()), "{line}");
            states += fields[2].parse::<usize>().expect("a state count");
            secs += fields[5]
                .trim_end_matches('s')
                .parse::<f64>()
                .expect("seconds");
            lines += 1;
        }
        let expected_lines = if Policy::BESIDE_OLD_UV.contains(policy) {
            2
        } else {
            1
        };
        assert_eq!(
            lines, expected_lines,
            "`checked` lines from check --policy {policy}:\n{}",
            m.stderr
        );
        assert!(states > 0, "{policy} explored no state");
        let rate = Rate {
            states,
            time: Duration::from_secs_f64(secs),
        };
        println!(
            "  {:24} {:>10} states  exploring {:>7.2}s  {:>10.0} states/s  {:>5.2}x floor  wall {:>7.2}s  peak {:>9}",
            policy.name(),
            states,
            secs,
            rate.rate(),
            rate.rate() / floor.rate(),
            m.wall.as_secs_f64(),
            mib(m.peak)
        );
        md.push_str(&format!(
            "| `{}` | {} | {:.2} s | {:.0} | {:.2}x | {:.2} s | {} |\n",
            policy.name(),
            states,
            secs,
            rate.rate(),
            rate.rate() / floor.rate(),
            m.wall.as_secs_f64(),
            mib(m.peak)
        ));
        all_states += states;
        all_time += rate.time;
        all_wall += m.wall;
        max_peak = max_peak.max(m.peak);
    }
    let all = Rate {
        states: all_states,
        time: all_time,
    };
    md.push_str(&format!(
        "| all ({} policies) | {} | {:.2} s | {:.0} | {:.2}x | {:.2} s | {} (max) |\n\n\
         Goal: ≥ 1 000 000 states/s.\n",
        policies.len(),
        all_states,
        all_time.as_secs_f64(),
        all.rate(),
        all.rate() / floor.rate(),
        all_wall.as_secs_f64(),
        mib(max_peak)
    ));
    md
}

/// `cachelock check --policy cachelock --scenario S` for growing scenarios.
fn scaling_table(dir: &Path, scenarios: &[&str], limits: &Limits) -> String {
    println!("\nscaling, policy cachelock (growth = this row / the row before)");
    let mut md = String::from(
        "| processes | scenario | unique states | growth | exploring | wall | growth | peak memory | growth |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut before: Option<(usize, Duration, u64)> = None;
    for sc in scenarios {
        let procs = sc.split(',').count();
        let m = measure(
            dir,
            &["check", "--policy", "cachelock", "--scenario", sc],
            limits,
        );
        let Some(code) = m.code else {
            let why = format!(
                "stopped after {:.0} s at {} peak (limits {} s, {} GiB)",
                m.wall.as_secs_f64(),
                mib(m.peak),
                limits.time.as_secs(),
                limits.memory >> 30
            );
            println!("  {procs} {sc:44} {why}");
            md.push_str(&format!("| {procs} | `{sc}` | {why} | | | | | | |\n"));
            break;
        };
        if code != 0 && m.peak as f64 > 0.9 * limits.memory as f64 {
            let why = format!(
                "out of memory after {:.0} s (limit {} GiB)",
                m.wall.as_secs_f64(),
                limits.memory >> 30
            );
            println!("  {procs} {sc:44} {why}");
            md.push_str(&format!("| {procs} | `{sc}` | {why} | | | | | | |\n"));
            break;
        }
        assert_eq!(
            code, 0,
            "cachelock check --scenario {sc} failed:\n{}",
            m.stderr
        );
        // "cachelock on <scenario>: <states> states in <secs>s"
        let line = m.stdout.lines().next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() >= 7 && fields[0] == "cachelock" && fields[4] == "states",
            "unexpected output of check --scenario {sc}: {line}"
        );
        let states: usize = fields[3].parse().expect("a state count");
        let secs: f64 = fields[6].trim_end_matches('s').parse().expect("seconds");
        assert!(states > 0, "{sc} explored no state");
        let growth = |now: f64, then: f64| match before {
            Some(_) => format!("{:.1}x", now / then.max(1e-9)),
            None => "—".into(),
        };
        let (s0, w0, p0) = before.unwrap_or((states, m.wall, m.peak));
        let (gs, gw, gp) = (
            growth(states as f64, s0 as f64),
            growth(m.wall.as_secs_f64(), w0.as_secs_f64()),
            growth(m.peak as f64, p0 as f64),
        );
        println!(
            "  {procs} {sc:44} {states:>10} states ({gs:>6})  exploring {secs:>7.2}s  wall {:>7.2}s ({gw:>6})  peak {:>9} ({gp:>6})",
            m.wall.as_secs_f64(),
            mib(m.peak)
        );
        md.push_str(&format!(
            "| {procs} | `{sc}` | {states} | {gs} | {secs:.2} s | {:.2} s | {gw} | {} | {gp} |\n",
            m.wall.as_secs_f64(),
            mib(m.peak)
        ));
        before = Some((states, m.wall, m.peak));
    }
    md
}
