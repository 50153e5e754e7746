//! The validator's configuration, read once at start-up.

use riffle_stage::env::{Env, EnvError};

/// Missing or bad configuration: the process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
        /// What was expected.
        reason: String,
    },
}

impl From<EnvError> for ConfigError {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::Missing(name) => ConfigError::Missing(name),
            EnvError::Invalid {
                name,
                value,
                reason,
            } => ConfigError::Invalid {
                name,
                value,
                reason,
            },
        }
    }
}

/// Where the validator sends what.
#[derive(Debug, Clone)]
pub struct Config {
    /// Validated stream name.
    pub output_stream: String,
    /// Rejects queue URL.
    pub rejects_queue_url: String,
    /// Schema registry base URL.
    pub registry_url: String,
    /// `RIFFLE_CLAIMS_TABLE`: the DynamoDB table holding the origin marks (ADR 0010).
    pub marks_table: String,
    /// `RIFFLE_COMPRESS_AGGREGATES` (default `true`): whether the aggregates this stage puts
    /// are compressed (ADR 0022).
    pub compress_aggregates: bool,
}

impl Config {
    /// Reads `RIFFLE_OUTPUT_STREAM`, `RIFFLE_REJECTS_QUEUE_URL`, `RIFFLE_REGISTRY_URL`,
    /// `RIFFLE_CLAIMS_TABLE`.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] naming the first unset (or blank) variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        let env = Env::process();
        Ok(Config {
            output_stream: env.required("RIFFLE_OUTPUT_STREAM")?,
            rejects_queue_url: env.required("RIFFLE_REJECTS_QUEUE_URL")?,
            registry_url: env.required("RIFFLE_REGISTRY_URL")?,
            marks_table: env.required("RIFFLE_CLAIMS_TABLE")?,
            compress_aggregates: riffle_stage::aggregate::compression_from(&env)?,
        })
    }
}
