//! Counterexamples told as numbered stories:
//! `3. run-no-cache#1: spawn-child -> fails: its environment is gone`.

use crate::machine::{Action, CacheModel, Child, EnvState, Life, Outcome, State, Temp};
use crate::properties::PropertyName;
use crate::protocol::{EnvName, Event, Mode, OnBusy, Step};

/// One line per action of `path`, numbered from 1, then a last line saying what is
/// wrong in the final state.
pub fn tell(
    m: &CacheModel,
    path: &[(State, Option<Action>)],
    property: PropertyName,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, pair) in path.windows(2).enumerate() {
        let (before, action) = (&pair[0].0, pair[0].1);
        let after = &pair[1].0;
        if let Some(action) = action {
            lines.push(format!("{}. {}", i + 1, line(m, before, action, after)));
        }
    }
    if let Some((last, _)) = path.last() {
        lines.push(format!(
            "=> {}: {}",
            property.name(),
            verdict_line(m, last, property)
        ));
    }
    lines
}

fn who(m: &CacheModel, p: usize) -> &str {
    &m.procs[p].label
}

fn env_label(m: &CacheModel, p: usize) -> String {
    match m.procs[p].kind.env() {
        Some(EnvName::Temp) => "its environment in the temporary cache".to_string(),
        Some(env) => format!("environment `{}`", env_name(m, m.layout(p), env)),
        None => "no environment".to_string(),
    }
}

/// An environment's name; when processes of both layouts share the cache, uv's layout
/// says `uv:` and the new layout `new:`.
fn env_name(m: &CacheModel, layout: usize, env: EnvName) -> String {
    if !m.mixed_layouts() {
        env.dir_name().to_string()
    } else if layout == 0 {
        format!("uv:{}", env.dir_name())
    } else {
        format!("new:{}", env.dir_name())
    }
}

/// What one action did, from the states before and after it.
pub fn line(m: &CacheModel, before: &State, action: Action, after: &State) -> String {
    let (p, what) = match action {
        Action::Step(p, step) => (p, step.name()),
        Action::Event(p, e) => (p, e.name()),
    };
    format!(
        "{}: {} -> {}",
        who(m, p),
        what,
        outcome(m, before, action, after)
    )
}

fn outcome(m: &CacheModel, before: &State, action: Action, after: &State) -> String {
    match action {
        Action::Step(p, step) => step_outcome(m, before, p, step, after),
        Action::Event(p, e) => match e {
            Event::Killed => {
                let mut s = "SIGKILL: its descriptors close".to_string();
                if after.procs[p].child == Child::Running {
                    s.push_str("; its child keeps running");
                }
                if matches!(after.procs[p].temp, Temp::Present(_)) {
                    s.push_str("; its temporary cache leaks");
                }
                s
            }
            Event::LockTimeout => "the lock wait times out: exit 2, holding nothing".into(),
            Event::ChildExits => "the child exits".into(),
            Event::ChildStartsDaemon => {
                "the child starts a daemon that keeps using the environment".into()
            }
            Event::DaemonExits => "the daemon exits".into(),
        },
    }
}

