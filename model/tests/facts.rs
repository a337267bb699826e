//! The facts from uv's history that the model must reproduce, each with its shortest
//! counterexample told as a story. A change to the model that moves one of these fails
//! here.

use cachelock_model::check::{Property, Verdict, check_pair, check_pair_with, shortest_traces};
use cachelock_model::{Policy, Scenario};

fn verdict(policy: Policy, scenario: &str, property: Property) -> Verdict {
    check_pair(policy, &Scenario::parse(scenario).unwrap()).verdict(property)
}

fn story(policy: Policy, scenario: &str, property: Property) -> String {
    let sc = Scenario::parse(scenario).unwrap();
    let traces = shortest_traces(policy, &sc, &[property]);
    assert_eq!(
        traces.len(),
        1,
        "{policy} {scenario}: no trace for {property}"
    );
    traces[0].story.join("\n")
}

#[test]
fn uv_0_8_19_breaks_live_env_intact_with_one_no_cache_run() {
    assert_eq!(
        verdict(Policy::Uv0819, "run-no-cache", Property::LiveEnvIntact),
        Verdict::Fails
    );
    assert_eq!(
        story(Policy::Uv0819, "run-no-cache", Property::LiveEnvIntact),
        "\
1. run-no-cache#1: create-temp-cache -> creates its temporary cache, locked shared
2. run-no-cache#1: build-env -> starts building its environment in the temporary cache
3. run-no-cache#1: persist-env -> its environment in the temporary cache is in place
4. run-no-cache#1: drop-temp-cache -> removes its temporary cache
5. run-no-cache#1: spawn-child -> fails: its environment in the temporary cache is gone
=> live-env-intact: violated: run-no-cache#1 lost its environment in the temporary cache"
    );
}

#[test]
fn uv_0_8_20_breaks_mutual_exclusion_through_the_orphaned_lock_inode() {
    assert_eq!(
        verdict(Policy::Uv0820, "run,clean,clean", Property::LiveEnvIntact),
        Verdict::Fails
    );
    assert_eq!(
        story(Policy::Uv0820, "run,clean,clean", Property::MutualExclusion),
        "\
1. run#1: create-scaffold -> creates the cache root and scaffold
2. run#1: open-lock-file -> opens .lock (inode 0)
3. clean#1: open-lock-file -> opens .lock (inode 0)
4. clean#1: lock-exclusive -> acquired exclusive on .lock inode 0
5. clean#1: delete-entries -> deletes the scaffold (no environment)
6. clean#1: release-root-lock -> releases the lock on .lock
7. run#1: lock-shared -> acquired shared on .lock inode 0
8. clean#1: unlink-lock-file -> unlinks .lock (inode 0)
9. clean#2: open-lock-file -> creates .lock (inode 1)
10. clean#2: lock-exclusive -> acquired exclusive on .lock inode 1
11. clean#2: delete-entries -> deletes the scaffold (no environment) while run#1 holds the lock
=> mutual-exclusion: violated: an entry was deleted while another process held the lock that protects it"
    );
}

#[test]
fn uv_0_13_keeps_the_lock_safe_where_0_8_20_did_not() {
    for sc in ["run,clean,clean", "run-script,clean"] {
        for p in [Property::MutualExclusion, Property::LiveEnvIntact] {
            assert_eq!(verdict(Policy::Uv013, sc, p), Verdict::Holds, "{sc} {p}");
        }
    }
}

#[test]
fn uv_0_13_loses_live_envs_to_force_kill_and_daemons() {
    for sc in [
        "run-script,clean-force",
        "run+crash,clean",
        "run-daemon,clean",
    ] {
        assert_eq!(
            verdict(Policy::Uv013, sc, Property::LiveEnvIntact),
            Verdict::Fails,
            "{sc}"
        );
    }
    assert_eq!(
        story(Policy::Uv013, "run+crash,clean", Property::LiveEnvIntact),
        "\
1. run#1: open-lock-file -> opens .lock (inode 0)
2. run#1: lock-shared -> acquired shared on .lock inode 0
3. run#1: create-scaffold -> creates the cache root and scaffold
4. run#1: build-env -> starts building environment `with`
5. run#1: persist-env -> environment `with` is in place
6. run#1: spawn-child -> the child runs
7. run#1: killed -> SIGKILL: its descriptors close; its child keeps running
8. clean#1: open-lock-file -> opens .lock (inode 0)
9. clean#1: lock-exclusive -> acquired exclusive on .lock inode 0
10. clean#1: delete-entries -> deletes environment with
=> live-env-intact: violated: run#1 lost environment `with`"
    );
}

