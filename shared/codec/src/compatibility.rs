//! The compatibility level, as the Confluent REST API names it: the one definition the
//! registry service enforces and its clients (the CLI, the tests) set and read.
//!
//! It lives in the codec, beside the rest of what a registered schema carries, so that the
//! registry service needs no client crate (and its AWS SDK and HTTP client) to name it; the
//! client crate re-exports it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a subject's new schemas must relate to its existing ones: which earlier versions a
/// new one is checked against, and in which direction.
///
/// Serialized as the API spells it (`BACKWARD`, `FULL_TRANSITIVE`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// Anything goes.
    None,
    /// The new schema reads data written with the latest one. The default, as in Confluent's
    /// registry.
    #[default]
    Backward,
    /// The new schema reads data written with every existing one.
    BackwardTransitive,
    /// The latest schema reads data written with the new one.
    Forward,
    /// Every existing schema reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest.
    Full,
    /// Backward and forward against every existing schema.
    FullTransitive,
}

/// A compatibility level name the API does not know (the text as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a compatibility level (one of {names})", names = CompatibilityLevel::NAMES)]
pub struct UnknownLevel(pub String);

impl CompatibilityLevel {
    /// Every level, in the API's order.
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The names of [`Self::ALL`], for messages that list the choices.
    const NAMES: &str =
        "NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE";

    /// The API's name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether a new version is held to every earlier version, not only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether the new schema must read data written with the old ones.
    pub fn is_backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether the old schemas must read data written with the new one.
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;

    /// Accepts the API's names in any case and with surrounding blanks, as clients and
    /// people send them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use CompatibilityLevel::*;

    #[test]
    fn levels_parse_and_print() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>(), Ok(level));
        }
        assert_eq!("full_transitive".parse(), Ok(FullTransitive));
        assert_eq!(CompatibilityLevel::default(), Backward);
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
        assert!(BackwardTransitive.is_transitive() && !Full.is_transitive());
    }

    #[test]
    fn levels_round_trip_and_know_transitivity() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>().unwrap(), level);
        }
        assert_eq!(
            "backward".parse::<CompatibilityLevel>().unwrap(),
            CompatibilityLevel::Backward
        );
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
        assert!(CompatibilityLevel::FullTransitive.is_transitive());
        assert!(!CompatibilityLevel::Full.is_transitive());
    }

    #[test]
    fn serde_names_are_the_api_names() {
        for level in CompatibilityLevel::ALL {
            let json = serde_json::to_string(&level).unwrap();
            assert_eq!(json, format!("\"{}\"", level.as_str()));
            assert_eq!(
                serde_json::from_str::<CompatibilityLevel>(&json).unwrap(),
                level
            );
        }
    }

    #[test]
    fn directions_of_each_level() {
        assert!(!None.is_backward() && !None.is_forward());
        assert!(Backward.is_backward() && !Backward.is_forward());
        assert!(!ForwardTransitive.is_backward() && ForwardTransitive.is_forward());
        assert!(Full.is_backward() && Full.is_forward());
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let error = "SIDEWAYS".parse::<CompatibilityLevel>().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "\"SIDEWAYS\" is not a compatibility level (one of {})",
                CompatibilityLevel::ALL
                    .map(CompatibilityLevel::as_str)
                    .join(", ")
            )
        );
    }
}
