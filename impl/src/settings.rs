//! Settings read from the environment.
//!
//! `CACHELOCK_LOCK_TIMEOUT` (else `UV_LOCK_TIMEOUT`) bounds every lock wait, in seconds
//! (a decimal like `0.5` is accepted). Unset or empty means uv's default of 300 s. A value
//! that does not parse is an error, never a silent default.
//!
//! The cache directory ([`resolve_cache_dir`]): `--cache-dir` (or its environment form
//! `CACHELOCK_CACHE_DIR`) always wins. Otherwise a command that acts on uv's cache
//! (`status`, `hold`, and every command under a `uv-*` policy) finds it as uv does:
//! `UV_CACHE_DIR`, then `$XDG_CACHE_HOME/uv` (an absolute `XDG_CACHE_HOME` only), then
//! `$HOME/.cache/uv`. Under cachelock's own policies the default is cachelock's own cache:
//! `$XDG_CACHE_HOME/cachelock`, then `$HOME/.cache/cachelock`. Empty variables count as
//! unset.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::session::DEFAULT_LOCK_TIMEOUT;

/// The lock timeout from `CACHELOCK_LOCK_TIMEOUT` or `UV_LOCK_TIMEOUT`.
pub fn lock_timeout_from_env() -> Result<Duration, Error> {
    for var in ["CACHELOCK_LOCK_TIMEOUT", "UV_LOCK_TIMEOUT"] {
        if let Some(value) = std::env::var_os(var) {
            let value = value.to_string_lossy().into_owned();
            if value.trim().is_empty() {
                continue;
            }
            return parse_timeout(var, &value);
        }
    }
    Ok(DEFAULT_LOCK_TIMEOUT)
}

/// Whose cache a command acts on when none is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOwner {
    /// uv's cache: `UV_CACHE_DIR`, `$XDG_CACHE_HOME/uv`, `~/.cache/uv`.
    Uv,
    /// cachelock's own: `$XDG_CACHE_HOME/cachelock`, `~/.cache/cachelock`.
    Cachelock,
}

/// A cache directory and where it came from (to tell the user which cache is used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCache {
    /// The directory.
    pub root: PathBuf,
    /// Where it came from: `--cache-dir`, `CACHELOCK_CACHE_DIR`, `UV_CACHE_DIR`,
    /// `$XDG_CACHE_HOME/uv`, `~/.cache/uv`, … .
    pub source: &'static str,
}

/// Resolves the cache directory by the rule in the module documentation. `flag` is
/// `--cache-dir`.
pub fn resolve_cache_dir(flag: Option<&Path>, owner: CacheOwner) -> Result<ResolvedCache, Error> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let found = |root: PathBuf, source| Ok(ResolvedCache { root, source });
    if let Some(dir) = flag {
        return found(dir.to_path_buf(), "--cache-dir");
    }
    if let Some(dir) = var("CACHELOCK_CACHE_DIR") {
        return found(PathBuf::from(dir), "CACHELOCK_CACHE_DIR");
    }
    let (name, xdg_source, home_source) = match owner {
        CacheOwner::Uv => {
            if let Some(dir) = var("UV_CACHE_DIR") {
                return found(PathBuf::from(dir), "UV_CACHE_DIR");
            }
            ("uv", "$XDG_CACHE_HOME/uv", "~/.cache/uv")
        }
        CacheOwner::Cachelock => (
            "cachelock",
            "$XDG_CACHE_HOME/cachelock",
            "~/.cache/cachelock",
        ),
    };
    if let Some(xdg) = var("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return found(xdg.join(name), xdg_source);
    }
    match var("HOME") {
        Some(home) => found(PathBuf::from(home).join(".cache").join(name), home_source),
        None => Err(Error::NoCacheDir),
    }
}

/// Parses a number of seconds for `var`.
pub fn parse_timeout(var: &'static str, value: &str) -> Result<Duration, Error> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| Error::BadTimeout {
            var,
            value: value.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_or_are_refused() {
        assert_eq!(parse_timeout("T", "30").ok(), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_timeout("T", "0.5").ok(),
            Some(Duration::from_millis(500))
        );
        for bad in ["abc", "-1", "nan", "inf", "5s"] {
            let err = parse_timeout("T", bad).unwrap_err();
            assert!(
                err.to_string().contains("is not a number of seconds"),
                "{err}"
            );
        }
    }
}
