//! The command's advice: what to do about an error or a wait, in terms of this command
//! line (its flags, its environment variables, its other subcommands). The library's
//! errors and notices say what happened; the command adds the advice when it prints them.

use cachelock::Error;

/// What the command is doing, as far as advice depends on it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Doing {
    /// A clean or prune (`--force` would not wait for the cache lock).
    pub clean: bool,
}

/// Added to the one-line message of a clean that waits for the cache lock.
pub const CLEAN_WAITS: &str = " (use --force to override)";

/// Added after the entries a prune left alone.
pub const LEFT_ALONE: &str =
    "; to prune a uv cache use `uv cache prune`, to empty it `cachelock clean`";

/// An error and its causes, each said once (a cause whose text the message already
/// contains, an OS error that the message quotes, is left out), then the advice for it.
pub fn error_message(e: &anyhow::Error, doing: Doing) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    if let Some(advice) = e.chain().find_map(|c| advice(c.downcast_ref()?, doing)) {
        text.push_str(&advice);
    }
    text
}

/// What to do about a library error, on this command line.
pub fn advice(e: &Error, doing: Doing) -> Option<String> {
    match e {
        Error::LockTimeout { .. } => Some(format!(
            "; stop those processes{}, or raise CACHELOCK_LOCK_TIMEOUT (or UV_LOCK_TIMEOUT; \
             default 300 s)",
            if doing.clean {
                ", use `cachelock clean --force`"
            } else {
                ""
            }
        )),
        Error::NotACache { .. } => Some("; point --cache-dir at a cache directory".into()),
        Error::NoCacheDir => Some("; pass --cache-dir".into()),
        _ => None,
    }
}

/// What `hold` says when it cannot have the lock: busy (`--nonblock`), or timed out.
pub fn hold_conflict(e: &Error, nonblock: bool) -> String {
    match e {
        Error::LockTimeout {
            path,
            mode,
            holders,
            ..
        } if nonblock => {
            let held = if holders.is_empty() {
                String::new()
            } else {
                format!(" (held by {})", holders.join(", "))
            };
            format!(
                "`{}` is locked{held}, and --nonblock does not wait for {} lock",
                path.display(),
                cachelock::error::mode_with_article(*mode)
            )
        }
        Error::LockTimeout { .. } => {
            format!("{e}; wait for those processes to end, or raise --timeout")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn timeout() -> anyhow::Error {
        Error::LockTimeout {
            path: PathBuf::from("/c/.lock"),
            mode: cachelock::Mode::Exclusive,
            waited: Duration::from_secs(3),
            holders: vec!["pid 7 (sleep 9)".into()],
        }
        .into()
    }

    #[test]
    fn a_clean_that_timed_out_is_told_about_force_and_the_timeout() {
        let text = error_message(&timeout(), Doing { clean: true });
        assert_eq!(
            text,
            "timed out after 3s waiting for an exclusive lock on `/c/.lock` (held by pid 7 \
             (sleep 9)); stop those processes, use `cachelock clean --force`, or raise \
             CACHELOCK_LOCK_TIMEOUT (or UV_LOCK_TIMEOUT; default 300 s)"
        );
        let run = error_message(&timeout(), Doing::default());
        assert!(
            hold_conflict(&Error::NoCacheDir, true).starts_with("no cache directory"),
            "not a lock conflict: the error as it is"
        );
        assert_eq!(
            hold_conflict(timeout().downcast_ref().expect("an Error"), true),
            "`/c/.lock` is locked (held by pid 7 (sleep 9)), and --nonblock does not wait for \
             an exclusive lock"
        );
        assert!(run.ends_with("stop those processes, or raise CACHELOCK_LOCK_TIMEOUT (or UV_LOCK_TIMEOUT; default 300 s)"), "{run}");
    }
}
