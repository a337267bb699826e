//! How each step and event changes a state: the model's transition function, one
//! function per step (or family of steps) named as the protocol names the step, and the
//! stateright `Model` impl that ties the enabled actions (`crate::queries`) to them.
//!
//! A step function either moves its process on (`advance`), leaves it waiting at the
//! same step (a busy lock), or ends it (`finish`) with the outcome the step met.

use stateright::{Model, Property};

use crate::machine::CacheModel;
use crate::protocol::{DropTemp, EnvLock, EnvName, Event, Kind, Mode, OnBusy, PruneTemp, Step};
use crate::state::{
    Action, Build, Child, Daemon, EnvFd, EnvState, Life, Outcome, ProcId, RootFd, State, Temp,
    env_index,
};

impl CacheModel {
    /// The state after `action` (the model's transition function).
    pub fn after(&self, s: &State, action: Action) -> State {
        let mut next = s.clone();
        match action {
            Action::Step(p, step) => self.take_step(&mut next, p, step),
            Action::Event(p, e) => self.take_event(&mut next, p, e),
        }
        next
    }

    /// Process `p` takes `step`, the next one of its program.
    fn take_step(&self, s: &mut State, p: ProcId, step: Step) {
        if s.procs[p].at == 0 && s.procs[p].life == Life::Ready {
            match self.procs[p].kind {
                k if k.is_run() => s.procs[p].pending_cleans = self.pending_cleans(s),
                Kind::Prune => s.procs[p].leaked_at_start = self.leaked_temps(s),
                _ => {}
            }
        }
        match step {
            // The announcement is visible to the runs through the clean's place in its
            // program (`crate::queries`): nothing else changes.
            Step::AnnounceClean | Step::WithdrawAnnouncement => self.advance(s, p),
            Step::AwaitAnnouncedCleans => self.await_announced_cleans(s, p),
            Step::CreateTempCache => self.create_temp_cache(s, p),
            Step::CreateScaffold => self.create_scaffold(s, p),
            Step::OpenLockFile => self.open_lock_file(s, p),
            Step::LockShared => self.lock_root(s, p, Mode::Shared),
            Step::LockExclusive => self.lock_root(s, p, Mode::Exclusive),
            Step::LockEnv => self.lock_env(s, p),
            Step::BuildEnv => self.build_env(s, p),
            Step::PersistEnv => self.persist_env(s, p),
            Step::ReleaseRootLock => self.release_root_lock(s, p),
            Step::SpawnChild => self.spawn_child(s, p),
            // Enabled only once the child has exited.
            Step::WaitForChild => self.advance(s, p),
            Step::DropTempCache => self.drop_temp_cache(s, p),
            Step::CloseEnvLock => self.close_env_lock(s, p),
            Step::UnlockEnvLock => self.unlock_env_lock(s, p),
            Step::DeleteEntries => self.delete_entries(s, p),
            Step::MoveToTrash => self.move_to_trash(s, p),
            Step::DeleteTrash => self.delete_trash(s, p),
            Step::UnlinkLockFile => self.unlink_lock_file(s, p),
            Step::RemoveRoot => self.remove_root(s, p),
            Step::RemoveLeakedTemp => self.remove_leaked_temp(s, p),
        }
    }

    /// `await-announced-cleans`: the first try records the cleans announced now and
    /// waits if there are any; the wait returns once every one of them has withdrawn
    /// (`crate::queries`: `step_enabled`).
    fn await_announced_cleans(&self, s: &mut State, p: ProcId) {
        if s.procs[p].life == Life::Ready {
            let announced = (0..self.procs.len())
                .filter(|&c| self.announced(s, c))
                .fold(0u16, |m, c| m | (1 << c));
            if announced != 0 {
                s.procs[p].awaited = announced;
                s.procs[p].life = Life::Waiting;
                return;
            }
        }
        s.procs[p].awaited = 0;
        self.advance(s, p);
    }

    /// `create-temp-cache`: an empty private cache, outside the shared one, whose lock
    /// the run holds shared from birth (a new open file description, like an
    /// environment lock's: `lock-env` is this step's part for a `--no-cache` run).
    fn create_temp_cache(&self, s: &mut State, p: ProcId) {
        s.procs[p].temp = Temp::Present(EnvState::Absent);
        s.procs[p].env_fd = Some(EnvFd {
            parent: true,
            child: false,
            daemon: false,
        });
        self.advance(s, p);
    }

