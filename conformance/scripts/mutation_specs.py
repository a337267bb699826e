"""The deliberate breaks that `mutations.py` applies, one at a time.

Each entry names the rule it breaks (as `model/src/protocol.rs`'s module doc or
`impl/src/guards.rs`'s drop order states it), the file, the exact text to replace (it
must occur once) and its replacement. Keep each change to the smallest edit that
breaks exactly one rule.
"""

SESSION = "impl/src/session.rs"
ANNOUNCE = "impl/src/announce.rs"
GUARDS = "impl/src/guards.rs"
CHILD = "impl/src/child.rs"
CACHE = "impl/src/cache.rs"
SAFE_FS = "impl/src/safe_fs.rs"

SPECS = [
    dict(
        id="run-keeps-root-lock",
        rule="a run releases the root lock before spawning (cachelock)",
        file=SESSION,
        old="if let Some(lock) = self.held.root_lock.take() {\n                    self.clean_held_lock",
        new="if let Some(lock) = self.held.root_lock.as_ref() {\n                    self.clean_held_lock",
        change="`release-root-lock` keeps the root lock",
    ),
    dict(
        id="skip-env-lock",
        rule="the environment lock is taken before the environment is built or reused",
        file=SESSION,
        old="if !self.acquire(&mut lock, Mode::Shared, wait, self.lock_timeout(), &why)? {",
        new="if false && !self.acquire(&mut lock, Mode::Shared, wait, self.lock_timeout(), &why)? {",
        change="`lock-env` opens the lock file but never locks it",
    ),
    dict(
        id="child-does-not-inherit",
        rule="the child inherits the environment lock's descriptor",
        file=CHILD,
        old="if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {",
        new="if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {",
        change="the environment lock keeps FD_CLOEXEC, so the child does not inherit it",
    ),
    dict(
        id="unlock-instead-of-close",
        rule="a run ends its part with close, never LOCK_UN",
        file=SESSION,
        old="Step::CloseEnvLock => {\n                self.held.env_lock = None;",
        new="Step::CloseEnvLock => {\n                if let Some(mut lock) = self.held.env_lock.take() {\n                    lock.unlock()?;\n                }",
        change="`close-env-lock` unlocks (for every holder of the description) instead of closing",
    ),
    dict(
        id="delete-locked-env",
        rule="a clean deletes an environment only while holding its lock exclusive",
        file=SESSION,
        old="let env_locks =\n                    self.design.env_lock != EnvLock::None && !faults::is(Fault::DeleteUnlockable);",
        new="let env_locks = false && self.design.env_lock != EnvLock::None && !faults::is(Fault::DeleteUnlockable);",
        change="`delete-entries` ignores environment locks",
    ),
    dict(
        id="announce-before-lock",
        rule="a clean's announcement is already locked when it appears",
        file=ANNOUNCE,
        old="    file.try_lock().map_err(|e| {\n        Error::io(\n            \"lock the clean announcement\",\n            dir.child_path(&temp),\n            e.into(),\n        )\n    })?;\n",
        new="",
        change="the announcement is locked only after it got its final name",
        after=("    Ok(Some(Announcement {", "    file.try_lock().map_err(|e| Error::io(\"lock\", &path, e.into()))?;\n    Ok(Some(Announcement {"),
    ),
    dict(
        id="skip-await-cleans",
        rule="a run's first step waits for the cleans announced before it started",
        file=SESSION,
        old="Step::AwaitAnnouncedCleans => self.await_announced_cleans(wait),",
        new="Step::AwaitAnnouncedCleans => Ok(StepOutcome::Done),",
        change="`await-announced-cleans` does nothing",
    ),
    dict(
        id="drop-temp-before-spawn",
        rule="a --no-cache run keeps its temporary cache until its child has exited",
        file=SESSION,
        old="if faults::is(Fault::DropTempBeforeSpawn) {",
        new="if true {",
        change="`spawn-child` removes the temporary cache first (uv 0.8.19's bug)",
    ),
    dict(
        id="forget-a-wait",
        rule="a lock step that finds the lock busy waits for it",
        file=SESSION,
        old="if lock.try_lock(mode)? == TryLock::Acquired {\n            return Ok(StepOutcome::Done);\n        }\n        if step == Step::LockExclusive {",
        new="if lock.try_lock(mode)? == TryLock::Acquired || true {\n            return Ok(StepOutcome::Done);\n        }\n        if step == Step::LockExclusive {",
        change="a busy root lock counts as taken",
    ),
    dict(
        id="clean-releases-before-delete",
        rule="a clean deletes only while it holds the root lock",
        file=SESSION,
        old="let scaffold = kind != Kind::Prune && !self.own_layout_only;",
        new="let scaffold = kind != Kind::Prune && !self.own_layout_only;\n                self.held.root_lock = None;",
        change="`delete-entries` drops the root lock first",
    ),
    dict(
        id="temp-cache-before-child",
        rule="drop order 1: the child is waited for before anything it uses goes",
        file=GUARDS,
        old="    /// The child (its guard waits for it on drop).\n    pub child: Option<P::Child>,\n",
        new="",
        change="`Held.child` moves after the temporary cache (field order is drop order)",
        after=("    pub temp_lock: Option<P::Lock>,\n", "    pub temp_lock: Option<P::Lock>,\n    /// The child.\n    pub child: Option<P::Child>,\n"),
    ),
    dict(
        id="temp-lock-before-temp-cache",
        rule="drop order 6: the temporary cache's lock is released only once it is gone",
        file=GUARDS,
        old="    /// The temporary cache of `--no-cache`.\n    pub temp_cache: Option<P::Dir>,\n    /// The temporary cache's `.lock`, held shared while the cache is in use.\n    pub temp_lock: Option<P::Lock>,\n",
        new="    /// The temporary cache's `.lock`, held shared while the cache is in use.\n    pub temp_lock: Option<P::Lock>,\n    /// The temporary cache of `--no-cache`.\n    pub temp_cache: Option<P::Dir>,\n",
        change="`Held.temp_lock` drops before `Held.temp_cache`",
    ),
    dict(
        id="announcement-withdrawn-first",
        rule="drop order 7: a clean's announcement is withdrawn last",
        file=GUARDS,
        old="    /// The child (its guard waits for it on drop).\n    pub child: Option<P::Child>,\n",
        new="    /// A clean's announcement.\n    pub announcement: Option<P::Announcement>,\n    /// The child (its guard waits for it on drop).\n    pub child: Option<P::Child>,\n",
        change="`Held.announcement` drops first",
        after=("    /// A clean's announcement.\n    pub announcement: Option<P::Announcement>,\n}", "}"),
    ),
    dict(
        id="unlink-env-lock",
        rule="no lock file is ever unlinked (an environment's lock file outlives its environment)",
        file=CACHE,
        old="remove_env(root, envs, &name, bin, report)?;\n                crate::faults::pause(\"env-deleted\");",
        new="remove_env(root, envs, &name, bin, report)?;\n                let _ = envs.remove_file(&lock_name);\n                crate::faults::pause(\"env-deleted\");",
        change="a clean unlinks `environments/<env>.lock` with the environment",
    ),
    dict(
        id="builds-not-spared",
        rule="a build is spared while its environment's lock is held",
        file=CACHE,
        old="if lock.try_lock(Mode::Exclusive)? == TryLock::Acquired {\n                    bin.discard(builds, &name, report)?;",
        new="if lock.try_lock(Mode::Exclusive)? == TryLock::Acquired || true {\n                    bin.discard(builds, &name, report)?;",
        change="`delete-entries` removes builds whatever their environment's lock",
    ),
    dict(
        id="follow-links",
        rule="deletion never follows a link (directories are opened with O_NOFOLLOW)",
        file=SAFE_FS,
        old="    .union(OFlags::NOFOLLOW)\n    .union(OFlags::CLOEXEC);",
        new="    .union(OFlags::CLOEXEC);",
        change="directories are opened without `O_NOFOLLOW`",
    ),
]
