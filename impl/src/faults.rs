//! Injected faults, to prove that the test suites notice a broken protocol.
//!
//! Compiled in only with the `faults` cargo feature (never in the default build), and
//! even then inert unless `CACHELOCK_FAULT` names one:
//! - `kill-at-step=N`: the process kills itself with SIGKILL just before the program's
//!   step number N (0-based), as a crash at the worst moment would;
//! - `drop-temp-before-spawn`: the temporary cache is removed just before the child is
//!   spawned (uv 0.8.19's bug, under any policy);
//! - `release-before-child-exit`: the root lock is released right after the spawn;
//! - `delete-unlockable`: a clean deletes environments whose lock it could not take;
//! - `skip-lock-step`: `lock-shared`/`lock-exclusive` report success without locking;
//! - `flock-unsupported`: every lock attempt fails as on a file system without flock(2)
//!   (`ErrorKind::Unsupported`), to exercise the fallback no local file system here has.
//!
//! Pause points, for tests that must look inside one step (`CACHELOCK_PAUSE=POINT:DIR`,
//! same feature): at [`pause`]`(POINT)` the process writes its pid to `DIR/POINT.reached`
//! and blocks until the test opens the FIFO `DIR/POINT.go` for writing and closes it.
//! The points: `announcement-published` (a clean's announcement has just got its final
//! name), `env-deleted` (a clean has just deleted an environment, under its lock),
//! `moved-to-trash` (a clean's `move-to-trash` is done, `.lock` still held) and
//! `trash-deleting` (a `delete-trash` has removed the first entry of a trash directory
//! it locked, and not the others).

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    KillAtStep(usize),
    DropTempBeforeSpawn,
    ReleaseBeforeChildExit,
    DeleteUnlockable,
    SkipLockStep,
    FlockUnsupported,
}

#[cfg(any(test, feature = "faults"))]
impl Fault {
    /// Parses a `CACHELOCK_FAULT` value.
    pub fn parse(text: &str) -> Option<Fault> {
        Some(match text {
            "drop-temp-before-spawn" => Fault::DropTempBeforeSpawn,
            "release-before-child-exit" => Fault::ReleaseBeforeChildExit,
            "delete-unlockable" => Fault::DeleteUnlockable,
            "skip-lock-step" => Fault::SkipLockStep,
            "flock-unsupported" => Fault::FlockUnsupported,
            other => Fault::KillAtStep(other.strip_prefix("kill-at-step=")?.parse().ok()?),
        })
    }
}

/// The fault this process was asked to inject, if the feature is on.
#[cfg(feature = "faults")]
pub fn active() -> Option<Fault> {
    static FAULT: std::sync::OnceLock<Option<Fault>> = std::sync::OnceLock::new();
    *FAULT.get_or_init(|| {
        let text = std::env::var("CACHELOCK_FAULT").ok()?;
        let fault = Fault::parse(&text);
        if fault.is_none() {
            tracing::warn!("ignoring unknown CACHELOCK_FAULT `{text}`");
        }
        fault
    })
}

/// The fault this process was asked to inject: never, without the `faults` feature.
#[cfg(not(feature = "faults"))]
pub fn active() -> Option<Fault> {
    None
}

/// Blocks at pause point `point` if `CACHELOCK_PAUSE` names it (see the module doc).
#[cfg(feature = "faults")]
pub fn pause(point: &str) {
    let Ok(value) = std::env::var("CACHELOCK_PAUSE") else {
        return;
    };
    let Some((name, dir)) = value.split_once(':') else {
        return;
    };
    if name != point {
        return;
    }
    let dir = std::path::Path::new(dir);
    // Written under another name, then renamed: the test never reads it half written.
    let reached = dir.join(format!("{point}.reached"));
    let partial = dir.join(format!(".{point}.reached"));
    if std::fs::write(&partial, std::process::id().to_string()).is_ok() {
        let _ = std::fs::rename(&partial, &reached);
    }
    // Opening a FIFO for reading blocks until a writer opens it; EOF when it closes.
    let _ = std::fs::read(dir.join(format!("{point}.go")));
}

/// Pause points: none without the `faults` feature.
#[cfg(not(feature = "faults"))]
pub fn pause(_point: &str) {}

/// True if `fault` is the one injected.
pub fn is(fault: Fault) -> bool {
    active() == Some(fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_parse() {
        assert_eq!(Fault::parse("kill-at-step=3"), Some(Fault::KillAtStep(3)));
        assert_eq!(Fault::parse("skip-lock-step"), Some(Fault::SkipLockStep));
        assert_eq!(Fault::parse("kill-at-step=x"), None);
        assert_eq!(Fault::parse("nonsense"), None);
    }
}
