//! Running the checker: verdicts per (policy, scenario), shortest counterexamples as
//! stories, and the comparison with each policy's declared verdicts over the CI scenario
//! set (both in `crate::expect`).
//!
//! Verdicts come from stateright's DFS with symmetry reduction (fast, exhaustive).
//! Counterexamples come from one breadth-first search per pair (`crate::search`) that
//! keeps the first path showing each wanted property's verdict: stateright's own
//! discoveries are not the shortest, and a reviewer should read the shortest story.

use std::time::{Duration, Instant};

use stateright::Model;

use crate::expect::{self, Expected};
pub use crate::expect::{CI_SCENARIOS, ci_scenarios};
use crate::machine::{Action, CacheModel, State};
pub use crate::properties::{Kind3, PropertyName as Property};
use crate::protocol::{Policy, Scenario};
use crate::{search, story};

/// A property's verdict on one (policy, scenario).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `always`/`eventually`: no counterexample; `sometimes`: a witness exists.
    Holds,
    /// `always`/`eventually`: a counterexample exists; `sometimes`: unreachable.
    Fails,
    /// The scenario has nothing to say about the property.
    NotApplicable,
}

impl Verdict {
    /// `holds`, `fails` or `n/a`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// The result of checking one policy on one scenario.
#[derive(Clone, Debug)]
pub struct PairResult {
    pub policy: Policy,
    pub scenario: Scenario,
    /// Unique states explored (after symmetry reduction).
    pub states: usize,
    pub elapsed: Duration,
    pub verdicts: Vec<(Property, Verdict)>,
}

impl PairResult {
    /// The verdict of one property (`NotApplicable` if it was not checked).
    pub fn verdict(&self, property: Property) -> Verdict {
        self.verdicts
            .iter()
            .find(|(p, _)| *p == property)
            .map(|(_, v)| *v)
            .unwrap_or(Verdict::NotApplicable)
    }
}

/// Checks every applicable property of `policy` on `scenario`, exhaustively, with the
/// symmetry reduction.
pub fn check_pair(policy: Policy, scenario: &Scenario) -> PairResult {
    check_pair_with(policy, scenario, true)
}

/// As [`check_pair`]; `symmetry: false` explores every permutation of identical
/// processes (slower; used to test the reduction).
pub fn check_pair_with(policy: Policy, scenario: &Scenario, symmetry: bool) -> PairResult {
    check_model(CacheModel::new(policy, scenario), symmetry)
}

/// As [`check_pair_with`], checking only the listed properties (the others are
/// `NotApplicable` in the result). The search stops as soon as every listed property
/// has a discovery, so asking only for properties expected to fail (or, for
/// `sometimes`, to hold) is fast.
pub fn check_pair_only(
    policy: Policy,
    scenario: &Scenario,
    symmetry: bool,
    only: &[Property],
) -> PairResult {
    check_model(CacheModel::new(policy, scenario).checking(only), symmetry)
}

fn check_model(model: CacheModel, symmetry: bool) -> PairResult {
    let applicable = model.property_names();
    let start = Instant::now();
    let (shown, states) = search::reachable_goals(&model, symmetry, applicable.len(), |g, s| {
        shows(applicable[g], &model, s)
    });
    result(&model, &applicable, &shown, states, start.elapsed())
}

/// The result of a search that found which of the `applicable` properties have a state
/// showing their verdict (`shown`, in that order).
fn result(
    model: &CacheModel,
    applicable: &[Property],
    shown: &[bool],
    states: usize,
    elapsed: Duration,
) -> PairResult {
    let verdicts = crate::properties::ALL
        .iter()
        .map(|p| {
            let v = match applicable.iter().position(|q| q == p) {
                None => Verdict::NotApplicable,
                Some(g) => match (p.expectation(), shown[g]) {
                    (Kind3::Sometimes, true) | (Kind3::Always | Kind3::Eventually, false) => {
                        Verdict::Holds
                    }
                    _ => Verdict::Fails,
                },
            };
            (*p, v)
        })
        .collect();
    PairResult {
        policy: model.policy,
        scenario: model.scenario.clone(),
        states,
        elapsed,
        verdicts,
    }
}

/// [`check_pair`] and [`shortest_traces`] of its failing `always` and `eventually`
/// properties: the same results, from one breadth-first search instead of two searches
/// where that gives the same state count.
///
/// Without interchangeable processes the depth-first search remembers a state's own
/// fingerprint (its representative is itself). Unless every applicable property has a
/// state showing its verdict, both searches then see every reachable state, so the
/// breadth-first one finds the same verdicts and the same number of states. When every
/// property has such a state, the depth-first search stops early, at a count that
/// depends on its order, and with interchangeable processes it counts the classes it
/// reached from the states it happened to explore (fewer than the classes of all
/// reachable states in some scenarios): in those cases both searches run, as
/// [`check_pair`] then [`shortest_traces`]. `tests/search.rs` compares the results with
/// those two on every CI and mixed scenario.
pub fn check_pair_and_traces(policy: Policy, scenario: &Scenario) -> (PairResult, Vec<Trace>) {
    let model = CacheModel::new(policy, scenario);
    let two_searches = || {
        let r = check_pair(policy, scenario);
        let traces = shortest_traces(policy, scenario, &failing(&r));
        (r, traces)
    };
    if model.has_interchangeable_processes() {
        return two_searches();
    }
    let applicable = model.property_names();
    let start = Instant::now();
    let explored = search::breadth_first(&model, applicable.len(), |g, s| {
        shows(applicable[g], &model, s)
    });
    let shown: Vec<bool> = explored.paths.iter().map(Option::is_some).collect();
    if shown.iter().all(|s| *s) {
        return two_searches();
    }
    let r = result(
        &model,
        &applicable,
        &shown,
        explored.states,
        start.elapsed(),
    );
    let mut paths = explored.paths;
    let wanted: Vec<(Property, Option<Steps>)> = failing(&r)
        .into_iter()
        .map(|p| {
            let g = applicable.iter().position(|q| *q == p).expect("applicable");
            (p, paths[g].take())
        })
        .collect();
    (r, traces(&model, wanted))
}

/// The properties whose verdict a trace shows: the failing `always` and `eventually`
/// ones (a `sometimes` property fails for want of a witness, which no path shows).
pub fn failing(r: &PairResult) -> Vec<Property> {
    r.verdicts
        .iter()
        .filter(|(p, v)| *v == Verdict::Fails && p.expectation() != Kind3::Sometimes)
        .map(|(p, _)| *p)
        .collect()
}

type Steps = Vec<(State, Option<Action>)>;

/// A shortest path showing a property's verdict: a counterexample for a failing
/// `always`/`eventually` property, a witness for a `sometimes` one.
#[derive(Clone, Debug)]
pub struct Trace {
    pub property: Property,
    pub path: Vec<(State, Option<Action>)>,
    /// The numbered story.
    pub story: Vec<String>,
}

/// True when state `s` shows `p`'s verdict: it breaks an `always` property, meets a
/// `sometimes` one's witness, or is a quiescent state that misses an `eventually` goal.
fn shows(p: Property, model: &CacheModel, s: &State) -> bool {
    match p.expectation() {
        Kind3::Always => !p.holds(model, s),
        Kind3::Sometimes => p.holds(model, s),
        Kind3::Eventually => !p.holds(model, s) && p.settled(model, s),
    }
}

/// Finds, by one breadth-first search, the shortest counterexample (or witness) of each
/// listed property. Properties with none are left out.
pub fn shortest_traces(policy: Policy, scenario: &Scenario, wanted: &[Property]) -> Vec<Trace> {
    let model = CacheModel::new(policy, scenario);
    let paths = search::shortest_paths(&model, wanted.len(), |g, s| shows(wanted[g], &model, s));
    traces(&model, wanted.iter().copied().zip(paths).collect())
}

/// The traces of the properties that have a path, told as stories, in property order.
fn traces(model: &CacheModel, paths: Vec<(Property, Option<Steps>)>) -> Vec<Trace> {
    let mut traces: Vec<Trace> = paths
        .into_iter()
        .filter_map(|(property, path)| {
            let path = path?;
            let story = story::tell(model, &path, property);
            Some(Trace {
                property,
                path,
                story,
            })
        })
        .collect();
    traces.sort_by_key(|t| t.property);
    traces
}

/// A cell of the verdict table: a property's verdicts for one policy over the scenario
/// set, and whether they match the policy's declaration.
#[derive(Clone, Debug)]
pub struct Cell {
    pub property: Property,
    /// Scenarios where the property fails (for `sometimes`: is unreachable).
    pub failing: Vec<String>,
    /// Scenarios where it applies at all.
    pub applicable: usize,
    pub expected: Expected,
}

impl Cell {
    /// True when the observed failing set is the declared one.
    pub fn as_declared(&self) -> bool {
        let mut want: Vec<&str> = self.expected.failing();
        let mut got: Vec<&str> = self.failing.iter().map(String::as_str).collect();
        want.sort_unstable();
        got.sort_unstable();
        want == got
    }

