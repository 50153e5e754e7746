//! Why an operator command failed.

/// The operator commands' one error type (dlq, replay, archive compact).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The repository or its templates could not be read.
    #[error(transparent)]
    Plan(#[from] riffle_plan::PlanError),
    /// The registry refused or could not be reached.
    #[error("schema registry: {0}")]
    Registry(#[from] riffle_registry_client::ClientError),
    /// An AWS call failed.
    #[error("{0}")]
    Aws(String),
    /// The archive could not be read or written.
    #[error("archive bucket: {0}")]
    Bucket(#[from] riffle_archive::ArchiveError),
    /// The command was asked for something it cannot do as asked.
    #[error("{0}")]
    Usage(String),
}
