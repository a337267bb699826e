//! The model's counterexamples, replayed for real.
//!
//! For every property a policy breaks in a CI scenario of up to three processes that
//! the real harness can play (no nested cleans), the shortest counterexample is replayed step by step on
//! real processes under that policy: every step must conform, and the violation must be
//! visible for real. Then the same sequence is replayed under each main policy that
//! keeps the property there: it must conform and not break it.

use std::path::Path;

use cachelock::cache::{BUILD_INFIX, BUILDS_DIR, ENV_MARKER, ENVIRONMENTS_DIR};

use cachelock_conformance::lockstep::{Lockstep, Op, Outcome};
use cachelock_model::check::{self, Kind3, Property, Verdict};
use cachelock_model::machine::CacheModel;
use cachelock_model::{EnvName, Event, Kind, Mode, Policy, Scenario, Step};

const DRIVER: &str = env!("CARGO_BIN_EXE_cl-driver");

/// The counterexample's ops, then one more attempt by every process: in a final state
/// where nothing can happen (deadlock, a clean that never finishes), the lockstep
/// harness checks that each real process is indeed blocked.
fn ops_of(trace: &check::Trace, n: usize) -> Vec<Op> {
    let mut ops: Vec<Op> = trace
        .path
        .iter()
        .filter_map(|(_, a)| a.map(Op::from_action))
        .collect();
    ops.extend((0..n).map(Op::Advance));
    ops
}

fn play(policy: Policy, sc: &Scenario, ops: &[Op]) -> Outcome {
    let harness = Lockstep::new(policy, sc, Path::new(DRIVER)).expect("harness");
    harness
        .play(ops)
        .unwrap_or_else(|story| panic!("replay under {policy} on {sc} did not conform:\n{story}"))
}

/// Evidence of the violation on the real side, read only from what the harness saw
/// (`/proc/locks`, the cache directory, the drivers' answers and exit statuses, the
/// children's reports), never from the model's state: `None` when nothing real shows it.
fn real_evidence(model: &CacheModel, property: Property, out: &Outcome) -> Option<String> {
    match property {
        Property::LiveEnvIntact => {
            let failed = out
                .outcomes
                .iter()
                .find(|(_, _, o)| o.starts_with("failed"))
                .map(|(p, s, o)| format!("process {p}: {s}: {o}"));
            let missing = out
                .child_reports
                .iter()
                .find(|(_, r)| r.starts_with("missing"))
                .map(|(p, r)| format!("child of process {p} reported: {r}"));
            failed.or(missing)
        }
        Property::MutualExclusion | Property::RootLockExclusion => deleted_under_holder(out),
        Property::NoDeadlock => all_blocked(out),
        Property::CleanTerminates => clean_waiting(model, out),
        Property::CleanSucceeds => clean_waiting(model, out)
            .or_else(|| clean_failed(model, out))
            .or_else(|| clean_gave_up(model, out)),
        Property::NoOvertaking => run_overtook(model, out),
        Property::NoLeakedTemp => temp_leaked(out).or_else(|| temp_left_by_prune(model, out)),
        Property::CleanRemovesUnused => unused_env_left(model, out),
        Property::CleanOverlapsChild | Property::RunsShareLock => None,
    }
}

/// A real `delete-entries` or `move-to-trash` ran (the driver answered done or skipped) while another
/// process's driver held a flock on its `.lock` descriptor, per `/proc/locks`, both just
/// before and just after the step; the paths it removed are part of the evidence (none
/// when an earlier clean had already emptied the cache: the deletion still ran unguarded).
fn deleted_under_holder(out: &Outcome) -> Option<String> {
    out.seen.iter().find_map(|s| {
        if !matches!(s.step, Some(Step::DeleteEntries | Step::MoveToTrash))
            || !(s.outcome == "done" || s.outcome.starts_with("skipped"))
        {
            return None;
        }
        let removed: Vec<_> = s.entries_before.difference(&s.entries_after).collect();
        let (q, mode) = s
            .holders_before
            .iter()
            .find(|h| h.0 != s.proc && s.holders_after.contains(h))?;
        Some(format!(
            "process {} ran delete-entries ({}) while process {q} held the cache lock {mode:?} \
             (/proc/locks before and after the step); it removed {} paths {:?}",
            s.proc,
            s.outcome,
            removed.len(),
            removed.iter().take(3).collect::<Vec<_>>()
        ))
    })
}

