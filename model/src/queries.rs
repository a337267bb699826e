//! What can be asked of a state: where each process is, whether it is alive, which
//! step or event is enabled for it, whether a lock can be granted, whether an
//! environment is present, locked or in use. Read by the transitions, the properties
//! and the stories; none of these change the state.

use crate::machine::CacheModel;
use crate::protocol::{ChildKind, EnvName, Event, Mode, Step};
use crate::state::{Child, Daemon, EnvState, Life, ProcId, RootFd, State, Temp, env_index};

impl CacheModel {
    /// The step process `p` would take next, if it has one.
    pub fn next_step(&self, s: &State, p: ProcId) -> Option<Step> {
        self.procs[p].program.get(s.procs[p].at as usize).copied()
    }

    /// True while the uv process itself is alive (not finished, not killed).
    pub fn alive(&self, s: &State, p: ProcId) -> bool {
        matches!(s.procs[p].life, Life::Ready | Life::Waiting)
    }

    /// True once the process has taken its first step.
    pub fn started(&self, s: &State, p: ProcId) -> bool {
        s.procs[p].at > 0 || s.procs[p].life != Life::Ready
    }

    /// A nested clean whose host child will never run it counts as finished.
    fn moot(&self, s: &State, p: ProcId) -> bool {
        match self.procs[p].host {
            Some(h) => {
                let hc = s.procs[h].child;
                hc == Child::FailedToSpawn
                    || (hc == Child::NotSpawned && !self.alive(s, h))
                    || (hc == Child::Exited && !self.started(s, p))
            }
            None => false,
        }
    }

    /// True if the process will take no more steps (done, killed or moot).
    pub fn finished(&self, s: &State, p: ProcId) -> bool {
        !self.alive(s, p) || self.moot(s, p)
    }

    /// True if a nested clean may act: its host's child is running.
    fn gated_open(&self, s: &State, p: ProcId) -> bool {
        match self.procs[p].host {
            Some(h) => s.procs[h].child == Child::Running,
            None => true,
        }
    }

    /// The index of `step` in process `p`'s program.
    fn index_of(&self, p: ProcId, step: Step) -> Option<usize> {
        self.procs[p].program.iter().position(|s| *s == step)
    }

    /// A clean "has the cache" once it is past its `lock-exclusive` step.
    pub fn clean_has_cache(&self, s: &State, c: ProcId) -> bool {
        self.procs[c].kind.is_clean()
            && self.alive(s, c)
            && self
                .index_of(c, Step::LockExclusive)
                .is_some_and(|i| (s.procs[c].at as usize) > i)
    }

    /// A clean that holds the cache right now: past its `lock-exclusive` step and not
    /// yet past its `release-root-lock` step.
    pub fn clean_holds_cache(&self, s: &State, c: ProcId) -> bool {
        self.clean_has_cache(s, c)
            && self
                .index_of(c, Step::ReleaseRootLock)
                .is_some_and(|i| (s.procs[c].at as usize) <= i)
    }

    /// A clean that has announced itself and not yet withdrawn.
    pub(crate) fn announced(&self, s: &State, c: ProcId) -> bool {
        self.procs[c].kind.is_clean()
            && self.alive(s, c)
            && self
                .index_of(c, Step::AnnounceClean)
                .is_some_and(|i| (s.procs[c].at as usize) > i)
            && self
                .index_of(c, Step::WithdrawAnnouncement)
                .is_none_or(|i| (s.procs[c].at as usize) <= i)
    }

    /// Cleans that have started but not yet got the cache (bit per process).
    pub(crate) fn pending_cleans(&self, s: &State) -> u16 {
        (0..self.procs.len())
            .filter(|&c| {
                self.procs[c].kind.is_clean()
                    && self.started(s, c)
                    && self.alive(s, c)
                    && !self.clean_has_cache(s, c)
            })
            .fold(0, |m, c| m | (1 << c))
    }

    /// The `--no-cache` runs whose temporary cache has leaked for good (bit per
    /// process): the run was killed and its child (if any) has exited, so nothing will
    /// ever remove it but a prune.
    pub fn leaked_temps(&self, s: &State) -> u16 {
        (0..self.procs.len())
            .filter(|&q| {
                let st = &s.procs[q];
                st.life == Life::Killed
                    && matches!(st.temp, Temp::Present(_))
                    && st.child != Child::Running
                    && st.daemon != Daemon::Running
            })
            .fold(0, |m, q| m | (1 << q))
    }

    /// Whether process `p` could be granted `mode` on the inode its descriptor names.
    pub fn root_grantable(&self, s: &State, p: ProcId, mode: Mode) -> bool {
        let Some(fd) = s.procs[p].root_fd else {
            return false;
        };
        s.procs.iter().enumerate().all(|(q, other)| {
            q == p
                || match other.root_fd {
                    Some(RootFd {
                        inode,
                        lock: Some(m),
                    }) if inode == fd.inode => mode == Mode::Shared && m == Mode::Shared,
                    _ => true,
                }
        })
    }

