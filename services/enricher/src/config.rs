//! The enricher's configuration, read once at start-up.

use std::time::Duration;

use riffle_stage::env::{Env, EnvError};

/// Missing or bad configuration: the process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    /// A variable that must be a number is not.
    #[error("environment variable {name} must be a whole number, got {value:?}")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
    },
}

impl From<EnvError> for ConfigError {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::Missing(name) => ConfigError::Missing(name),
            EnvError::Invalid { name, value, .. } => ConfigError::NotANumber { name, value },
        }
    }
}

/// Where the enricher reads and writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Enriched stream name.
    pub output_stream: String,
    /// Reference-data table.
    pub reference_table: String,
    /// How long a reference item (or its absence) is trusted.
    pub reference_ttl: Duration,
    /// Schema registry base URL.
    pub registry_url: String,
    /// Dead-letter queue for records no retry can fix.
    pub dlq_url: String,
    /// `RIFFLE_CLAIMS_TABLE`: the DynamoDB table holding the origin marks (ADR 0010).
    pub marks_table: String,
    /// `RIFFLE_COMPRESS_AGGREGATES` (default `true`): whether the aggregates this stage puts
    /// are compressed (ADR 0022).
    pub compress_aggregates: bool,
}

/// Default reference cache TTL: reference data changes rarely, and a stale category for five
/// minutes is an acceptable price for not reading DynamoDB per event.
pub const DEFAULT_REFERENCE_TTL_SECS: u64 = 300;

impl Config {
    /// Reads `RIFFLE_OUTPUT_STREAM`, `RIFFLE_REFERENCE_TABLE`, `RIFFLE_REGISTRY_URL`,
    /// `RIFFLE_DLQ_URL`, `RIFFLE_CLAIMS_TABLE`, `RIFFLE_REFERENCE_CACHE_TTL_SECS` (optional).
    ///
    /// # Errors
    /// The first missing or malformed variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        let env = Env::process();
        let ttl = env.parsed_or(
            "RIFFLE_REFERENCE_CACHE_TTL_SECS",
            DEFAULT_REFERENCE_TTL_SECS,
            |_| true,
            "a whole number of seconds",
        )?;
        Ok(Config {
            output_stream: env.required("RIFFLE_OUTPUT_STREAM")?,
            reference_table: env.required("RIFFLE_REFERENCE_TABLE")?,
            reference_ttl: Duration::from_secs(ttl),
            registry_url: env.required("RIFFLE_REGISTRY_URL")?,
            dlq_url: env.required("RIFFLE_DLQ_URL")?,
            marks_table: env.required("RIFFLE_CLAIMS_TABLE")?,
            compress_aggregates: riffle_stage::aggregate::compression_from(&env)?,
        })
    }
}