    /// The cell's text: `holds`, `fails: SCENARIO (+N)` or `n/a`.
    pub fn text(&self) -> String {
        if self.applicable == 0 {
            "n/a".into()
        } else if self.failing.is_empty() {
            "holds".into()
        } else if self.failing.len() == 1 {
            format!("fails: {}", self.failing[0])
        } else {
            format!("fails: {} (+{})", self.failing[0], self.failing.len() - 1)
        }
    }
}

/// One policy's row.
#[derive(Clone, Debug)]
pub struct Row {
    pub policy: Policy,
    /// The scenario set the row covers.
    pub set: ScenarioSet,
    pub cells: Vec<Cell>,
    pub pairs: Vec<PairResult>,
    pub states: usize,
    pub elapsed: Duration,
}

impl Row {
    /// True when every cell is as declared.
    pub fn as_declared(&self) -> bool {
        self.cells.iter().all(Cell::as_declared)
    }
}

/// Checks one policy against a scenario set and compares with its declaration.
/// `progress` is called after each scenario.
pub fn check_policy(
    policy: Policy,
    scenarios: &[Scenario],
    progress: &mut dyn FnMut(&PairResult),
) -> Row {
    check_policy_against(policy, scenarios, ScenarioSet::Ci, progress)
}

/// Which declared scenario set a row is judged against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioSet {
    /// [`CI_SCENARIOS`], declared by `expect::expected`.
    Ci,
    /// [`crate::expect::MIXED_SCENARIOS`] (beside old uv), declared by
    /// `expect::expected_mixed`.
    Mixed,
}

