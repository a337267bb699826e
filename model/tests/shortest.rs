//! The counterexample search (`check::shortest_traces`, one breadth-first search of its
//! own) against stateright's own single-threaded BFS, whose visitor sees every state with
//! its path: on every CI scenario of three policies, both find a path for the same
//! properties, of the same length, and the same path (both visit in the model's action
//! order). The visitor rebuilds the path of every state, which is why the project no
//! longer uses it; here it is the reference.

use std::sync::{Arc, Mutex};

use cachelock_model::check::{CI_SCENARIOS, Kind3, shortest_traces};
use cachelock_model::machine::{Action, CacheModel, State};
use cachelock_model::properties::ALL;
use cachelock_model::{Policy, Scenario};
use stateright::{Checker, Model, Path};

type Found = Vec<(usize, Vec<(State, Option<Action>)>)>;

/// The first path stateright's BFS visits that shows each property's verdict.
fn by_visitor(model: &CacheModel) -> Found {
    let found: Arc<Mutex<Found>> = Arc::default();
    let sink = Arc::clone(&found);
    let probe = model.clone();
    model
        .clone()
        .checker()
        .threads(1)
        .visitor(move |path: Path<State, Action>| {
            let last = path.last_state();
            let mut done = sink.lock().unwrap();
            for (i, p) in ALL.iter().enumerate() {
                if done.iter().any(|(q, _)| *q == i) {
                    continue;
                }
                let shows = match p.expectation() {
                    Kind3::Always => !p.holds(&probe, last),
                    Kind3::Sometimes => p.holds(&probe, last),
                    Kind3::Eventually => !p.holds(&probe, last) && p.settled(&probe, last),
                };
                if shows {
                    done.push((i, path.clone().into_vec()));
                }
            }
        })
        .spawn_bfs()
        .join();
    let mut found = found.lock().unwrap().clone();
    found.sort_by_key(|(i, _)| *i);
    found
}

#[test]
fn the_search_finds_the_paths_stateright_s_bfs_finds() {
    let mut compared = 0;
    for policy in [Policy::Uv013, Policy::CachelockFenced, Policy::UvPr15977] {
        for text in CI_SCENARIOS.iter().filter(|s| s.split(',').count() <= 2) {
            let sc = Scenario::parse(text).unwrap();
            let model = CacheModel::new(policy, &sc);
            let reference = by_visitor(&model);
            let traces = shortest_traces(policy, &sc, &ALL);
            let ours: Vec<(usize, Vec<(State, Option<Action>)>)> = traces
                .into_iter()
                .map(|t| (ALL.iter().position(|p| *p == t.property).unwrap(), t.path))
                .collect();
            assert_eq!(
                ours.iter()
                    .map(|(i, p)| (ALL[*i].name(), p.len()))
                    .collect::<Vec<_>>(),
                reference
                    .iter()
                    .map(|(i, p)| (ALL[*i].name(), p.len()))
                    .collect::<Vec<_>>(),
                "{policy} on {text}: properties shown and path lengths"
            );
            assert_eq!(ours, reference, "{policy} on {text}: the same paths");
            compared += ours.len();
        }
    }
    assert!(compared > 50, "compared only {compared} paths");
}