    /// True if the environment of run `p` is on disk.
    ///
    /// Under a design with run overlays (uv's `run --with`), the child of a `run`-family
    /// process lives in the run's own overlay on top of the cached environment, which
    /// the run removes when it exits (a killed run leaks it).
    pub fn env_present(&self, s: &State, p: ProcId) -> bool {
        let kind = self.procs[p].kind;
        match kind.env() {
            Some(EnvName::Temp) => s.procs[p].temp == Temp::Present(EnvState::Present),
            Some(env) => {
                let overlay_gone = self.design.run_overlay
                    && env == EnvName::With
                    && matches!(s.procs[p].life, Life::Done(_));
                !overlay_gone && env_index(env).is_some_and(|i| s.fs.envs[i] == EnvState::Present)
            }
            None => false,
        }
    }

    /// True if some process has the environment lock of `env` (any descriptor open).
    pub fn env_locked(&self, s: &State, env: EnvName) -> bool {
        self.procs
            .iter()
            .zip(&s.procs)
            .any(|(info, st)| info.kind.env() == Some(env) && st.env_fd.is_some())
    }

    /// True if some live process or child uses `env`: a run past its first
    /// environment step that has not finished, a running child, or a daemon.
    pub fn env_in_use(&self, s: &State, env: EnvName) -> bool {
        (0..self.procs.len()).any(|p| {
            let info = &self.procs[p];
            let st = &s.procs[p];
            if info.kind.env() != Some(env) {
                return false;
            }
            let first = info
                .program
                .iter()
                .position(|x| matches!(x, Step::LockEnv | Step::BuildEnv));
            let claimed = self.alive(s, p) && first.is_some_and(|i| (st.at as usize) > i);
            claimed || st.child == Child::Running || st.daemon == Daemon::Running
        })
    }

    /// Is process `p` blocked with no way forward on its own (for `no-deadlock`)?
    pub fn stuck(&self, s: &State, p: ProcId) -> bool {
        let st = &s.procs[p];
        match st.life {
            Life::Waiting => {
                let can_time_out = self.design.lock_timeout && self.procs[p].spec.timeout;
                !can_time_out && !self.step_enabled(s, p)
            }
            Life::Ready => match self.next_step(s, p) {
                Some(Step::WaitForChild) if st.child == Child::Running => self.child_stuck(s, p),
                _ => false,
            },
            Life::Done(_) | Life::Killed => false,
        }
    }

    /// A running child is stuck only when it waits for its nested clean, which is stuck.
    fn child_stuck(&self, s: &State, p: ProcId) -> bool {
        match self.procs[p].nested {
            Some(n) => !self.finished(s, n) && self.stuck(s, n),
            None => false,
        }
    }

    /// True if the step a process is at can be taken now.
    pub fn step_enabled(&self, s: &State, p: ProcId) -> bool {
        let st = &s.procs[p];
        let Some(step) = self.next_step(s, p) else {
            return false;
        };
        if !self.alive(s, p) || !self.gated_open(s, p) {
            return false;
        }
        if st.life == Life::Ready {
            return match step {
                Step::WaitForChild => st.child != Child::Running,
                _ => true,
            };
        }
        // Waiting: the blocking call returns only when the lock can be granted.
        match step {
            Step::LockShared => self.root_grantable(s, p, Mode::Shared),
            Step::LockExclusive => self.root_grantable(s, p, Mode::Exclusive),
            Step::AwaitAnnouncedCleans => {
                (0..self.procs.len()).all(|c| st.awaited & (1 << c) == 0 || !self.announced(s, c))
            }
            _ => false,
        }
    }

    /// True if event `e` can happen to process `p` (or its child or daemon) now.
    pub fn event_enabled(&self, s: &State, p: ProcId, e: Event) -> bool {
        let st = &s.procs[p];
        let info = &self.procs[p];
        match e {
            Event::Killed => {
                info.spec.crash && info.host.is_none() && self.alive(s, p) && self.started(s, p)
            }
            Event::LockTimeout => {
                self.design.lock_timeout && info.spec.timeout && st.life == Life::Waiting
            }
            Event::ChildStartsDaemon => {
                st.child == Child::Running
                    && info.kind.child() == Some(ChildKind::Daemon)
                    && st.daemon == Daemon::None
            }
            Event::ChildExits => {
                st.child == Child::Running
                    && match info.kind.child() {
                        Some(ChildKind::Exits) => true,
                        Some(ChildKind::Daemon) => st.daemon != Daemon::None,
                        Some(ChildKind::NestedClean) => {
                            info.nested.is_some_and(|n| self.finished(s, n))
                        }
                        Some(ChildKind::Server) | None => false,
                    }
            }
            Event::DaemonExits => st.daemon == Daemon::Running,
        }
    }

    /// True if no fair action is enabled: only kills, or nothing at all. Fair are every
    /// enabled step and every enabled event but `killed` (a fault may happen, and need
    /// not); `lock-timeout` is enabled only under a policy with a lock timeout, for a
    /// `+timeout` process that waits. Every fair behaviour ends in such a state (the
    /// model is acyclic) and stays there.
    pub fn quiescent(&self, s: &State) -> bool {
        self.quiescent_with(s, &[Event::Killed])
    }

    /// As [`CacheModel::quiescent`], with `unfair` the events a behaviour need not take
    /// (`killed`, and for `clean-succeeds` also `lock-timeout`).
    pub fn quiescent_with(&self, s: &State, unfair: &[Event]) -> bool {
        (0..self.procs.len()).all(|p| {
            !self.step_enabled(s, p)
                && Event::ALL
                    .iter()
                    .all(|e| unfair.contains(e) || !self.event_enabled(s, p, *e))
        })
    }
}
