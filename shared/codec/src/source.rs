//! The port through which the codec fetches writer schemas by registry id.

use std::future::Future;

use crate::registered::DataContract;

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

/// One registered schema: its text and the data-contract fields registered with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The schema text (Avro JSON).
    pub schema: String,
    /// `metadata` and `ruleSet`, which carry the subject's contract (ADR 0020).
    pub contract: DataContract,
}

impl From<&str> for Fetched {
    /// A schema registered without contract fields.
    fn from(schema: &str) -> Self {
        Fetched {
            schema: schema.to_owned(),
            contract: DataContract::default(),
        }
    }
}

/// Where writer schemas come from (the schema registry on AWS and locally).
pub trait SchemaSource: Send + Sync {
    /// The schema registered under `id`, with its contract fields.
    fn fetch_schema(&self, id: u32) -> impl Future<Output = Result<Fetched, SourceError>> + Send;
}