    /// `create-scaffold`: the root, its scaffold files and bucket directories.
    fn create_scaffold(&self, s: &mut State, p: ProcId) {
        s.fs.root = true;
        s.fs.scaffold = true;
        s.fs.buckets = true;
        self.advance(s, p);
    }

    /// `open-lock-file`: the descriptor names the inode `.lock` names now, a new one if
    /// the path is gone. A clean with no root stops ("No cache found"); a run recreates
    /// the root, unless it made the scaffold first and a clean removed it since.
    fn open_lock_file(&self, s: &mut State, p: ProcId) {
        if !s.fs.root {
            if self.procs[p].kind.is_clean() {
                self.finish(s, p, Life::Done(Outcome::NoCache));
                return;
            }
            if self.procs[p].design.scaffold_before_lock {
                self.finish(s, p, Life::Done(Outcome::RootVanished));
                return;
            }
            s.fs.root = true;
        }
        let inode = match s.fs.lock_path {
            Some(i) => i,
            None => {
                let i = s.fs.next_inode;
                s.fs.next_inode += 1;
                s.fs.lock_path = Some(i);
                i
            }
        };
        s.procs[p].root_fd = Some(RootFd::opened(inode));
        self.advance(s, p);
    }

    /// `lock-shared` / `lock-exclusive` on `.lock`: granted if no conflicting lock is
    /// held on the same inode; if busy, what the process's policy says
    /// (`Policy::on_busy`): wait, go on unlocked (`clean --force`; `OwnLayout` too, but
    /// then `delete-entries` keeps to the process's own layout) or give up.
    fn lock_root(&self, s: &mut State, p: ProcId, mode: Mode) {
        if self.root_grantable(s, p, mode) {
            if let Some(fd) = s.procs[p].root_fd.as_mut() {
                fd.lock = Some(mode);
            }
            self.note_run_got_cache(s, p);
            self.advance(s, p);
            return;
        }
        let on_busy = match mode {
            Mode::Shared => OnBusy::Wait,
            Mode::Exclusive => self.procs[p].policy.on_busy(self.procs[p].kind),
        };
        match on_busy {
            OnBusy::Wait => s.procs[p].life = Life::Waiting,
            OnBusy::ProceedUnlocked | OnBusy::OwnLayout => {
                s.procs[p].forced = true;
                self.advance(s, p);
            }
            OnBusy::GiveUp => {
                self.note_clean_done(s, p);
                self.finish(s, p, Life::Done(Outcome::GaveUp));
            }
        }
    }

    /// `lock-env`: a new open file description, held by the run alone until it spawns.
    fn lock_env(&self, s: &mut State, p: ProcId) {
        s.procs[p].env_fd = Some(EnvFd {
            parent: true,
            child: false,
            daemon: false,
        });
        self.advance(s, p);
    }

    /// `build-env`: reuse the environment if it is present, else start building it in
    /// the run's own directory (the buckets come back with it).
    fn build_env(&self, s: &mut State, p: ProcId) {
        match self.procs[p].kind.env() {
            Some(EnvName::Temp) => {
                if let Temp::Present(e) = s.procs[p].temp
                    && e == EnvState::Absent
                {
                    s.procs[p].temp = Temp::Present(EnvState::Building);
                }
            }
            Some(env) => {
                s.fs.root = true;
                s.fs.buckets = true;
                let l = self.layout(p);
                if let Some(i) = env_index(env) {
                    if s.fs.envs[l][i] == EnvState::Present {
                        s.procs[p].build = Build::Reused;
                    } else {
                        s.fs.envs[l][i] = EnvState::Building;
                        s.procs[p].build = Build::InProgress;
                    }
                }
            }
            None => {}
        }
        self.advance(s, p);
    }

    /// `persist-env`: the run's own build moves into place (another run may have been
    /// first: then there is nothing to move), or the reused one must still be there;
    /// otherwise the environment vanished under the run.
    fn persist_env(&self, s: &mut State, p: ProcId) {
        let ok = match self.procs[p].kind.env() {
            Some(EnvName::Temp) => match s.procs[p].temp {
                Temp::Present(EnvState::Absent) | Temp::None | Temp::Gone => false,
                Temp::Present(_) => {
                    s.procs[p].temp = Temp::Present(EnvState::Present);
                    true
                }
            },
            Some(env) => match (env_index(env), s.procs[p].build) {
                (Some(i), Build::InProgress) => {
                    s.fs.envs[self.layout(p)][i] = EnvState::Present;
                    true
                }
                (Some(i), Build::Reused) => s.fs.envs[self.layout(p)][i] == EnvState::Present,
                _ => false,
            },
            None => false,
        };
        if ok {
            self.advance(s, p);
        } else {
            self.finish(s, p, Life::Done(Outcome::EnvVanished));
        }
    }