/// When the ops were done, every live driver's last attempt would have blocked, on a
/// root lock some other driver held (per `/proc/locks`), or on a child, and no child or
/// daemon ran that could still change anything.
fn all_blocked(out: &Outcome) -> Option<String> {
    let live: Vec<usize> = (0..out.exits.len())
        .filter(|p| out.exits[*p].is_none())
        .collect();
    if live.is_empty() || out.children_running.iter().any(|r| *r) {
        return None;
    }
    let mut why = Vec::new();
    for p in &live {
        let last = out.seen.iter().rev().find(|s| s.proc == *p)?;
        if last.outcome != "would-block" {
            return None;
        }
        let step = last.step?;
        if matches!(step, Step::LockShared | Step::LockExclusive) {
            let holder = last.holders_after.iter().find(|(q, _)| q != p)?;
            why.push(format!(
                "process {p} blocked in {step} (held by process {})",
                holder.0
            ));
        } else {
            why.push(format!("process {p} blocked in {step}"));
        }
    }
    Some(why.join(", "))
}

/// A real clean still waiting when the ops were done: its driver alive, its last attempt
/// answered would-block, and no exclusive flock of its own in `/proc/locks`.
fn clean_waiting(model: &CacheModel, out: &Outcome) -> Option<String> {
    (0..out.exits.len()).find_map(|c| {
        if !model.procs[c].kind.is_clean() || out.exits[c].is_some() {
            return None;
        }
        let last = out.seen.iter().rev().find(|s| s.proc == c)?;
        let held = last.holders_after.contains(&(c, Mode::Exclusive));
        (last.outcome == "would-block" && !held).then(|| {
            format!(
                "clean (process {c}) still waiting in {} when all was done; cache lock held by {:?}",
                last.step.map_or("?", Step::name),
                last.holders_after
            )
        })
    })
}

/// A real clean that ended with a non-zero exit code on its own (not killed, not timed
/// out by the harness): a failure.
fn clean_failed(model: &CacheModel, out: &Outcome) -> Option<String> {
    (0..out.exits.len()).find_map(|c| {
        let code = out.exits[c]?;
        let timed_out = out
            .seen
            .iter()
            .any(|s| s.proc == c && s.event.is_some_and(|e| e != Event::ChildExits));
        (model.procs[c].kind.is_clean() && code != 0 && !timed_out).then(|| {
            let how = out
                .seen
                .iter()
                .rev()
                .find(|s| s.proc == c)
                .map_or(String::new(), |s| s.outcome.clone());
            format!("clean (process {c}) exited {code}: {how}")
        })
    })
}

/// A real clean that gave up on a busy lock (its lock step answered gave-up): it exits
/// 0 having deleted nothing.
fn clean_gave_up(model: &CacheModel, out: &Outcome) -> Option<String> {
    out.seen.iter().find_map(|s| {
        (model.procs[s.proc].kind.is_clean() && s.outcome == "gave-up").then(|| {
            format!(
                "clean (process {}) gave up at {} and deleted nothing",
                s.proc,
                s.step.map_or("?", Step::name)
            )
        })
    })
}

/// A real run held the cache lock (its driver's flock in `/proc/locks`, right after its
/// lock step) while a clean that had started before the run was alive and had not yet
/// got the cache (no lock step of its own answered done or proceeded-unlocked, and no
/// exclusive flock of its own in `/proc/locks`).
fn run_overtook(model: &CacheModel, out: &Outcome) -> Option<String> {
    let first = |p: usize| {
        out.seen
            .iter()
            .position(|s| s.proc == p && s.step.is_some())
    };
    out.seen.iter().enumerate().find_map(|(i, s)| {
        let r = s.proc;
        if !model.procs[r].kind.is_run()
            || !matches!(s.step, Some(Step::LockShared | Step::LockExclusive))
            || s.outcome != "done"
            || !s.holders_after.iter().any(|(q, _)| *q == r)
        {
            return None;
        }
        let run_start = first(r)?;
        (0..model.procs.len()).find_map(|c| {
            let started_before = first(c).is_some_and(|f| f < run_start);
            let got = out.seen[..=i].iter().any(|t| {
                t.proc == c
                    && t.step == Some(Step::LockExclusive)
                    && matches!(t.outcome.as_str(), "done" | "proceeded-unlocked")
            });
            let holds = s.holders_after.contains(&(c, Mode::Exclusive));
            (model.procs[c].kind.is_clean() && started_before && s.alive_after[c] && !got && !holds)
                .then(|| {
                    format!(
                        "process {r} (a run) held the cache lock {:?} while process {c} (a clean \
                         started before it) had not got it",
                        s.holders_after
                    )
                })
        })
    })
}

