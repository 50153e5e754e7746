//! The validator's configuration, read once at start-up.

/// Missing or bad configuration: the process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
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
}

impl Config {
    /// Reads `RIFFLE_OUTPUT_STREAM`, `RIFFLE_REJECTS_QUEUE_URL`, `RIFFLE_REGISTRY_URL`.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] naming the first unset variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        Ok(Config {
            output_stream: var("RIFFLE_OUTPUT_STREAM")?,
            rejects_queue_url: var("RIFFLE_REJECTS_QUEUE_URL")?,
            registry_url: var("RIFFLE_REGISTRY_URL")?,
        })
    }
}