#[test]
fn uv_0_13_clean_waits_forever_behind_a_server() {
    assert_eq!(
        verdict(Policy::Uv013, "run-server,clean", Property::CleanTerminates),
        Verdict::Fails
    );
    // The lock timeout ends the wait (exit 2): the clean terminates, but does not succeed.
    assert_eq!(
        verdict(
            Policy::Uv013,
            "run-server,clean+timeout",
            Property::CleanTerminates
        ),
        Verdict::Holds
    );
    for sc in ["run-server,clean", "run-server,clean+timeout"] {
        assert_eq!(
            verdict(Policy::Uv013, sc, Property::CleanSucceeds),
            Verdict::Fails,
            "{sc}"
        );
    }
    let s = story(Policy::Uv013, "run-server,clean", Property::CleanTerminates);
    assert!(
        s.ends_with(
            "8. clean#1: lock-exclusive -> busy: waits (.lock inode 0)\n\
             => clean-terminates: violated: nothing more can happen and a clean never ends \
             (run-server#1 waits for its child; clean#1 waits at lock-exclusive)"
        ),
        "{s}"
    );
    let s = story(
        Policy::Uv013,
        "run-server,clean+timeout",
        Property::CleanSucceeds,
    );
    assert!(
        s.ends_with(
            "=> clean-succeeds: violated: nothing more can happen but a lock timeout and a clean \
             did not succeed (run-server#1 waits for its child; clean#1 waits at lock-exclusive)"
        ),
        "{s}"
    );
}

