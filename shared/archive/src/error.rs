//! The archive's one error type: what can go wrong writing, reading and listing archive
//! objects, whoever does it (the archiver, compaction, replay).

use riffle_aws::AwsError;

/// Why an archive object could not be written, read or listed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Parquet refused to encode (a bug, not bad data: every row fits the schema).
    #[error("parquet encoding: {0}")]
    Encode(String),
    /// An object is larger than one PutObject may be.
    #[error("object {key} of {bytes} bytes exceeds the PutObject limit of {limit} bytes")]
    TooLarge {
        /// The object key.
        key: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// S3 refused or failed a call.
    #[error("archive bucket: {0}")]
    Store(#[source] AwsError),
    /// Bytes read back are not an archive object of this schema.
    #[error("not a Riffle archive object: {0}")]
    BadArchive(String),
}

impl From<parquet::errors::ParquetError> for ArchiveError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        ArchiveError::Encode(e.to_string())
    }
}

impl ArchiveError {
    /// Whether trying again later may succeed: S3 outages and throttling may pass; encoder
    /// bugs, oversized objects and foreign objects need a person.
    pub fn retryable(&self) -> bool {
        match self {
            ArchiveError::Store(e) => e.retryable(),
            ArchiveError::Encode(_)
            | ArchiveError::TooLarge { .. }
            | ArchiveError::BadArchive(_) => false,
        }
    }
}
