//! The port through which the codec fetches writer schemas by registry id.

use std::future::Future;

/// Why a schema could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The registry answered that no schema has this id: the record can never be decoded.
    #[error("schema id {0} is not registered")]
    NotFound(u32),
    /// The registry could not be asked (down, timeout, 5xx): try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

impl SourceError {
    /// Unavailable registries heal; unknown ids do not.
    pub fn retryable(&self) -> bool {
        matches!(self, SourceError::Unavailable(_))
    }
}

/// Where writer schemas come from (the schema registry on AWS and locally).
pub trait SchemaSource: Send + Sync {
    /// The schema text (Avro JSON) registered under `id`.
    fn fetch_schema(&self, id: u32) -> impl Future<Output = Result<String, SourceError>> + Send;
}
