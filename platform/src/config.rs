//! Typed settings from environment variables, with defaults that work on a
//! developer machine and errors that name the offending variable.

use std::{fmt::Display, str::FromStr, time::Duration};

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// Reads `name`, falling back to `default` when unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                value,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// A secret setting: its `Debug` prints `[REDACTED]`, and reading it
/// takes an explicit `expose_secret()`.
pub type Secret = secrecy::SecretString;

/// Reads an optional secret; unset and empty are both `None`.
pub fn env_secret(name: &str) -> Option<Secret> {
    env_opt(name).map(Secret::from)
}

/// Reads an optional setting; unset and empty are both `None`.
pub fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a duration given in whole seconds.
pub fn env_secs(name: &str, default_secs: u64) -> Result<Duration, ConfigError> {
    env_or(name, default_secs).map(Duration::from_secs)
}

/// Reads a duration given in milliseconds.
pub fn env_millis(name: &str, default_millis: u64) -> Result<Duration, ConfigError> {
    env_or(name, default_millis).map(Duration::from_millis)
}

/// `DEPLOYMENT_ENVIRONMENT` (`development` when unset), which also names
/// the environment in traces.
pub fn deployment_environment() -> String {
    env_opt("DEPLOYMENT_ENVIRONMENT")
        .map(|e| e.trim().to_owned())
        .unwrap_or_else(|| "development".to_owned())
}

/// Whether this is production, where development conveniences (generated
/// keys, sample secrets) must refuse to start instead.
pub fn is_production() -> bool {
    deployment_environment().eq_ignore_ascii_case("production")
}

/// Fails with a clear message unless `ok`.
pub fn ensure(ok: bool, name: &str, value: impl Display, reason: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            name: name.to_owned(),
            value: value.to_string(),
            reason: reason.to_owned(),
        })
    }
}