/// Every driver ended on its own (none killed), no child or daemon ran, and a temporary
/// cache was still on disk once all had gone.
fn temp_leaked(out: &Outcome) -> Option<String> {
    let ended = out.exits.iter().all(|e| e.is_some_and(|c| c != 128 + 9));
    (ended && !out.children_running.iter().any(|r| *r) && !out.leftover_temp.is_empty()).then(
        || {
            format!(
                "after all exited ({:?}), on disk: {:?}",
                out.exits, out.leftover_temp
            )
        },
    )
}

/// A process was killed; a prune took its first step only after that, and every step of
/// its program; and when all was over no child ran and a temporary cache was still on
/// disk.
fn temp_left_by_prune(model: &CacheModel, out: &Outcome) -> Option<String> {
    let killed = out
        .seen
        .iter()
        .position(|s| s.event == Some(Event::Killed))?;
    let victim = out.seen[killed].proc;
    let prune = (0..model.procs.len()).find(|&p| {
        let steps = || {
            out.seen
                .iter()
                .enumerate()
                .filter(move |(_, s)| s.proc == p && s.step.is_some())
        };
        let started_before = steps().any(|(i, _)| i <= killed);
        let done_after = steps()
            .filter(|(i, s)| {
                *i > killed && (s.outcome == "done" || s.outcome.starts_with("skipped"))
            })
            .count();
        model.procs[p].kind == Kind::Prune
            && !started_before
            && done_after == model.procs[p].program.len()
    })?;
    (!out.children_running.iter().any(|r| *r) && !out.leftover_temp.is_empty()).then(|| {
        format!(
            "process {victim} was killed, prune (process {prune}) then ran every step, and on disk: {:?}",
            out.leftover_temp
        )
    })
}

/// A real clean finished its work (delete-entries done or skipped, or gave up), and
/// right after it an environment was still on disk, its lock file not locked by anyone
/// (a probe), and no process of that environment had claimed it or ran a child.
fn unused_env_left(model: &CacheModel, out: &Outcome) -> Option<String> {
    out.seen.iter().enumerate().find_map(|(i, s)| {
        let c = s.proc;
        let finished_work = (matches!(s.step, Some(Step::DeleteEntries | Step::MoveToTrash))
            && (s.outcome == "done" || s.outcome.starts_with("skipped")))
            || (s.step == Some(Step::LockExclusive) && s.outcome == "gave-up");
        if !model.procs[c].kind.is_clean() || !finished_work {
            return None;
        }
        EnvName::CACHED.iter().enumerate().find_map(|(e, env)| {
            let used = (0..model.procs.len()).any(|q| {
                model.procs[q].kind.env() == Some(*env)
                    && ((s.alive_after[q]
                        && out.seen[..=i].iter().any(|t| {
                            t.proc == q
                                && matches!(t.step, Some(Step::LockEnv | Step::BuildEnv))
                                && matches!(t.outcome.as_str(), "done" | "reused")
                        }))
                        || s.real_after.procs[q].child_running
                        || s.real_after.procs[q].daemon_running)
            });
            // On disk: the environment (its marker), or a build of it left behind.
            let name = env.dir_name();
            let marker = Path::new(ENVIRONMENTS_DIR).join(name).join(ENV_MARKER);
            let build = format!("{name}{BUILD_INFIX}");
            let on_disk = s.entries_after.iter().find(|path| {
                **path == marker
                    || (path.parent() == Some(Path::new(BUILDS_DIR))
                        && path.to_string_lossy().contains(&build))
            })?;
            (!s.real_after.env_locked[e] && !used).then(|| {
                format!(
                    "clean (process {c}) finished its work ({}) and `{}` of environment `{name}` was \
                     still on disk, its lock free, nobody using it",
                    s.outcome,
                    on_disk.display()
                )
            })
        })
    })
}

