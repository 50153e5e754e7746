//! Lambda's event source mapping for a Kinesis stream: its settings and Lambda's limits on
//! them, one definition for the templates' reader (`riffle-plan`, which writes them into
//! `RIFFLE_ESM` locally) and the runtime (which reads them back and runs the mapping).

use serde::{Deserialize, Serialize};

/// Lambda limit: smallest batch size.
pub const BATCH_SIZE_MIN: u32 = 1;
/// Lambda limit: largest batch size for Kinesis.
pub const BATCH_SIZE_MAX: u32 = 10_000;
/// Lambda default batch size for Kinesis.
pub const BATCH_SIZE_DEFAULT: u32 = 100;
/// Lambda limit: longest batching window.
pub const BATCHING_WINDOW_MAX_SECS: u32 = 300;
/// Lambda limit: concurrent batches per shard.
pub const PARALLELIZATION_FACTOR_MAX: u32 = 10;
/// Lambda limit: most retries of a failed batch (-1 = until the record expires).
pub const RETRY_ATTEMPTS_MAX: i32 = 10_000;
/// Lambda limit: smallest finite maximum record age.
pub const RECORD_AGE_MIN_SECS: i32 = 60;
/// Lambda limit: largest maximum record age (the longest Kinesis retention).
pub const RECORD_AGE_MAX_SECS: i32 = 604_800;
/// Environment variable holding the JSON of [`EsmConfig`] locally.
pub const ESM_ENV: &str = "RIFFLE_ESM";
/// Environment variable overriding [`EsmConfig::lease_duration_ms`].
pub const LEASE_DURATION_ENV: &str = "RIFFLE_LEASE_DURATION_MS";
/// Environment variable overriding [`EsmConfig::lease_renewal_ms`].
pub const LEASE_RENEWAL_ENV: &str = "RIFFLE_LEASE_RENEWAL_MS";
/// How long a shard lease lasts unless renewed (local runtime only).
pub const LEASE_DURATION_DEFAULT_MS: u64 = 10_000;
/// How often held leases are renewed and the lease table is read (local runtime only).
pub const LEASE_RENEWAL_DEFAULT_MS: u64 = 3_000;

/// Settings outside Lambda's limits, or a `RIFFLE_ESM` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EsmError(pub String);

/// Where a shard with no checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    /// The oldest record kept. The default here (Lambda has none) so a local pipeline
    /// started after its producers loses nothing.
    #[default]
    TrimHorizon,
    /// Only records put from now on.
    Latest,
    /// Records from `starting_position_timestamp` on.
    AtTimestamp,
}

impl StartingPosition {
    /// The position a template names (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "TRIM_HORIZON" => Some(StartingPosition::TrimHorizon),
            "LATEST" => Some(StartingPosition::Latest),
            "AT_TIMESTAMP" => Some(StartingPosition::AtTimestamp),
            _ => None,
        }
    }
}

/// An event source mapping from one Kinesis stream to one function, as Lambda has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsmConfig {
    /// The stream read.
    pub stream_name: String,
    /// The function's name: names the checkpoints, the metrics and the ARNs in events.
    pub function_name: String,
    /// DynamoDB table of checkpoints (partition key `pk`, a string).
    pub checkpoint_table: String,
    /// Most records per invocation.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// How long to gather records before invoking; 0 invokes as soon as records arrive.
    #[serde(default)]
    pub maximum_batching_window_secs: u32,
    /// Concurrent batches per shard: records are spread over this many lanes by a hash of
    /// their partition key, so one key's records stay in order in one lane.
    #[serde(default = "default_parallelization_factor")]
    pub parallelization_factor: u32,
    /// Where a shard without checkpoint starts.
    #[serde(default)]
    pub starting_position: StartingPosition,
    /// Epoch seconds, for `AT_TIMESTAMP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_position_timestamp: Option<f64>,
    /// Split a failing batch in two and retry the halves.
    #[serde(default)]
    pub bisect_batch_on_function_error: bool,
    /// Retries of a failed batch before it goes to the on-failure destination; -1 retries
    /// until the records expire.
    #[serde(default = "minus_one")]
    pub maximum_retry_attempts: i32,
    /// Records older than this are not processed but sent to the destination; -1 = never.
    #[serde(default = "minus_one")]
    pub maximum_record_age_secs: i32,
    /// The handler reports per-record failures in `batch_item_failures`.
    #[serde(default)]
    pub report_batch_item_failures: bool,
    /// SQS queue that receives batches given up on.
    #[serde(default)]
    pub on_failure_queue_url: Option<String>,
    /// Local runtime only: how long a shard lease lasts unless renewed. Another instance
    /// of the function takes a shard over once its lease has been expired this long.
    #[serde(
        default = "default_lease_duration",
        skip_serializing_if = "is_default_lease_duration"
    )]
    pub lease_duration_ms: u64,
    /// Local runtime only: how often held leases are renewed (and the shard list and the
    /// lease table read). Below `lease_duration_ms`, so a live owner never lapses.
    #[serde(
        default = "default_lease_renewal",
        skip_serializing_if = "is_default_lease_renewal"
    )]
    pub lease_renewal_ms: u64,
}

