//! Settings read from the environment.
//!
//! `CACHELOCK_LOCK_TIMEOUT` (else `UV_LOCK_TIMEOUT`) bounds every lock wait, in seconds
//! (a decimal like `0.5` is accepted). Unset or empty means uv's default of 300 s. A value
//! that does not parse is an error, never a silent default.

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