#[test]
fn every_counterexample_happens_for_real_and_not_under_the_policies_that_keep_it() {
    let mut replayed = 0;
    let mut cross = 0;
    for sc in check::ci_scenarios() {
        // The four-process CI scenario is left out: its breadth-first searches alone
        // take half a minute in a test build; its properties are broken in the smaller
        // scenarios too.
        if !cachelock_conformance::lockstep::playable(&sc) || sc.procs.len() > 3 {
            continue;
        }
        let verdicts: Vec<(Policy, check::PairResult)> = Policy::ALL
            .iter()
            .map(|p| (*p, check::check_pair(*p, &sc)))
            .collect();
        let verdict = |p: Policy, prop: Property| {
            verdicts
                .iter()
                .find(|(q, _)| *q == p)
                .map_or(Verdict::NotApplicable, |(_, r)| r.verdict(prop))
        };
        for (policy, r) in &verdicts {
            let policy = *policy;
            let failing: Vec<Property> = r
                .verdicts
                .iter()
                .filter(|(p, v)| *v == Verdict::Fails && p.expectation() != Kind3::Sometimes)
                .map(|(p, _)| *p)
                .collect();
            for trace in check::shortest_traces(policy, &sc, &failing) {
                let model = CacheModel::new(policy, &sc);
                let ops = ops_of(&trace, model.procs.len());
                let out = play(policy, &sc, &ops);
                let property = trace.property;
                assert!(
                    property.expectation() == Kind3::Eventually
                        || !property.holds(&model, &out.state),
                    "{policy} on {sc}: replaying the {property} counterexample did not break it"
                );
                let evidence = real_evidence(&model, property, &out).unwrap_or_else(|| {
                    panic!(
                        "{policy} on {sc}: {property} broken in the model but no real evidence:\n{}",
                        out.story.join("\n")
                    )
                });
                if std::env::var_os("CACHELOCK_REPLAY_VERBOSE").is_some() {
                    eprintln!("{policy} / {sc} / {property}: {evidence}");
                }
                replayed += 1;
                for keeper in [
                    Policy::Uv0820,
                    Policy::Uv013,
                    Policy::UvPr15977,
                    Policy::Cachelock,
                ] {
                    if keeper == policy || verdict(keeper, property) != Verdict::Holds {
                        continue;
                    }
                    let kept = play(keeper, &sc, &ops);
                    let m = CacheModel::new(keeper, &sc);
                    assert!(
                        property.expectation() == Kind3::Eventually
                            || property.holds(&m, &kept.state),
                        "{keeper} on {sc}: {property} broken by {policy}'s trace"
                    );
                    // An `always` property the keeper keeps shows no real violation
                    // either: the evidence is not something every replay produces.
                    if property.expectation() == Kind3::Always {
                        let seen = real_evidence(&m, property, &kept);
                        assert!(
                            seen.is_none(),
                            "{keeper} on {sc}: {property} broken for real on {policy}'s trace: {}\n{}",
                            seen.unwrap_or_default(),
                            kept.story.join("\n")
                        );
                    }
                    cross += 1;
                }
            }
        }
    }
    eprintln!(
        "replayed {replayed} counterexamples for real, and {cross} under policies that keep them"
    );
    assert!(replayed >= 40, "only {replayed} counterexamples replayed");
}

#[test]
fn uv_issue_15967_happens_for_real_under_uv_0_8_19() {
    let sc = Scenario::parse("run-no-cache").unwrap();
    let trace = check::shortest_traces(Policy::Uv0819, &sc, &[Property::LiveEnvIntact]).remove(0);
    let out = play(Policy::Uv0819, &sc, &ops_of(&trace, 1));
    let spawn = out
        .outcomes
        .iter()
        .find(|(_, step, _)| *step == Step::SpawnChild)
        .expect("a spawn step");
    assert!(
        spawn.2.starts_with("failed") && spawn.2.contains("temporary cache was removed"),
        "{spawn:?}"
    );
}
