//! Typed settings from environment variables, each declared once (name,
//! default, meaning) with [`settings!`](crate::settings), read only through
//! its declaration, with defaults that work on a developer machine and
//! errors that name the offending variable. The README's configuration
//! table is generated from the declarations (`quill-gateway`'s test
//! `readme::the_configuration_table_is_generated_from_the_declarations`).

use std::{fmt::Display, str::FromStr, time::Duration};

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// A secret setting: its `Debug` prints `[REDACTED]`, and reading it
/// takes an explicit `expose_secret()`.
pub type Secret = secrecy::SecretString;

/// One environment variable. Declare it with [`settings!`](crate::settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// The value used when the variable is unset or empty, as the README
    /// shows it: empty for none, or `(a description)` for a default the
    /// code computes (read those with [`Setting::get_or`]).
    pub default: &'static str,
    /// What it does, from the declaration's doc comment.
    pub doc: &'static str,
}

impl Setting {
    /// The value set in the environment, trimmed; unset and empty are `None`.
    pub fn value(&self) -> Option<String> {
        std::env::var(self.name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value set, or the declared default; `None` when neither exists.
    pub fn value_or_default(&self) -> Option<String> {
        self.value()
            .or_else(|| (!self.default.is_empty()).then(|| self.default.to_owned()))
    }

    /// The value set, or the declared default, as text; empty when neither
    /// exists (for settings where empty means "none", such as a prefix).
    pub fn text(&self) -> String {
        self.value_or_default().unwrap_or_default()
    }

    /// Whether the default is a description the code computes.
    pub fn computed_default(&self) -> bool {
        self.default.starts_with('(')
    }

    /// The value (or the declared default) parsed as `T`.
    pub fn get<T>(&self) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        debug_assert!(
            !self.computed_default(),
            "{} computes its default",
            self.name
        );
        let text = self
            .value_or_default()
            .ok_or_else(|| self.invalid("", "must be set"))?;
        self.parse(text)
    }

    /// The value parsed as `T`, or `default` when unset: for defaults the
    /// code computes (the number of cores).
    pub fn get_or<T>(&self, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.value().map_or(Ok(default), |text| self.parse(text))
    }

    /// The value parsed as `T`, `None` when unset and without a default.
    pub fn opt<T>(&self) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.value_or_default()
            .map(|text| self.parse(text))
            .transpose()
    }

    /// A duration given in whole seconds.
    pub fn secs(&self) -> Result<Duration, ConfigError> {
        self.get().map(Duration::from_secs)
    }

    /// A duration given in milliseconds.
    pub fn millis(&self) -> Result<Duration, ConfigError> {
        self.get().map(Duration::from_millis)
    }

    /// The value (or the declared default) as a secret.
    pub fn secret(&self) -> Option<Secret> {
        self.value_or_default().map(Secret::from)
    }

    /// The error for `value`, naming this setting.
    pub fn invalid(&self, value: impl Display, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            name: self.name.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Fails with `reason` unless `ok`.
    pub fn ensure(&self, ok: bool, value: impl Display, reason: &str) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(self.invalid(value, reason))
        }
    }

    fn parse<T>(&self, text: String) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        text.parse()
            .map_err(|e: T::Err| self.invalid(&text, e.to_string()))
    }

    /// The doc comment as one line.
    pub fn description(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Declares settings, each once: a `pub const` per variable, named as the
/// variable, with its default and its doc comment, and a list of all of
/// them for the README's table.
///
/// ```
/// quill_platform::settings! {
///     ALL;
///     /// Where the thing listens.
///     THING_LISTEN = "127.0.0.1:7000";
/// }
/// assert_eq!(THING_LISTEN.name, "THING_LISTEN");
/// assert_eq!(ALL.len(), 1);
/// ```
#[macro_export]
macro_rules! settings {
    ($list:ident; $( $(#[doc = $doc:literal])+ $name:ident = $default:literal; )+) => {
        $(
            $(#[doc = $doc])+
            pub const $name: $crate::config::Setting = $crate::config::Setting {
                name: stringify!($name),
                default: $default,
                doc: concat!($($doc, "\n"),+),
            };
        )+
        /// Every setting declared with these, in order.
        pub const $list: &[$crate::config::Setting] = &[$($name),+];
    };
}

/// The README's configuration table: one row per setting, `groups` naming
/// who reads each list.
pub fn markdown_table(groups: &[(&str, &[Setting])]) -> String {
    let mut table =
        String::from("| variable | default | read by | what it does |\n|---|---|---|---|\n");
    for (readers, settings) in groups {
        for setting in *settings {
            let default = match setting.default {
                "" => "unset".to_owned(),
                computed if setting.computed_default() => {
                    computed.trim_matches(['(', ')']).to_owned()
                }
                literal => format!("`{literal}`"),
            };
            table.push_str(&format!(
                "| `{}` | {default} | {readers} | {} |\n",
                setting.name,
                setting.description().replace('|', "\\|")
            ));
        }
    }
    table
}

/// `DEPLOYMENT_ENVIRONMENT` (`development` when unset), which also names
/// the environment in traces.
pub fn deployment_environment() -> String {
    crate::settings::DEPLOYMENT_ENVIRONMENT
        .value_or_default()
        .unwrap_or_default()
}

/// Whether this is production, where development conveniences (generated
/// keys, sample secrets) must refuse to start instead.
pub fn is_production() -> bool {
    deployment_environment().eq_ignore_ascii_case("production")
}

/// Checks that `urls` names an upstream's replicas as
/// [`Upstream`](crate::balance::Upstream) reads them, naming `setting`
/// otherwise.
pub fn ensure_upstream_urls(setting: &Setting, urls: &str) -> Result<(), ConfigError> {
    crate::balance::Upstream::parse(setting.name, urls, "")
        .map(drop)
        .map_err(|e| setting.invalid(urls, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::settings! {
        TEST_SETTINGS;
        /// A port,
        /// over two lines.
        QUILL_TEST_PORT = "7000";
        /// Computed.
        QUILL_TEST_CORES = "(number of cores)";
        /// Absent.
        QUILL_TEST_ABSENT = "";
    }

    #[test]
    fn declarations_carry_their_name_default_and_doc() {
        assert_eq!(QUILL_TEST_PORT.name, "QUILL_TEST_PORT");
        assert_eq!(QUILL_TEST_PORT.get::<u16>().unwrap(), 7000);
        assert_eq!(QUILL_TEST_PORT.description(), "A port, over two lines.");
        assert_eq!(QUILL_TEST_CORES.get_or(3usize).unwrap(), 3);
        assert_eq!(QUILL_TEST_ABSENT.opt::<u16>().unwrap(), None);
        assert_eq!(QUILL_TEST_ABSENT.text(), "");
        assert!(QUILL_TEST_ABSENT.get::<u16>().is_err());
        assert_eq!(TEST_SETTINGS.len(), 3);
    }

    #[test]
    fn the_table_shows_literal_computed_and_absent_defaults() {
        let table = markdown_table(&[("tests", TEST_SETTINGS)]);
        assert!(table.contains("| `QUILL_TEST_PORT` | `7000` | tests | A port, over two lines. |"));
        assert!(table.contains("| `QUILL_TEST_CORES` | number of cores | tests | Computed. |"));
        assert!(table.contains("| `QUILL_TEST_ABSENT` | unset | tests | Absent. |"));
    }
}