impl ScenarioSet {
    /// The declaration of `property` for `policy` in this set.
    pub fn expected(self, policy: Policy, property: Property) -> Expected {
        match self {
            ScenarioSet::Ci => expect::expected(policy, property),
            ScenarioSet::Mixed => expect::expected_mixed(policy, property),
        }
    }
}

/// Checks one policy against the mixed scenarios (beside old uv) and compares with its
/// declaration for them.
pub fn check_policy_mixed(policy: Policy, progress: &mut dyn FnMut(&PairResult)) -> Row {
    let scenarios = expect::mixed_scenarios();
    check_policy_against(policy, &scenarios, ScenarioSet::Mixed, progress)
}

fn check_policy_against(
    policy: Policy,
    scenarios: &[Scenario],
    set: ScenarioSet,
    progress: &mut dyn FnMut(&PairResult),
) -> Row {
    let mut pairs = Vec::new();
    for sc in scenarios {
        let r = check_pair(policy, sc);
        progress(&r);
        pairs.push(r);
    }
    let cells = crate::properties::ALL
        .iter()
        .map(|p| {
            let failing = pairs
                .iter()
                .filter(|r| r.verdict(*p) == Verdict::Fails)
                .map(|r| r.scenario.to_string())
                .collect();
            let applicable = pairs
                .iter()
                .filter(|r| r.verdict(*p) != Verdict::NotApplicable)
                .count();
            Cell {
                property: *p,
                failing,
                applicable,
                expected: set.expected(policy, *p),
            }
        })
        .collect();
    Row {
        policy,
        set,
        states: pairs.iter().map(|r| r.states).sum(),
        elapsed: pairs.iter().map(|r| r.elapsed).sum(),
        cells,
        pairs,
    }
}

/// The machine-readable form of one checked pair.
pub fn pair_json(r: &PairResult, traces: &[Trace]) -> serde_json::Value {
    let properties: Vec<serde_json::Value> = r
        .verdicts
        .iter()
        .map(|(p, v)| {
            let trace = traces.iter().find(|t| t.property == *p);
            serde_json::json!({
                "property": p.name(),
                "kind": match p.expectation() {
                    Kind3::Always => "always",
                    Kind3::Eventually => "eventually",
                    Kind3::Sometimes => "sometimes",
                },
                "verdict": v.name(),
                "counterexample": match (v, p.expectation(), trace) {
                    (Verdict::Fails, Kind3::Always | Kind3::Eventually, Some(t)) => serde_json::json!(t.story),
                    _ => serde_json::Value::Null,
                },
            })
        })
        .collect();
    serde_json::json!({
        "policy": r.policy.name(),
        "scenario": r.scenario.to_string(),
        "states": r.states,
        "seconds": r.elapsed.as_secs_f64(),
        "properties": properties,
    })
}

