//! The aggregator's configuration, from the environment (see docs/CONTRACTS.md).

use riffle_stage::env::Env;

use crate::AggregatorError;

/// Days a view item lives after its window ends, unless `RIFFLE_VIEW_TTL_DAYS` says.
pub use riffle_view::DEFAULT_VIEW_TTL_DAYS;
/// DynamoDB TTL only deletes items whose expiry is at most five years in the past, and a
/// TTL further out than that is surely a typo.
pub const MAX_VIEW_TTL_DAYS: u32 = 5 * 366;

/// Hours an origin's mark is kept after it last moved unless `RIFFLE_DEDUP_WINDOW_HOURS`
/// says: copies further apart than this are not caught.
pub const DEFAULT_DEDUP_WINDOW_HOURS: u32 = 24;
/// A week: producer retries and upstream re-publishes come within minutes, and every hour
/// of window keeps the marks of producers long gone.
pub const MAX_DEDUP_WINDOW_HOURS: u32 = 7 * 24;

/// Typed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `RIFFLE_VIEW_TABLE`: the DynamoDB view.
    pub view_table: String,
    /// `RIFFLE_VIEW_TTL_DAYS`: item lifetime after its window ends.
    pub view_ttl_days: u32,
    /// `RIFFLE_CLAIMS_TABLE`: the DynamoDB table holding the origin marks (ADR 0010).
    pub claims_table: String,
    /// `RIFFLE_DEDUP_WINDOW_HOURS`: how long an idle origin's mark is kept.
    pub dedup_window_hours: u32,
    /// `RIFFLE_REGISTRY_URL`: the schema registry.
    pub registry_url: String,
    /// `RIFFLE_DLQ_URL`: the SQS queue for records that can never be aggregated.
    pub dlq_url: String,
}

impl Config {
    /// How long a claim holds.
    pub fn dedup_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.dedup_window_hours) * 3600)
    }

    /// Reads the process environment.
    ///
    /// # Errors
    /// A missing required variable or one that does not parse.
    pub fn from_env() -> Result<Self, AggregatorError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, AggregatorError> {
        let env = Env::new(lookup);
        let view_ttl_days = env.parsed_or(
            "RIFFLE_VIEW_TTL_DAYS",
            DEFAULT_VIEW_TTL_DAYS,
            |days| (1..=MAX_VIEW_TTL_DAYS).contains(days),
            &format!("whole days in 1..={MAX_VIEW_TTL_DAYS}"),
        )?;
        let dedup_window_hours = env.parsed_or(
            "RIFFLE_DEDUP_WINDOW_HOURS",
            DEFAULT_DEDUP_WINDOW_HOURS,
            |hours| (1..=MAX_DEDUP_WINDOW_HOURS).contains(hours),
            &format!("whole hours in 1..={MAX_DEDUP_WINDOW_HOURS}"),
        )?;
        Ok(Config {
            view_table: env.required("RIFFLE_VIEW_TABLE")?,
            view_ttl_days,
            claims_table: env.required("RIFFLE_CLAIMS_TABLE")?,
            dedup_window_hours,
            registry_url: env.required("RIFFLE_REGISTRY_URL")?,
            dlq_url: env.required("RIFFLE_DLQ_URL")?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: [(&str, &str); 4] = [
        ("RIFFLE_VIEW_TABLE", "view"),
        ("RIFFLE_CLAIMS_TABLE", "claims"),
        ("RIFFLE_REGISTRY_URL", "http://127.0.0.1:1"),
        ("RIFFLE_DLQ_URL", "http://127.0.0.1:2/q"),
    ];

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(c.view_ttl_days, DEFAULT_VIEW_TTL_DAYS);
        assert_eq!(c.view_table, "view");
        assert_eq!(c.claims_table, "claims");
        assert_eq!(c.dedup_window_hours, DEFAULT_DEDUP_WINDOW_HOURS);
        assert_eq!(c.dedup_window().as_secs(), 24 * 3600);
        let mut pairs = BASE.to_vec();
        pairs.push(("RIFFLE_VIEW_TTL_DAYS", "7"));
        pairs.push(("RIFFLE_DEDUP_WINDOW_HOURS", "2"));
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!((c.view_ttl_days, c.dedup_window_hours), (7, 2));
    }

    #[test]
    fn missing_and_invalid_values_are_typed() {
        let err = Config::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert!(matches!(
            err,
            AggregatorError::MissingEnv("RIFFLE_VIEW_TABLE")
        ));
        let no_claims: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| !k.contains("CLAIMS"))
            .collect();
        assert!(matches!(
            Config::from_lookup(lookup(&no_claims)).unwrap_err(),
            AggregatorError::MissingEnv("RIFFLE_CLAIMS_TABLE")
        ));
        for bad in ["0", "169", "1.5"] {
            let mut pairs = BASE.to_vec();
            pairs.push(("RIFFLE_DEDUP_WINDOW_HOURS", bad));
            assert!(matches!(
                Config::from_lookup(lookup(&pairs)).unwrap_err(),
                AggregatorError::InvalidEnv { .. }
            ));
        }
        for bad in ["0", "-1", "x", "100000"] {
            let mut pairs = BASE.to_vec();
            pairs.push(("RIFFLE_VIEW_TTL_DAYS", bad));
            let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(matches!(err, AggregatorError::InvalidEnv { .. }), "{bad}");
            assert!(!err.retryable());
        }
    }
}
