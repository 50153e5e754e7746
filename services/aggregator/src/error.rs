//! The aggregator's one error type.

use riffle_aws::AwsError;
use riffle_codec::CodecError;
use riffle_stage::OutputError;
use riffle_stage::env::EnvError;

/// Why a batch (or the start-up) failed.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// A required environment variable is not set.
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// An environment variable has a value that does not parse.
    #[error("environment variable {name}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not give an envelope schema.
    #[error("schema registry: {0}")]
    Registry(#[from] CodecError),
    /// The dead-letter queue could not be reached.
    #[error("dead-letter queue: {0}")]
    DeadLetter(#[from] OutputError),
    /// The dead-letter queue refused some messages even after retries.
    #[error("{count} records could not be parked on the dead-letter queue")]
    NotParked {
        /// Messages not sent.
        count: usize,
    },
    /// The origin marks (deduplication, ADR 0010) could not be read or written, or moved
    /// under this batch.
    #[error("marks: {0}")]
    Marks(#[source] OutputError),
    /// A DynamoDB call on the view failed.
    #[error("view table: {0}")]
    View(#[source] AwsError),
    /// Other writers kept changing an item between our read and our write.
    #[error("view item {agg_key}/{window_start} still contended after {attempts} attempts")]
    Contended {
        /// Partition key of the item.
        agg_key: String,
        /// Sort key of the item.
        window_start: i64,
        /// Attempts made.
        attempts: u32,
    },
    /// A view item does not have the shape this service writes.
    #[error("view item {agg_key}/{window_start} is corrupt: {reason}")]
    CorruptItem {
        /// Partition key of the item.
        agg_key: String,
        /// Sort key of the item.
        window_start: i64,
        /// What is wrong.
        reason: String,
    },
    /// A write task ended abnormally (it panicked or was cancelled).
    #[error("view write task failed: {0}")]
    Task(String),
}

impl From<riffle_view::ItemError> for AggregatorError {
    fn from(e: riffle_view::ItemError) -> Self {
        AggregatorError::CorruptItem {
            agg_key: e.agg_key,
            window_start: e.window_start,
            reason: e.reason,
        }
    }
}

impl AggregatorError {
    /// Whether the same batch may succeed later. A corrupt item or bad configuration needs
    /// an operator; throttling, outages and contention pass.
    pub fn retryable(&self) -> bool {
        match self {
            AggregatorError::MissingEnv(_)
            | AggregatorError::InvalidEnv { .. }
            | AggregatorError::CorruptItem { .. } => false,
            AggregatorError::Registry(e) => e.retryable(),
            AggregatorError::DeadLetter(e) | AggregatorError::Marks(e) => e.retryable(),
            AggregatorError::View(e) => e.retryable(),
            AggregatorError::NotParked { .. }
            | AggregatorError::Contended { .. }
            | AggregatorError::Task(_) => true,
        }
    }
}

impl From<EnvError> for AggregatorError {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::Missing(name) => AggregatorError::MissingEnv(name),
            EnvError::Invalid {
                name,
                value,
                reason,
            } => AggregatorError::InvalidEnv {
                name,
                value,
                reason,
            },
        }
    }
}