/// Serves stateright's Explorer (a web UI to walk the state space) for one pair. Blocks.
pub fn serve_explorer(policy: Policy, scenario: &Scenario, addr: std::net::SocketAddr) {
    CacheModel::new(policy, scenario).checker().serve(addr);
}

/// Every way each process of `scenario` can end under `policy`: for every reachable
/// state in which nothing more can happen but a kill (and nothing was killed), what each
/// process is then (done with its outcome, waiting for ever at a lock, its child still
/// running); `waits at STEP for P` for every process P that holds, in some reachable
/// state, the lock it waits for; and `lost its environment` if some reachable state,
/// with or without a kill, has its child or daemon running without its environment or
/// its spawn failing for lack of it. One entry per process, in scenario order.
pub fn process_ends(policy: Policy, scenario: &Scenario) -> Vec<(String, Vec<String>)> {
    use crate::state::{Child, Daemon, Life, Outcome};
    let model = CacheModel::new(policy, scenario);
    let n = model.procs.len();
    let mut all: Vec<Vec<String>> = vec![Vec::new(); n];
    search::each_state(&model, |s| {
        let m = &model;
        let mut notes: Vec<(usize, String)> = Vec::new();
        for p in 0..n {
            let st = &s.procs[p];
            let using = st.child == Child::Running || st.daemon == Daemon::Running;
            if st.child == Child::FailedToSpawn
                || st.life == Life::Done(Outcome::EnvVanished)
                || (using && !m.env_present(s, p))
            {
                notes.push((p, "lost its environment".into()));
            }
        }
        for p in 0..n {
            let st = &s.procs[p];
            if st.life != Life::Waiting {
                continue;
            }
            let Some(step) = m.next_step(s, p) else {
                continue;
            };
            let blockers: Vec<usize> = match (step, st.root_fd) {
                (
                    crate::protocol::Step::LockShared | crate::protocol::Step::LockExclusive,
                    Some(fd),
                ) => (0..n)
                    .filter(|&q| {
                        q != p
                            && s.procs[q].root_fd.is_some_and(|o| {
                                o.inode == fd.inode
                                    && o.lock.is_some_and(|l| {
                                        step == crate::protocol::Step::LockExclusive
                                            || l == crate::protocol::Mode::Exclusive
                                    })
                            })
                    })
                    .collect(),
                (crate::protocol::Step::AwaitAnnouncedCleans, _) => {
                    (0..n).filter(|&c| st.awaited & (1 << c) != 0).collect()
                }
                _ => Vec::new(),
            };
            for q in blockers {
                notes.push((p, format!("waits at `{step}` for `{}`", m.procs[q].label)));
            }
        }
        let killed = s.procs.iter().any(|st| st.life == Life::Killed);
        if m.quiescent(s) && !killed {
            for p in 0..n {
                let st = &s.procs[p];
                let end = match (st.life, m.next_step(s, p)) {
                    (Life::Waiting, Some(step)) => format!("waits at `{step}` for ever"),
                    (Life::Ready, Some(crate::protocol::Step::WaitForChild))
                        if st.child == Child::Running =>
                    {
                        "its child runs for ever".into()
                    }
                    (Life::Done(o), _) => match o {
                        Outcome::Ok => "done".into(),
                        Outcome::NoCache => "no cache found (exit 0)".into(),
                        Outcome::TimedOut => "times out (exit 2)".into(),
                        Outcome::GaveUp => "gives up (exit 0, nothing deleted)".into(),
                        Outcome::SpawnFailed => "fails to spawn".into(),
                        Outcome::EnvVanished => "its environment vanishes".into(),
                        Outcome::RootVanished => "the root vanishes".into(),
                        Outcome::RootNotEmpty => "root not empty (exit 2)".into(),
                    },
                    _ if m.finished(s, p) => "never invoked".into(),
                    (_, Some(step)) => format!("stops at `{step}`"),
                    _ => "done".into(),
                };
                notes.push((p, end));
            }
        }
        for (p, note) in notes {
            if !all[p].contains(&note) {
                all[p].push(note);
            }
        }
    });
    for ends in &mut all {
        ends.sort();
    }
    model
        .procs
        .iter()
        .map(|info| info.label.clone())
        .zip(all)
        .collect()
}
