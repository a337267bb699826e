//! Errors: each says what happened, what was being done to which path. Advice in terms
//! of a command line (which flag or variable to use) is the command's to add.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cachelock_model::Mode;

/// Everything that can go wrong in a session, a lock wait or a status report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("could not {action} `{}`: {source}; check that the path exists and is writable", path.display())]
    Io {
        /// What was being done ("create the lock file", …).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A lock wait exceeded the lock timeout.
    #[error(
        "timed out after {}s waiting for {} lock on `{}`{}",
        waited.as_secs_f64().round(),
        mode_with_article(*mode),
        path.display(),
        held_by(holders)
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// The mode that was requested.
        mode: Mode,
        /// How long the wait lasted.
        waited: Duration,
        /// Who held the lock when the wait gave up (pid and command line).
        holders: Vec<String>,
    },
    /// `CACHELOCK_LOCK_TIMEOUT` or `UV_LOCK_TIMEOUT` does not parse.
    #[error(
        "{var}=`{value}` is not a number of seconds; set it to a non-negative number like `30`, or unset it"
    )]
    BadTimeout {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A clean was asked to delete something that is not a cache.
    #[error("refusing to clean `{}`: {reason}", path.display())]
    NotACache {
        /// The directory.
        path: PathBuf,
        /// Why it is not taken for a cache.
        reason: &'static str,
    },
    /// An environment, script or tool name that cannot be a directory name.
    #[error("`{name}` cannot name an environment: {reason}; use letters, digits and `-_.@+=`")]
    BadEnvName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Spawning the child failed for a reason other than a missing environment.
    #[error(
        "failed to spawn `{program}`: {source}; check that the command exists and is executable"
    )]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No cache directory was given and none can be derived from the environment.
    #[error(
        "no cache directory: none was named, and neither CACHELOCK_CACHE_DIR, UV_CACHE_DIR (uv's cache), XDG_CACHE_HOME nor HOME is set"
    )]
    NoCacheDir,
    /// A protocol step could not be carried out (the model's "the step fails"): the
    /// message says what is missing and what to do.
    #[error("{message}")]
    StepFailed {
        /// The step that failed.
        step: cachelock_model::Step,
        /// What happened.
        message: String,
    },
    /// The session was configured inconsistently.
    #[error("{0}")]
    Config(String),
    /// `step` was called on a session that has finished.
    #[error("the session has finished; create a new session to run again")]
    Finished,
}

impl Error {
    /// Wraps an `io::Error` with what was being done to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The exit status the command uses for this error (uv's convention: 2).
    pub fn exit_code(&self) -> i32 {
        2
    }
}

/// "a shared", "an exclusive": the mode's name with its article.
pub fn mode_with_article(mode: Mode) -> String {
    let name = mode.name();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

fn held_by(holders: &[String]) -> String {
    if holders.is_empty() {
        String::new()
    } else {
        format!(" (held by {})", holders.join(", "))
    }
}

/// Extension to attach an action and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