/// A kill may happen; it need not. A server's run that may be killed still blocks the
/// clean on the behaviour where it is not, and the counterexample has no kill in it.
#[test]
fn a_possible_kill_does_not_rescue_a_clean_behind_a_server() {
    for policy in [Policy::Uv0820, Policy::Uv013] {
        for sc in [
            "run-server+crash,clean",
            "run-server,clean+crash",
            "run-nested-clean+crash",
        ] {
            for p in [Property::CleanTerminates, Property::CleanSucceeds] {
                assert_eq!(verdict(policy, sc, p), Verdict::Fails, "{policy} {sc} {p}");
                let s = story(policy, sc, p);
                assert!(!s.contains("killed"), "{policy} {sc} {p}:\n{s}");
            }
        }
    }
    assert_eq!(
        story(
            Policy::Uv013,
            "run-server+crash,clean",
            Property::CleanTerminates
        ),
        "\
1. run-server#1: open-lock-file -> opens .lock (inode 0)
2. run-server#1: lock-shared -> acquired shared on .lock inode 0
3. run-server#1: create-scaffold -> creates the cache root and scaffold
4. run-server#1: build-env -> starts building environment `with`
5. run-server#1: persist-env -> environment `with` is in place
6. run-server#1: spawn-child -> the child runs
7. clean#1: open-lock-file -> opens .lock (inode 0)
8. clean#1: lock-exclusive -> busy: waits (.lock inode 0)
=> clean-terminates: violated: nothing more can happen but a kill and a clean never ends \
(run-server#1 waits for its child; clean#1 waits at lock-exclusive)"
    );
}

#[test]
fn uv_0_8_20_nested_clean_escapes_its_deadlock_through_a_fresh_lock_inode() {
    assert_eq!(
        verdict(
            Policy::Uv0820,
            "run-nested-clean,clean",
            Property::LiveEnvIntact
        ),
        Verdict::Fails
    );
    // No crash, no --force: the other clean unlinks .lock after the run locked it, and
    // the nested clean creates and locks a fresh inode nobody else holds.
    assert_eq!(
        story(
            Policy::Uv0820,
            "run-nested-clean,clean",
            Property::LiveEnvIntact
        ),
        "\
1. run-nested-clean#1: create-scaffold -> creates the cache root and scaffold
2. run-nested-clean#1: open-lock-file -> opens .lock (inode 0)
3. clean#1: open-lock-file -> opens .lock (inode 0)
4. clean#1: lock-exclusive -> acquired exclusive on .lock inode 0
5. clean#1: delete-entries -> deletes the scaffold (no environment)
6. clean#1: release-root-lock -> releases the lock on .lock
7. run-nested-clean#1: lock-shared -> acquired shared on .lock inode 0
8. run-nested-clean#1: build-env -> starts building environment `with`
9. run-nested-clean#1: persist-env -> environment `with` is in place
10. run-nested-clean#1: spawn-child -> the child runs
11. clean#1: unlink-lock-file -> unlinks .lock (inode 0)
12. nested-clean#1: open-lock-file -> creates .lock (inode 1)
13. nested-clean#1: lock-exclusive -> acquired exclusive on .lock inode 1
14. nested-clean#1: delete-entries -> deletes environment with while run-nested-clean#1 holds the lock
=> live-env-intact: violated: run-nested-clean#1 lost environment `with`"
    );
    // uv 0.13 keeps .lock: the nested clean deadlocks instead.
    assert_eq!(
        verdict(
            Policy::Uv013,
            "run-nested-clean,clean",
            Property::LiveEnvIntact
        ),
        Verdict::Holds
    );
}

#[test]
fn cachelock_cleans_succeed_beside_a_server_a_daemon_and_a_nested_clean() {
    for sc in [
        "run-server,clean",
        "run-server,clean+timeout",
        "run-daemon,clean",
        "run-nested-clean",
        "run-nested-clean,clean",
        "run-server+crash,clean",
    ] {
        for p in [Property::CleanTerminates, Property::CleanSucceeds] {
            assert_eq!(
                verdict(Policy::Cachelock, sc, p),
                Verdict::Holds,
                "{sc} {p}"
            );
        }
    }
}

#[test]
fn uv_0_8_19_clean_ends_but_fails_when_a_run_refills_the_root() {
    assert_eq!(
        verdict(Policy::Uv0819, "run,clean,run", Property::CleanTerminates),
        Verdict::Holds
    );
    assert_eq!(
        verdict(Policy::Uv0819, "run,clean,run", Property::CleanSucceeds),
        Verdict::Fails
    );
    let s = story(Policy::Uv0819, "run,clean,run", Property::CleanSucceeds);
    assert!(
        s.contains("fails: the cache root is not empty (exit 2)")
            && s.contains("failed: the root was not empty (exit 2)"),
        "{s}"
    );
}

#[test]
fn uv_0_13_nested_clean_deadlocks_unless_it_times_out() {
    assert_eq!(
        verdict(Policy::Uv013, "run-nested-clean", Property::NoDeadlock),
        Verdict::Fails
    );
    assert_eq!(
        verdict(
            Policy::Uv013,
            "run-nested-clean+timeout",
            Property::NoDeadlock
        ),
        Verdict::Holds
    );
    let s = story(Policy::Uv013, "run-nested-clean", Property::NoDeadlock);
    assert!(
        s.contains("6. run-nested-clean#1: spawn-child -> the child runs"),
        "{s}"
    );
    assert!(
        s.ends_with(
            "=> no-deadlock: violated: every process is blocked (run-nested-clean#1 waits for its child; \
             nested-clean#1 waits at lock-exclusive)"
        ),
        "{s}"
    );
}

#[test]
fn uv_0_13_lets_a_later_run_overtake_a_started_clean() {
    assert_eq!(
        verdict(Policy::Uv013, "run,clean,run", Property::NoOvertaking),
        Verdict::Fails
    );
    assert_eq!(
        story(Policy::Uv013, "run,clean,run", Property::NoOvertaking),
        "\
1. clean#1: open-lock-file -> opens .lock (inode 0)
2. run#1: open-lock-file -> opens .lock (inode 0)
3. run#1: lock-shared -> acquired shared on .lock inode 0
=> no-overtaking: violated: a run that started after a clean got the cache before it"
    );
}

#[test]
fn uv_pr15977_breaks_scripts_but_keeps_no_cache_runs() {
    assert_eq!(
        verdict(
            Policy::UvPr15977,
            "run-script,clean",
            Property::LiveEnvIntact
        ),
        Verdict::Fails
    );
    assert_eq!(
        verdict(Policy::UvPr15977, "run-no-cache", Property::LiveEnvIntact),
        Verdict::Holds
    );
}

#[test]
fn cachelock_keeps_live_envs_even_under_clean_force() {
    for sc in [
        "run-script,clean-force",
        "run+crash,clean",
        "run-daemon,clean",
        "run-nested-clean",
    ] {
        assert_eq!(
            verdict(Policy::Cachelock, sc, Property::LiveEnvIntact),
            Verdict::Holds,
            "{sc}"
        );
    }
    assert_eq!(
        verdict(
            Policy::Cachelock,
            "run-script,clean-force",
            Property::MutualExclusion
        ),
        Verdict::Fails
    );
}

#[test]
fn cachelock_with_a_late_env_lock_loses_the_env_in_the_window() {
    let s = story(
        Policy::CachelockLateEnvLock,
        "run-script,clean",
        Property::LiveEnvIntact,
    );
    assert!(s.contains("release-root-lock"), "{s}");
    assert!(
        s.contains("clean#1: move-to-trash -> moves to its trash environment script"),
        "{s}"
    );
}

#[test]
fn a_prune_that_removes_temp_caches_in_use_takes_a_no_cache_runs_environment() {
    assert_eq!(
        verdict(
            Policy::CachelockPruneAnyTemp,
            "run-no-cache,prune",
            Property::LiveEnvIntact
        ),
        Verdict::Fails
    );
    assert_eq!(
        verdict(
            Policy::Cachelock,
            "run-no-cache,prune",
            Property::LiveEnvIntact
        ),
        Verdict::Holds
    );
    assert_eq!(
        story(
            Policy::CachelockPruneAnyTemp,
            "run-no-cache,prune",
            Property::LiveEnvIntact
        ),
        "\
1. run-no-cache#1: create-temp-cache -> creates its temporary cache, locked shared
2. run-no-cache#1: build-env -> starts building its environment in the temporary cache
3. prune#1: announce-clean -> announces itself (.cleans/<id>, already locked)
4. prune#1: open-lock-file -> opens .lock (inode 0)
5. prune#1: lock-exclusive -> acquired exclusive on .lock inode 0
6. prune#1: move-to-trash -> moves to its trash the scaffold (no environment)
7. prune#1: release-root-lock -> releases the lock on .lock
8. prune#1: withdraw-announcement -> withdraws its announcement
9. prune#1: delete-trash -> deletes the trash, under no lock
10. prune#1: remove-leaked-temp -> removes run-no-cache#1's temporary cache (locked: in use)
11. run-no-cache#1: persist-env -> fails: its environment in the temporary cache vanished while being built
=> live-env-intact: violated: run-no-cache#1 lost its environment in the temporary cache"
    );
}

#[test]
fn cachelock_prune_removes_a_killed_no_cache_runs_temp_cache_and_uv_leaves_it() {
    let sc = "run-no-cache+crash,prune";
    for policy in [Policy::Cachelock, Policy::CachelockPruneAnyTemp] {
        assert_eq!(
            verdict(policy, sc, Property::NoLeakedTemp),
            Verdict::Holds,
            "{policy}"
        );
    }
    assert_eq!(
        story(Policy::Uv013, sc, Property::NoLeakedTemp),
        "\
1. run-no-cache#1: create-temp-cache -> creates its temporary cache, locked shared
2. run-no-cache#1: killed -> SIGKILL: its descriptors close; its temporary cache leaks
3. prune#1: open-lock-file -> opens .lock (inode 0)
4. prune#1: lock-exclusive -> acquired exclusive on .lock inode 0
5. prune#1: delete-entries -> deletes the scaffold (no environment)
6. prune#1: release-root-lock -> releases the lock on .lock
=> no-leaked-temp: violated: a prune that started once run-no-cache#1 had been killed and had no child left has finished, and the temporary cache is still on disk"
    );
    // Without inheriting the lock, a killed run's child is unprotected: the prune takes
    // the temporary cache it runs in.
    let s = story(Policy::CachelockCloexec, sc, Property::LiveEnvIntact);
    assert!(
        s.contains(
            "remove-leaked-temp -> removes run-no-cache#1's temporary cache (its lock free)"
        ),
        "{s}"
    );
    assert!(s.contains("run-no-cache#1: killed"), "{s}");
}

#[test]
fn symmetry_reduction_keeps_every_verdict() {
    for policy in [
        Policy::Uv0820,
        Policy::Uv013,
        Policy::Cachelock,
        Policy::CachelockNoAnnounce,
    ] {
        for sc in ["run,run,clean", "run,clean,clean", "run,clean,run"] {
            let sc = Scenario::parse(sc).unwrap();
            let with = check_pair_with(policy, &sc, true);
            let without = check_pair_with(policy, &sc, false);
            assert_eq!(with.verdicts, without.verdicts, "{policy} {sc}");
            assert!(with.states <= without.states, "{policy} {sc}");
        }
    }
    // Two interchangeable killed `--no-cache` runs: the prune's record of leaked
    // temporary caches names processes, and is renumbered with them.
    for policy in [Policy::Uv013, Policy::Cachelock, Policy::CachelockCloexec] {
        let sc = Scenario::parse("run-no-cache+crash,run-no-cache+crash,prune").unwrap();
        let with = check_pair_with(policy, &sc, true);
        let without = check_pair_with(policy, &sc, false);
        assert_eq!(with.verdicts, without.verdicts, "{policy} {sc}");
        assert!(with.states < without.states, "{policy} {sc}");
    }
    let sc = Scenario::parse("run,run,clean").unwrap();
    let with = check_pair_with(Policy::Cachelock, &sc, true).states;
    let without = check_pair_with(Policy::Cachelock, &sc, false).states;
    assert!(
        with < without,
        "symmetry should merge the two runs: {with} vs {without}"
    );
}

#[test]
fn a_prune_withdraws_its_announcement_before_removing_leaked_temp_caches() {
    use cachelock_model::Step;
    use cachelock_model::machine::{Action, CacheModel, Life};
    let m = CacheModel::new(Policy::Cachelock, &Scenario::parse("run,prune").unwrap());
    let (run, prune) = (0, 1);
    let program = &m.procs[prune].program;
    assert_eq!(
        &program[program.len() - 3..],
        [
            Step::WithdrawAnnouncement,
            Step::DeleteTrash,
            Step::RemoveLeakedTemp
        ]
    );
    let mut s = m.initial_state();
    // The prune takes every step up to its withdrawal; the run then finds it announced.
    for step in &program[..program.len() - 3] {
        s = m.after(&s, Action::Step(prune, *step));
    }
    s = m.after(&s, Action::Step(run, Step::AwaitAnnouncedCleans));
    assert_eq!(s.procs[run].life, Life::Waiting);
    assert!(!m.step_enabled(&s, run));
    s = m.after(&s, Action::Step(prune, Step::WithdrawAnnouncement));
    assert!(
        m.step_enabled(&s, run),
        "the withdrawn announcement must not hold the run while the prune still works"
    );
}

#[test]
fn a_clean_moves_to_its_trash_before_releasing_or_a_run_waiting_for_lock_loses_what_it_holds() {
    // The default moves under .lock and deletes the trash after withdrawing: runs
    // started meanwhile wait for the moves only.
    let program = Policy::DEFAULT.program(cachelock_model::Kind::Clean);
    let at = |step| program.iter().position(|s| *s == step);
    use cachelock_model::Step;
    assert!(at(Step::MoveToTrash) < at(Step::ReleaseRootLock));
    assert!(at(Step::WithdrawAnnouncement) < at(Step::DeleteTrash));
    assert_eq!(at(Step::DeleteEntries), None);
    assert_eq!(
        verdict(Policy::DEFAULT, "run,run,clean", Property::MutualExclusion),
        Verdict::Holds
    );
    // Moving only after releasing .lock: a run that was waiting for .lock when the
    // clean announced itself gets it, and the clean's moves happen beside it.
    assert_eq!(
        verdict(
            Policy::FencedTrashAfterRelease,
            "run,run,clean",
            Property::MutualExclusion
        ),
        Verdict::Fails
    );
    let s = story(
        Policy::FencedTrashAfterRelease,
        "run,run,clean",
        Property::MutualExclusion,
    );
    let release = s
        .find("clean#1: release-root-lock")
        .expect("the clean releases");
    let moved = s.find("clean#1: move-to-trash").expect("the clean moves");
    assert!(release < moved, "{s}");
    assert!(s.contains("while run#"), "{s}");
}
