//! The archiver's one error type.

use riffle_archive::ArchiveError;
use riffle_aws::AwsError;
use riffle_codec::CodecError;
use riffle_stage::OutputError;
use riffle_stage::env::EnvError;

/// Why a batch (or the start-up, or reading an archive object) failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiverError {
    /// A required environment variable is not set.
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// An environment variable has a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not give a schema.
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
    /// The origin marks could not be read or written, or moved under this batch (ADR 0010).
    #[error("marks: {0}")]
    Marks(#[source] OutputError),
    /// The write intents could not be read or written (see `crate::intent`).
    #[error("write intents: {0}")]
    Intents(#[source] AwsError),
    /// The archive refused a write (S3, encoding, size).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A write task ended abnormally (it panicked or was cancelled).
    #[error("archive write task failed: {0}")]
    Task(String),
}

impl ArchiverError {
    /// Whether the same batch may succeed later: outages and throttling pass; bad
    /// configuration, encoder bugs and oversized objects need a person.
    pub fn retryable(&self) -> bool {
        match self {
            ArchiverError::MissingEnv(_) | ArchiverError::InvalidEnv { .. } => false,
            ArchiverError::Archive(e) => e.retryable(),
            ArchiverError::Registry(e) => e.retryable(),
            ArchiverError::DeadLetter(e) => e.retryable(),
            ArchiverError::Intents(e) => e.retryable(),
            ArchiverError::Marks(e) => e.retryable(),
            ArchiverError::NotParked { .. } | ArchiverError::Task(_) => true,
        }
    }
}

impl From<EnvError> for ArchiverError {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::Missing(name) => ArchiverError::MissingEnv(name),
            EnvError::Invalid {
                name,
                value,
                reason,
            } => ArchiverError::InvalidEnv {
                name,
                value,
                reason,
            },
        }
    }
}