fn default_lease_duration() -> u64 {
    LEASE_DURATION_DEFAULT_MS
}

fn default_lease_renewal() -> u64 {
    LEASE_RENEWAL_DEFAULT_MS
}

// The written form stays what the templates say: lease timing is the local runtime's own.
fn is_default_lease_duration(ms: &u64) -> bool {
    *ms == LEASE_DURATION_DEFAULT_MS
}

fn is_default_lease_renewal(ms: &u64) -> bool {
    *ms == LEASE_RENEWAL_DEFAULT_MS
}

fn default_batch_size() -> u32 {
    BATCH_SIZE_DEFAULT
}

fn default_parallelization_factor() -> u32 {
    1
}

fn minus_one() -> i32 {
    -1
}

impl EsmConfig {
    /// A mapping with Lambda's defaults.
    pub fn new(
        stream_name: impl Into<String>,
        function_name: impl Into<String>,
        checkpoint_table: impl Into<String>,
    ) -> Self {
        Self {
            stream_name: stream_name.into(),
            function_name: function_name.into(),
            checkpoint_table: checkpoint_table.into(),
            batch_size: BATCH_SIZE_DEFAULT,
            maximum_batching_window_secs: 0,
            parallelization_factor: 1,
            starting_position: StartingPosition::TrimHorizon,
            starting_position_timestamp: None,
            bisect_batch_on_function_error: false,
            maximum_retry_attempts: -1,
            maximum_record_age_secs: -1,
            report_batch_item_failures: false,
            on_failure_queue_url: None,
            lease_duration_ms: LEASE_DURATION_DEFAULT_MS,
            lease_renewal_ms: LEASE_RENEWAL_DEFAULT_MS,
        }
    }