    /// `release-root-lock`: close the descriptor on `.lock`; a copy the child
    /// inherited keeps the lock.
    fn release_root_lock(&self, s: &mut State, p: ProcId) {
        Self::close_root_fd(s, p);
        self.advance(s, p);
    }

    /// The uv process's own descriptor on `.lock` goes (inherited copies stay).
    fn close_root_fd(s: &mut State, p: ProcId) {
        if let Some(fd) = s.procs[p].root_fd.as_mut() {
            fd.parent = false;
        }
        s.procs[p].root_fd = RootFd::normalize(s.procs[p].root_fd);
    }

    /// `spawn-child`: fails if the environment is gone; the child inherits the
    /// environment lock, and the locked descriptor on `.lock`, where the design says
    /// so. Under uv's `run --with` the child's overlay is made in the builds bucket.
    fn spawn_child(&self, s: &mut State, p: ProcId) {
        if !self.env_present(s, p) {
            s.procs[p].child = Child::FailedToSpawn;
            self.finish(s, p, Life::Done(Outcome::SpawnFailed));
            return;
        }
        s.procs[p].child = Child::Running;
        let design = &self.procs[p].design;
        if design.run_overlay && self.procs[p].kind.env() == Some(EnvName::With) {
            s.fs.root = true;
            s.fs.buckets = true;
        }
        if design.child_inherits_env_lock
            && let Some(fd) = s.procs[p].env_fd.as_mut()
        {
            fd.child = true;
        }
        if design.child_inherits_root_lock
            && let Some(fd) = s.procs[p].root_fd.as_mut()
            && fd.lock.is_some()
        {
            fd.child = true;
        }
        self.advance(s, p);
    }

    /// `drop-temp-cache`: the temporary cache and its environment go, then the run
    /// closes its descriptor on the temporary cache's lock.
    fn drop_temp_cache(&self, s: &mut State, p: ProcId) {
        if let Temp::Present(_) = s.procs[p].temp {
            s.procs[p].temp = Temp::Gone;
        }
        if let Some(fd) = s.procs[p].env_fd.as_mut() {
            fd.parent = false;
        }
        s.procs[p].env_fd = EnvFd::normalize(s.procs[p].env_fd);
        self.advance(s, p);
    }

    /// `close-env-lock`: the run's descriptor goes; inherited copies keep the lock.
    fn close_env_lock(&self, s: &mut State, p: ProcId) {
        if let Some(fd) = s.procs[p].env_fd.as_mut() {
            fd.parent = false;
        }
        s.procs[p].env_fd = EnvFd::normalize(s.procs[p].env_fd);
        self.advance(s, p);
    }

    /// `unlock-env-lock`: `LOCK_UN` releases the lock for every descriptor sharing it.
    fn unlock_env_lock(&self, s: &mut State, p: ProcId) {
        s.procs[p].env_fd = None;
        self.advance(s, p);
    }

