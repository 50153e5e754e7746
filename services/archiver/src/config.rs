//! The archiver's configuration, from the environment (see docs/CONTRACTS.md).

use riffle_stage::env::Env;

use crate::ArchiverError;
use riffle_archive::key::DEFAULT_PREFIX;

/// Hours an origin's mark is kept after it last moved unless `RIFFLE_DEDUP_WINDOW_HOURS`
/// says: copies further apart than this are not caught. The same default as the aggregator's.
pub const DEFAULT_DEDUP_WINDOW_HOURS: u32 = 24;
/// A week: producer retries and upstream re-publishes come within minutes, and every hour
/// of window keeps the marks of producers long gone.
pub const MAX_DEDUP_WINDOW_HOURS: u32 = 7 * 24;

/// Typed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `RIFFLE_ARCHIVE_BUCKET`: the S3 archive bucket.
    pub archive_bucket: String,
    /// `RIFFLE_ARCHIVE_PREFIX`: key prefix, without leading or trailing `/`.
    pub archive_prefix: String,
    /// `RIFFLE_REGISTRY_URL`: the schema registry.
    pub registry_url: String,
    /// `RIFFLE_DLQ_URL`: the SQS queue for records that can never be archived.
    pub dlq_url: String,
    /// `RIFFLE_CLAIMS_TABLE`: the DynamoDB table of event-id claims (stage `archiver`) and
    /// of the archiver's write intents.
    pub claims_table: String,
    /// `RIFFLE_DEDUP_WINDOW_HOURS`: how long an idle origin's mark is kept.
    pub dedup_window_hours: u32,
}

impl Config {
    /// How long a claim holds.
    pub fn dedup_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.dedup_window_hours) * 3600)
    }

    /// Reads the process environment.
    ///
    /// # Errors
    /// A missing required variable or an unusable value.
    pub fn from_env() -> Result<Self, ArchiverError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ArchiverError> {
        let env = Env::new(lookup);
        let archive_prefix = match env.var("RIFFLE_ARCHIVE_PREFIX") {
            None => DEFAULT_PREFIX.to_owned(),
            Some(value) => {
                let trimmed = value.trim().trim_matches('/');
                // S3 allows nearly anything, but analysts' tools must find the partitions.
                if trimmed.contains("//") || trimmed.chars().any(|c| c.is_control() || c == '=') {
                    return Err(ArchiverError::InvalidEnv {
                        name: "RIFFLE_ARCHIVE_PREFIX",
                        value,
                        reason: "expected a plain key prefix like `events` or `archive/v1`".into(),
                    });
                }
                trimmed.to_owned()
            }
        };
        let dedup_window_hours = env.parsed_or(
            "RIFFLE_DEDUP_WINDOW_HOURS",
            DEFAULT_DEDUP_WINDOW_HOURS,
            |hours| (1..=MAX_DEDUP_WINDOW_HOURS).contains(hours),
            &format!("whole hours in 1..={MAX_DEDUP_WINDOW_HOURS}"),
        )?;
        Ok(Config {
            archive_bucket: env.required("RIFFLE_ARCHIVE_BUCKET")?,
            archive_prefix,
            registry_url: env.required("RIFFLE_REGISTRY_URL")?,
            dlq_url: env.required("RIFFLE_DLQ_URL")?,
            claims_table: env.required("RIFFLE_CLAIMS_TABLE")?,
            dedup_window_hours,
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
        ("RIFFLE_ARCHIVE_BUCKET", "archive"),
        ("RIFFLE_REGISTRY_URL", "http://127.0.0.1:1"),
        ("RIFFLE_DLQ_URL", "http://127.0.0.1:2/q"),
        ("RIFFLE_CLAIMS_TABLE", "claims"),
    ];

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(c.archive_prefix, "events");
        assert_eq!(c.archive_bucket, "archive");
        assert_eq!(c.claims_table, "claims");
        assert_eq!(c.dedup_window_hours, DEFAULT_DEDUP_WINDOW_HOURS);
        assert_eq!(c.dedup_window().as_secs(), 24 * 3600);
        let mut pairs = BASE.to_vec();
        pairs.push(("RIFFLE_ARCHIVE_PREFIX", "/archive/v1/"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap().archive_prefix,
            "archive/v1"
        );
    }

    #[test]
    fn missing_and_invalid_values_are_typed() {
        let err = Config::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert!(matches!(
            err,
            ArchiverError::MissingEnv("RIFFLE_ARCHIVE_BUCKET")
        ));
        let mut pairs = BASE.to_vec();
        pairs.push(("RIFFLE_ARCHIVE_PREFIX", "a//b"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert!(matches!(err, ArchiverError::InvalidEnv { .. }));
        assert!(!err.retryable());
        let no_claims: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| !k.contains("CLAIMS"))
            .collect();
        assert!(matches!(
            Config::from_lookup(lookup(&no_claims)).unwrap_err(),
            ArchiverError::MissingEnv("RIFFLE_CLAIMS_TABLE")
        ));
        for bad in ["0", "169", "x"] {
            let mut pairs = BASE.to_vec();
            pairs.push(("RIFFLE_DEDUP_WINDOW_HOURS", bad));
            assert!(matches!(
                Config::from_lookup(lookup(&pairs)).unwrap_err(),
                ArchiverError::InvalidEnv { .. }
            ));
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("RIFFLE_DEDUP_WINDOW_HOURS", "168"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs))
                .unwrap()
                .dedup_window_hours,
            168
        );
    }
}