    /// Reads and validates the JSON in `RIFFLE_ESM`; `RIFFLE_LEASE_DURATION_MS` and
    /// `RIFFLE_LEASE_RENEWAL_MS` override the lease timing when set.
    pub fn from_env() -> Result<Self, EsmError> {
        let raw = std::env::var(ESM_ENV).map_err(|_| EsmError(format!("{ESM_ENV} is not set")))?;
        let mut config: EsmConfig =
            serde_json::from_str(&raw).map_err(|e| EsmError(format!("{ESM_ENV}: {e}")))?;
        for (name, field) in [
            (LEASE_DURATION_ENV, &mut config.lease_duration_ms),
            (LEASE_RENEWAL_ENV, &mut config.lease_renewal_ms),
        ] {
            if let Ok(value) = std::env::var(name) {
                *field = value
                    .trim()
                    .parse()
                    .map_err(|e| EsmError(format!("{name}={value}: {e}")))?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates the JSON form.
    pub fn from_json(raw: &str) -> Result<Self, EsmError> {
        let config: EsmConfig =
            serde_json::from_str(raw).map_err(|e| EsmError(format!("{ESM_ENV}: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting against Lambda's limits.
    pub fn validate(&self) -> Result<(), EsmError> {
        let fail = |msg: String| Err(EsmError(msg));
        for (name, value) in [
            ("stream_name", &self.stream_name),
            ("function_name", &self.function_name),
            ("checkpoint_table", &self.checkpoint_table),
        ] {
            if value.is_empty() {
                return fail(format!("{name} must not be empty"));
            }
        }
        if !(BATCH_SIZE_MIN..=BATCH_SIZE_MAX).contains(&self.batch_size) {
            return fail(format!(
                "batch_size {} outside {BATCH_SIZE_MIN}..={BATCH_SIZE_MAX}",
                self.batch_size
            ));
        }
        if self.maximum_batching_window_secs > BATCHING_WINDOW_MAX_SECS {
            return fail(format!(
                "maximum_batching_window_secs {} above {BATCHING_WINDOW_MAX_SECS}",
                self.maximum_batching_window_secs
            ));
        }
        if !(1..=PARALLELIZATION_FACTOR_MAX).contains(&self.parallelization_factor) {
            return fail(format!(
                "parallelization_factor {} outside 1..={PARALLELIZATION_FACTOR_MAX}",
                self.parallelization_factor
            ));
        }
        if !(-1..=RETRY_ATTEMPTS_MAX).contains(&self.maximum_retry_attempts) {
            return fail(format!(
                "maximum_retry_attempts {} outside -1..={RETRY_ATTEMPTS_MAX}",
                self.maximum_retry_attempts
            ));
        }
        let age = self.maximum_record_age_secs;
        if age != -1 && !(RECORD_AGE_MIN_SECS..=RECORD_AGE_MAX_SECS).contains(&age) {
            return fail(format!(
                "maximum_record_age_secs {age} is neither -1 nor in \
                 {RECORD_AGE_MIN_SECS}..={RECORD_AGE_MAX_SECS}"
            ));
        }
        match (self.starting_position, self.starting_position_timestamp) {
            (StartingPosition::AtTimestamp, None) => {
                return fail("AT_TIMESTAMP needs starting_position_timestamp".to_owned());
            }
            (StartingPosition::AtTimestamp, Some(t)) if !t.is_finite() || t < 0.0 => {
                return fail(format!("starting_position_timestamp {t} is not a time"));
            }
            _ => {}
        }
        if let Some(url) = &self.on_failure_queue_url
            && url.is_empty()
        {
            return fail("on_failure_queue_url must not be empty when set".to_owned());
        }
        if self.lease_renewal_ms == 0 || self.lease_renewal_ms >= self.lease_duration_ms {
            return fail(format!(
                "lease_renewal_ms {} must be above 0 and below lease_duration_ms {}",
                self.lease_renewal_ms, self.lease_duration_ms
            ));
        }
        Ok(())
    }

    /// Whether `attempts` retries exhaust the retry budget.
    pub fn retries_exhausted(&self, attempts: u32) -> bool {
        self.maximum_retry_attempts >= 0
            && i64::from(attempts) > i64::from(self.maximum_retry_attempts)
    }

    /// How long a shard lease lasts unless renewed.
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_duration_ms)
    }

    /// How often leases are renewed.
    pub fn lease_renewal(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_renewal_ms)
    }

    /// The record age limit, if any.
    pub fn max_record_age(&self) -> Option<std::time::Duration> {
        u64::try_from(self.maximum_record_age_secs)
            .ok()
            .map(std::time::Duration::from_secs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_lambda() {
        let c = EsmConfig::from_json(
            r#"{"stream_name":"raw","function_name":"validator","checkpoint_table":"cp"}"#,
        )
        .unwrap();
        assert_eq!(c, EsmConfig::new("raw", "validator", "cp"));
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.maximum_retry_attempts, -1);
        assert!(!c.retries_exhausted(1_000_000));
    }

    #[test]
    fn full_config_parses() {
        let c = EsmConfig::from_json(
            r#"{"stream_name":"raw","function_name":"validator","checkpoint_table":"cp",
                "batch_size":500,"maximum_batching_window_secs":1,"parallelization_factor":2,
                "starting_position":"AT_TIMESTAMP","starting_position_timestamp":1700000000.5,
                "bisect_batch_on_function_error":true,"maximum_retry_attempts":3,
                "maximum_record_age_secs":3600,"report_batch_item_failures":true,
                "on_failure_queue_url":"http://q"}"#,
        )
        .unwrap();
        assert_eq!(c.starting_position, StartingPosition::AtTimestamp);
        assert!(!c.retries_exhausted(3));
        assert!(c.retries_exhausted(4));
        assert_eq!(
            c.max_record_age(),
            Some(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn limits_are_enforced() {
        let base = EsmConfig::new("raw", "f", "cp");
        assert!(base.validate().is_ok());
        let cases: Vec<fn(&mut EsmConfig)> = vec![
            |c| c.batch_size = 0,
            |c| c.batch_size = 10_001,
            |c| c.maximum_batching_window_secs = 301,
            |c| c.parallelization_factor = 0,
            |c| c.parallelization_factor = 11,
            |c| c.maximum_retry_attempts = -2,
            |c| c.maximum_retry_attempts = 10_001,
            |c| c.maximum_record_age_secs = 59,
            |c| c.maximum_record_age_secs = 604_801,
            |c| c.maximum_record_age_secs = 0,
            |c| c.starting_position = StartingPosition::AtTimestamp,
            |c| c.stream_name.clear(),
            |c| c.on_failure_queue_url = Some(String::new()),
            |c| c.lease_renewal_ms = 0,
            |c| c.lease_renewal_ms = c.lease_duration_ms,
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut c = base.clone();
            change(&mut c);
            assert!(c.validate().is_err(), "case {i} should fail");
        }
        let mut edge = base.clone();
        edge.batch_size = 10_000;
        edge.maximum_record_age_secs = 60;
        edge.maximum_retry_attempts = 0;
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(
            EsmConfig::from_json(
                r#"{"stream_name":"raw","function_name":"f","checkpoint_table":"cp","bach_size":5}"#
            )
            .is_err()
        );
    }
}