    /// `delete-entries`: every cached environment that no lock protects (under a design
    /// with environment locks; all of them otherwise) goes, and with it any build in
    /// progress; a clean (not a prune) also removes the scaffold, and the buckets when no
    /// environment lock can live in them. A clean that went on without `.lock` under
    /// `OnBusy::OwnLayout` deletes only the unlocked environments of its own layout.
    ///
    /// Noted for the properties (only where a process of the checked policy is the one
    /// deleting or the one deleted against): deleting what `.lock` protects (the
    /// scaffold, uv's layout) while another process holds `.lock`, or an environment
    /// whose environment lock another holds (`mutual-exclusion`); deleting anything while
    /// another holds `.lock` (`root-lock-exclusion`); deleting, as the checked policy, an
    /// environment another release's process uses under its own release's protection
    /// (`live-env-intact`); leaving an unused environment behind.
    fn delete_entries(&self, s: &mut State, p: ProcId) {
        let info = &self.procs[p];
        let own_layout_only =
            s.procs[p].forced && info.policy.on_busy(info.kind) == OnBusy::OwnLayout;
        let guarded = info.design.env_lock != EnvLock::None;
        let involved = |q: ProcId| self.is_checked(p) || self.is_checked(q);
        let root_holders: Vec<ProcId> = (0..self.procs.len())
            .filter(|&q| q != p && self.holds_root_lock(s, q) && involved(q))
            .collect();
        if !root_holders.is_empty() {
            s.history.deleted_beside_root_holder = true;
            // `.lock` protects the scaffold and uv's layout (layout 0).
            if !own_layout_only || self.layout(p) == 0 {
                s.history.deleted_under_lock_holder = true;
            }
        }
        if s.fs.root {
            for l in 0..2 {
                if own_layout_only && l != self.layout(p) {
                    continue;
                }
                for (i, env) in EnvName::CACHED.iter().enumerate() {
                    if s.fs.envs[l][i] == EnvState::Absent
                        || (guarded && self.env_locked(s, l, *env))
                    {
                        continue;
                    }
                    s.fs.envs[l][i] = EnvState::Absent;
                    for q in 0..self.procs.len() {
                        if q == p || self.layout(q) != l || self.procs[q].kind.env() != Some(*env) {
                            continue;
                        }
                        if s.procs[q].env_fd.is_some() && involved(q) {
                            s.history.deleted_under_lock_holder = true;
                        }
                        if self.is_checked(p)
                            && !self.is_checked(q)
                            && self.uses_env(s, q)
                            && self.protected(s, q)
                        {
                            s.history.broke_protected_env = true;
                        }
                        if s.procs[q].build == Build::InProgress {
                            s.procs[q].build = Build::Lost;
                        }
                    }
                }
            }
            if info.kind != Kind::Prune && !own_layout_only {
                s.fs.scaffold = false;
                if !guarded {
                    s.fs.buckets = false;
                }
            }
        }
        self.note_clean_done(s, p);
        self.advance(s, p);
    }

    /// `move-to-trash`: what `delete-entries` deletes leaves the cache's namespace in the
    /// same way (one rename each, into this clean's trash directory), so every process
    /// sees the same as after a deletion and the same facts are noted; the trash now
    /// holds it.
    fn move_to_trash(&self, s: &mut State, p: ProcId) {
        if s.fs.root {
            s.fs.trash = true;
        }
        self.delete_entries(s, p);
    }

    /// `delete-trash`: every trash directory goes, this clean's and any a killed clean
    /// left. No process ever opens a path under `.trash/` and nothing is ever moved out
    /// of it, so this deletion changes nothing any process sees, whoever holds what.
    fn delete_trash(&self, s: &mut State, p: ProcId) {
        s.fs.trash = false;
        self.advance(s, p);
    }

    /// True if process `p`'s environment is protected under its own policy: it holds
    /// its environment lock, or a lock through its descriptor on `.lock` (the only
    /// protection uv's releases know).
    fn protected(&self, s: &State, p: ProcId) -> bool {
        s.procs[p].env_fd.is_some() || self.holds_root_lock(s, p)
    }

    /// `unlink-lock-file`: only a clean that got the lock unlinks `.lock`.
    fn unlink_lock_file(&self, s: &mut State, p: ProcId) {
        if !s.procs[p].forced {
            s.fs.lock_path = None;
        }
        self.advance(s, p);
    }

    /// `remove-root`: succeeds on an empty root; a root that is not empty is kept, or
    /// fails the clean under a strict design (uv 0.8.19).
    fn remove_root(&self, s: &mut State, p: ProcId) {
        let empty = !s.fs.scaffold
            && !s.fs.buckets
            && s.fs.lock_path.is_none()
            && s.fs.envs.iter().flatten().all(|e| *e == EnvState::Absent);
        if empty {
            s.fs.root = false;
        } else if self.procs[p].design.remove_root_strict {
            self.finish(s, p, Life::Done(Outcome::RootNotEmpty));
            return;
        }
        self.advance(s, p);
    }

    /// `remove-leaked-temp`: every `--no-cache` run's temporary cache that the design
    /// lets a prune remove goes: under [`PruneTemp::Unlocked`] those whose lock nobody
    /// holds (no live run, no child with the inherited descriptor), under
    /// [`PruneTemp::Any`] every one.
    fn remove_leaked_temp(&self, s: &mut State, p: ProcId) {
        for q in 0..self.procs.len() {
            let st = &mut s.procs[q];
            let removable = match self.procs[p].design.prune_temp {
                PruneTemp::Never => false,
                PruneTemp::Unlocked => st.env_fd.is_none(),
                PruneTemp::Any => true,
            };
            if self.procs[q].kind.env() == Some(EnvName::Temp)
                && matches!(st.temp, Temp::Present(_))
                && removable
            {
                st.temp = Temp::Gone;
            }
        }
        self.advance(s, p);
    }