fn step_outcome(m: &CacheModel, before: &State, p: usize, step: Step, after: &State) -> String {
    let b = &before.procs[p];
    let a = &after.procs[p];
    match a.life {
        Life::Done(Outcome::NoCache) => return "no cache found: exit 0".into(),
        Life::Done(Outcome::GaveUp) => return "busy: gives up, exit 0".into(),
        Life::Done(Outcome::SpawnFailed) => {
            return format!("fails: {} is gone", env_label(m, p));
        }
        Life::Done(Outcome::EnvVanished) => {
            return format!("fails: {} vanished while being built", env_label(m, p));
        }
        Life::Done(Outcome::RootNotEmpty) => {
            return "fails: the cache root is not empty (exit 2)".into();
        }
        Life::Done(Outcome::RootVanished) => {
            return "fails: the cache root it created is gone".into();
        }
        _ => {}
    }
    match step {
        Step::LockShared | Step::LockExclusive => {
            let mode = if step == Step::LockShared {
                Mode::Shared
            } else {
                Mode::Exclusive
            };
            let inode = a.root_fd.or(b.root_fd).map(|f| f.inode).unwrap_or_default();
            if a.life == Life::Waiting {
                format!("busy: waits (.lock inode {inode})")
            } else if a.forced {
                let info = &m.procs[p];
                if info.policy.on_busy(info.kind) == OnBusy::OwnLayout {
                    "busy: goes on without it, to clean only its own layout".into()
                } else if info.kind == crate::protocol::Kind::CleanForce {
                    "busy: goes on without the lock (--force)".into()
                } else {
                    "busy: goes on without the lock".into()
                }
            } else if b.life == Life::Waiting {
                format!("granted {} on .lock inode {inode}", mode.name())
            } else {
                format!("acquired {} on .lock inode {inode}", mode.name())
            }
        }
        Step::OpenLockFile => {
            let inode = a.root_fd.map(|f| f.inode).unwrap_or_default();
            if before.fs.lock_path.is_none() {
                format!("creates .lock (inode {inode})")
            } else {
                format!("opens .lock (inode {inode})")
            }
        }
        Step::AwaitAnnouncedCleans => {
            if a.life == Life::Waiting {
                let names: Vec<&str> = (0..m.procs.len())
                    .filter(|c| a.awaited & (1 << c) != 0)
                    .map(|c| who(m, c))
                    .collect();
                format!("waits for {}", names.join(", "))
            } else if b.life == Life::Waiting {
                "the announced cleans are done".into()
            } else {
                "no clean announced".into()
            }
        }
        Step::AnnounceClean => "announces itself (.cleans/<id>, already locked)".into(),
        Step::WithdrawAnnouncement => "withdraws its announcement".into(),
        Step::CreateTempCache => "creates its temporary cache, locked shared".into(),
        Step::CreateScaffold => "creates the cache root and scaffold".into(),
        Step::LockEnv => format!("locks {} shared", env_label(m, p)),
        Step::BuildEnv => {
            if env_state_of(m, before, p) == Some(EnvState::Present) {
                format!("reuses {}", env_label(m, p))
            } else {
                format!("starts building {}", env_label(m, p))
            }
        }
        Step::PersistEnv => format!("{} is in place", env_label(m, p)),
        Step::ReleaseRootLock => {
            if a.root_fd.is_some() {
                "closes its descriptor on .lock; the child's inherited copy keeps it locked".into()
            } else {
                "releases the lock on .lock".into()
            }
        }
        Step::SpawnChild => {
            let inherited: Vec<&str> = [
                a.env_fd.is_some_and(|f| f.child).then_some(
                    if m.procs[p].kind.env() == Some(EnvName::Temp) {
                        "the temporary cache's lock"
                    } else {
                        "the environment lock"
                    },
                ),
                a.root_fd
                    .is_some_and(|f| f.child)
                    .then_some("the lock on .lock"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if inherited.is_empty() {
                "the child runs".into()
            } else {
                format!("the child runs (it inherited {})", inherited.join(" and "))
            }
        }
        Step::WaitForChild => "the child has exited".into(),
        Step::DropTempCache => "removes its temporary cache".into(),
        Step::CloseEnvLock => {
            if a.env_fd.is_some() {
                "closes its descriptor; inherited copies keep the environment locked".into()
            } else {
                "closes its descriptor; the environment lock is released".into()
            }
        }
        Step::UnlockEnvLock => "LOCK_UN: the environment lock is released for every holder".into(),
        Step::DeleteEntries | Step::MoveToTrash => {
            let verb = if step == Step::MoveToTrash {
                "moves to its trash"
            } else {
                "deletes"
            };
            let mut deleted = Vec::new();
            let mut skipped = Vec::new();
            let info = &m.procs[p];
            let own_layout = b.forced && info.policy.on_busy(info.kind) == OnBusy::OwnLayout;
            for l in 0..2 {
                if own_layout && l != m.layout(p) {
                    continue;
                }
                for (i, env) in EnvName::CACHED.iter().enumerate() {
                    if before.fs.envs[l][i] != EnvState::Absent {
                        if after.fs.envs[l][i] == EnvState::Absent {
                            deleted.push(env_name(m, l, *env));
                        } else {
                            skipped.push(env_name(m, l, *env));
                        }
                    }
                }
            }
            let mut s = if own_layout {
                if deleted.is_empty() {
                    format!("busy: {verb} only its own layout's unlocked environments (none)")
                } else {
                    format!(
                        "busy: {verb} only its own layout's unlocked environments: {}",
                        deleted.join(", ")
                    )
                }
            } else if deleted.is_empty() {
                format!("{verb} the scaffold (no environment)")
            } else {
                format!("{verb} environment {}", deleted.join(", "))
            };
            if !skipped.is_empty() {
                s.push_str(&format!("; skips {} (in use)", skipped.join(", ")));
            }
            let holders: Vec<&str> = (0..m.procs.len())
                .filter(|&q| q != p && m.holds_root_lock(before, q))
                .map(|q| who(m, q))
                .collect();
            if !holders.is_empty() {
                s.push_str(&format!(" while {} holds the lock", holders.join(", ")));
            }
            s
        }
        Step::DeleteTrash => {
            if before.fs.trash {
                "deletes the trash, under no lock".into()
            } else {
                "finds no trash to delete".into()
            }
        }
        Step::UnlinkLockFile => match before.fs.lock_path {
            Some(i) if after.fs.lock_path.is_none() => format!("unlinks .lock (inode {i})"),
            _ => "leaves .lock (it did not hold the lock)".into(),
        },
        Step::RemoveLeakedTemp => {
            let mut removed = Vec::new();
            let mut kept = Vec::new();
            for q in 0..m.procs.len() {
                if matches!(before.procs[q].temp, Temp::Present(_)) {
                    let lock = if before.procs[q].env_fd.is_some() {
                        "locked: in use"
                    } else {
                        "its lock free"
                    };
                    let text = format!("{}'s temporary cache ({lock})", who(m, q));
                    if matches!(after.procs[q].temp, Temp::Present(_)) {
                        kept.push(text);
                    } else {
                        removed.push(text);
                    }
                }
            }
            match (removed.is_empty(), kept.is_empty()) {
                (true, true) => "no temporary cache to remove".into(),
                (false, true) => format!("removes {}", removed.join(", ")),
                (true, false) => format!("keeps {}", kept.join(", ")),
                (false, false) => {
                    format!("removes {}; keeps {}", removed.join(", "), kept.join(", "))
                }
            }
        }
        Step::RemoveRoot => {
            if after.fs.root {
                "the root is not empty: kept".into()
            } else {
                "removes the cache root".into()
            }
        }
    }
}

fn env_state_of(m: &CacheModel, s: &State, p: usize) -> Option<EnvState> {
    match m.procs[p].kind.env()? {
        EnvName::Temp => match s.procs[p].temp {
            Temp::Present(e) => Some(e),
            _ => None,
        },
        env => EnvName::CACHED
            .iter()
            .position(|e| *e == env)
            .map(|i| s.fs.envs[m.layout(p)][i]),
    }
}

/// The last line of a story: what the final state shows about the property.
fn verdict_line(m: &CacheModel, s: &State, property: PropertyName) -> String {
    let stuck: Vec<String> = (0..m.procs.len())
        .filter(|&p| !m.finished(s, p))
        .map(|p| {
            let st = &s.procs[p];
            let doing = match (st.life, m.next_step(s, p)) {
                (Life::Waiting, Some(step)) => format!("waits at {step}"),
                (_, Some(Step::WaitForChild)) => "waits for its child".into(),
                (_, Some(step)) => format!("is at {step}"),
                _ => "is done".into(),
            };
            format!("{} {doing}", who(m, p))
        })
        .collect();
    match property {
        PropertyName::LiveEnvIntact => {
            let victims: Vec<String> = (0..m.procs.len())
                .filter(|&p| {
                    let st = &s.procs[p];
                    st.child == Child::FailedToSpawn
                        || st.life == Life::Done(Outcome::EnvVanished)
                        || ((st.child == Child::Running
                            || st.daemon == crate::machine::Daemon::Running)
                            && !m.env_present(s, p))
                })
                .map(|p| {
                    let cached_there = m.procs[p].kind.env().is_some_and(|e| {
                        EnvName::CACHED
                            .iter()
                            .position(|c| *c == e)
                            .is_some_and(|i| s.fs.envs[m.layout(p)][i] == EnvState::Present)
                    });
                    if cached_there && m.procs[p].design.run_overlay {
                        format!(
                            "{}'s daemon lost the run's overlay environment (removed when the run exited)",
                            who(m, p)
                        )
                    } else {
                        format!("{} lost {}", who(m, p), env_label(m, p))
                    }
                })
                .collect();
            if victims.is_empty() && s.history.broke_protected_env {
                "violated: a process of the checked policy deleted an environment that another \
                 release's process was using under its own release's protection"
                    .into()
            } else {
                format!("violated: {}", victims.join("; "))
            }
        }
        PropertyName::MutualExclusion => {
            "violated: an entry was deleted while another process held the lock that protects it"
                .into()
        }
        PropertyName::RootLockExclusion => {
            "violated: cache contents were deleted while another process held a lock on .lock"
                .into()
        }
        PropertyName::NoDeadlock => {
            format!("violated: every process is blocked ({})", stuck.join("; "))
        }
        PropertyName::CleanTerminates | PropertyName::CleanSucceeds => {
            let unfair: Vec<&str> = property
                .unfair_events()
                .iter()
                .filter(|e| (0..m.procs.len()).any(|p| m.event_enabled(s, p, **e)))
                .map(|e| match e {
                    Event::Killed => "a kill",
                    Event::LockTimeout => "a lock timeout",
                    _ => e.name(),
                })
                .collect();
            let rest = if unfair.is_empty() {
                "nothing more can happen".to_string()
            } else {
                format!("nothing more can happen but {}", unfair.join(" or "))
            };
            let ended: Vec<String> = (0..m.procs.len())
                .filter(|&p| m.procs[p].kind.is_clean())
                .filter_map(|p| {
                    let how = match s.procs[p].life {
                        Life::Done(Outcome::RootNotEmpty) => {
                            "failed: the root was not empty (exit 2)"
                        }
                        Life::Done(Outcome::TimedOut) => "timed out (exit 2)",
                        Life::Done(Outcome::GaveUp) => {
                            "gave up on the busy lock (exit 0, deleted nothing)"
                        }
                        _ => return None,
                    };
                    Some(format!("{} {how}", who(m, p)))
                })
                .collect();
            if property == PropertyName::CleanTerminates {
                format!(
                    "violated: {rest} and a clean never ends ({})",
                    stuck.join("; ")
                )
            } else {
                let why: Vec<String> = ended.into_iter().chain(stuck).collect();
                format!(
                    "violated: {rest} and a clean did not succeed ({})",
                    why.join("; ")
                )
            }
        }
        PropertyName::NoOvertaking => {
            "violated: a run that started after a clean got the cache before it".into()
        }
        PropertyName::NoLeakedTemp => {
            let left = crate::predicates::pruned_leaked_temps(m, s);
            if left == 0 {
                "violated: everything finished and a temporary cache is still on disk".into()
            } else {
                let runs: Vec<&str> = (0..m.procs.len())
                    .filter(|q| left & (1 << q) != 0)
                    .map(|q| who(m, q))
                    .collect();
                format!(
                    "violated: a prune that started once {} had been killed and had no child left has finished, and the temporary cache is still on disk",
                    runs.join(", ")
                )
            }
        }
        PropertyName::CleanRemovesUnused => {
            "violated: a clean finished and left an environment nobody uses".into()
        }
        PropertyName::CleanOverlapsChild | PropertyName::RunsShareLock => "reached".into(),
    }
}
