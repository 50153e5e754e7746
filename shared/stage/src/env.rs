//! Reading a stage's configuration from environment variables (docs/CONTRACTS.md), the same
//! way in every service's `Config::from_env`.
//!
//! Variables are read through a lookup function, the process environment in production and a
//! map in tests, so that tests never change the environment of the test process. A blank
//! value counts as unset: templates render an unset parameter as an empty string.

use std::str::FromStr;

/// A variable that is missing or cannot be used. Services turn it into their own error type,
/// which decides how it is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required variable is not set (or blank).
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
}

/// Environment variables, read through a lookup.
#[derive(Debug, Clone)]
pub struct Env<F> {
    lookup: F,
}

/// Signature of the process environment's lookup.
pub type ProcessLookup = fn(&str) -> Option<String>;

fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Env<ProcessLookup> {
    /// The process environment.
    pub fn process() -> Self {
        Env {
            lookup: process_var,
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Variables as `lookup` gives them (a map in tests).
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The raw value of `name`, blank or not.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The value of `name`, which must be set and not blank.
    ///
    /// # Errors
    /// [`EnvError::Missing`].
    pub fn required(&self, name: &'static str) -> Result<String, EnvError> {
        self.var(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or(EnvError::Missing(name))
    }

    /// `name` parsed (surrounding white space ignored) and accepted by `valid`, or `default`
    /// when it is unset or blank; `expected` says what a valid value is.
    ///
    /// # Errors
    /// [`EnvError::Invalid`] when the value does not parse or `valid` refuses it.
    pub fn parsed_or<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
        valid: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Result<T, EnvError> {
        let Some(value) = self.var(name).filter(|v| !v.trim().is_empty()) else {
            return Ok(default);
        };
        match value.trim().parse::<T>() {
            Ok(parsed) if valid(&parsed) => Ok(parsed),
            _ => Err(EnvError::Invalid {
                name,
                value,
                reason: format!("expected {expected}"),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::new(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn required_values_must_not_be_blank() {
        let e = env(&[("A", "x"), ("B", "  "), ("C", "")]);
        assert_eq!(e.required("A").unwrap(), "x");
        assert_eq!(e.required("B").unwrap_err(), EnvError::Missing("B"));
        assert_eq!(e.required("C").unwrap_err(), EnvError::Missing("C"));
        assert_eq!(e.required("D").unwrap_err(), EnvError::Missing("D"));
        assert_eq!(e.var("B").as_deref(), Some("  "));
    }

    #[test]
    fn parsed_values_fall_back_to_the_default_only_when_unset() {
        let e = env(&[("N", " 7 "), ("BLANK", ""), ("BAD", "x"), ("BIG", "100")]);
        let small = |n: &u32| *n < 10;
        assert_eq!(e.parsed_or("N", 1, small, "n < 10").unwrap(), 7);
        assert_eq!(e.parsed_or("BLANK", 1, small, "n < 10").unwrap(), 1);
        assert_eq!(e.parsed_or("UNSET", 1, small, "n < 10").unwrap(), 1);
        for name in ["BAD", "BIG"] {
            let err = e.parsed_or(name, 1, small, "n < 10").unwrap_err();
            assert!(matches!(err, EnvError::Invalid { name: n, .. } if n == name));
            assert!(err.to_string().contains("expected n < 10"), "{err}");
        }
    }

    #[test]
    fn the_process_environment_is_read() {
        // PATH is set wherever tests run; nothing here changes the environment.
        assert!(Env::process().required("PATH").is_ok());
    }
}