    /// Event `e` happens to process `p` (or to its child or daemon).
    fn take_event(&self, s: &mut State, p: ProcId, e: Event) {
        match e {
            Event::Killed => self.finish(s, p, Life::Killed),
            Event::LockTimeout => self.finish(s, p, Life::Done(Outcome::TimedOut)),
            Event::ChildStartsDaemon => {
                let st = &mut s.procs[p];
                st.daemon = Daemon::Running;
                if let Some(fd) = st.env_fd.as_mut()
                    && fd.child
                {
                    fd.daemon = true;
                }
                if let Some(fd) = st.root_fd.as_mut()
                    && fd.child
                {
                    fd.daemon = true;
                }
            }
            Event::ChildExits => {
                let st = &mut s.procs[p];
                st.child = Child::Exited;
                if let Some(fd) = st.env_fd.as_mut() {
                    fd.child = false;
                }
                st.env_fd = EnvFd::normalize(st.env_fd);
                if let Some(fd) = st.root_fd.as_mut() {
                    fd.child = false;
                }
                st.root_fd = RootFd::normalize(st.root_fd);
            }
            Event::DaemonExits => {
                let st = &mut s.procs[p];
                st.daemon = Daemon::Exited;
                if let Some(fd) = st.env_fd.as_mut() {
                    fd.daemon = false;
                }
                st.env_fd = EnvFd::normalize(st.env_fd);
                if let Some(fd) = st.root_fd.as_mut() {
                    fd.daemon = false;
                }
                st.root_fd = RootFd::normalize(st.root_fd);
            }
        }
    }

    /// The process moves past its step; past the last one it is done.
    fn advance(&self, s: &mut State, p: ProcId) {
        let st = &mut s.procs[p];
        st.at += 1;
        st.life = Life::Ready;
        if st.at as usize == self.procs[p].program.len() {
            self.finish(s, p, Life::Done(Outcome::Ok));
        }
    }

    /// Ends a process: what its destructors do (close descriptors, remove the
    /// temporary cache). A kill skips the destructors: the temporary cache leaks.
    fn finish(&self, s: &mut State, p: ProcId, life: Life) {
        Self::close_root_fd(s, p);
        let st = &mut s.procs[p];
        st.life = life;
        st.awaited = 0;
        if let Some(fd) = st.env_fd.as_mut() {
            fd.parent = false;
        }
        st.env_fd = EnvFd::normalize(st.env_fd);
        // A kept temporary cache (`DropTemp::Never`) has no destructor either.
        if life != Life::Killed
            && self.procs[p].design.drop_temp != DropTemp::Never
            && let Temp::Present(_) = st.temp
        {
            st.temp = Temp::Gone;
        }
    }

    /// A run got the cache: check that no clean that started before it is still
    /// waiting for it (noted if the run or an overtaken clean runs the checked policy).
    fn note_run_got_cache(&self, s: &mut State, p: ProcId) {
        if self.procs[p].kind.is_run() {
            let overtaken = s.procs[p].pending_cleans & self.pending_cleans(s);
            let involved = self.is_checked(p)
                || (0..self.procs.len()).any(|c| overtaken & (1 << c) != 0 && self.is_checked(c));
            if overtaken != 0 && involved {
                s.history.overtook_clean = true;
            }
        }
    }

    /// Clean `p` finished its work (deleted, or gave up): if it runs the checked
    /// policy, every unused environment, in either layout, must be gone.
    fn note_clean_done(&self, s: &mut State, p: ProcId) {
        if !self.is_checked(p) {
            return;
        }
        let left = (0..2).any(|l| {
            EnvName::CACHED
                .iter()
                .enumerate()
                .any(|(i, env)| s.fs.envs[l][i] != EnvState::Absent && !self.env_in_use(s, l, *env))
        });
        if left {
            s.history.left_unused_env = true;
        }
    }
}

impl Model for CacheModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial_state()]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for p in 0..self.procs.len() {
            if self.step_enabled(s, p)
                && let Some(step) = self.next_step(s, p)
            {
                out.push(Action::Step(p, step));
            }
            for e in Event::ALL {
                if self.event_enabled(s, p, e) {
                    out.push(Action::Event(p, e));
                }
            }
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        Some(self.after(s, action))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.checked.iter().map(|p| p.to_stateright()).collect()
    }
}
