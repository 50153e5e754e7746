//! Why an operator command failed.

/// The operator commands' one error type (dlq, replay, archive compact, alarms).
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
    /// `riffle deploy` stopped.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    /// The command was asked for something it cannot do as asked.
    #[error("{0}")]
    Usage(String),
    /// The templates' alarms could not be read (`riffle alarms`).
    #[error(transparent)]
    Alarms(#[from] riffle_alarms::AlarmsError),
    /// No metrics store where `riffle alarms` looked: no local stack has run here yet.
    #[error(
        "no metrics store at {}: run `riffle-dev demo` or `riffle-dev up` first, or point --metrics or {} at a local stack's metrics directory (`riffle-dev up` keeps it in .riffle/up/metrics)",
        .0.display(),
        riffle_telemetry::METRICS_STORE_ENV
    )]
    NoMetricsStore(std::path::PathBuf),
    /// The metrics store exists but could not be read.
    #[error("metrics store {}: {source}", dir.display())]
    MetricsStore {
        /// The store's directory.
        dir: std::path::PathBuf,
        /// The read that failed.
        source: std::io::Error,
    },
}
