use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong starting emulators, reading templates or provisioning.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// moto's request recorder could not be driven or read.
    #[error("moto's request recorder: {0}")]
    Recording(String),

    /// The repository or its templates could not be read.
    #[error(transparent)]
    Plan(#[from] riffle_plan::PlanError),

    /// An emulator or tool is not installed.
    #[error("{what} is missing at {}: run `bash infra/local/install.sh` (or `make install`) in the project root", path.display())]
    ToolsMissing { what: &'static str, path: PathBuf },

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// An emulator process did not come up.
    #[error("{name} did not start: {detail} (its log: {})", log.display())]
    EmulatorStart {
        name: &'static str,
        detail: String,
        log: PathBuf,
    },

    /// Waiting for something local (a stream to be ACTIVE, ...) ran out of time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },

    /// No service template by that name.
    #[error("unknown service `{0}` (no infra/services/{0}.yaml was provisioned)")]
    UnknownService(String),

    /// A service variable imports an export that no provisioned stack produced.
    #[error(
        "service {service}: variable {variable} imports `{import}`, which nothing exports locally"
    )]
    UnresolvedImport {
        service: String,
        variable: String,
        import: String,
    },

    /// RIFFLE_ESM could not be serialized.
    #[error("cannot serialize RIFFLE_ESM: {0}")]
    Json(#[from] serde_json::Error),

    #[error("Kinesis {op}: {source}")]
    Kinesis {
        op: &'static str,
        #[source]
        source: Box<aws_sdk_kinesis::Error>,
    },

    #[error("DynamoDB {op}: {source}")]
    DynamoDb {
        op: &'static str,
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },

    #[error("S3 {op}: {source}")]
    S3 {
        op: &'static str,
        #[source]
        source: Box<aws_sdk_s3::Error>,
    },

    #[error("SQS {op}: {source}")]
    Sqs {
        op: &'static str,
        #[source]
        source: Box<aws_sdk_sqs::Error>,
    },
}

impl LocalError {
    /// Whether trying the same thing again may succeed (a slow machine, a port still held).
    /// Missing tools and bad templates need a person, not a retry.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            LocalError::EmulatorStart { .. } | LocalError::Timeout { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
        let context = context.into();
        move |source| LocalError::Io { context, source }
    }

    pub(crate) fn kinesis<E>(op: &'static str) -> impl FnOnce(E) -> LocalError
    where
        aws_sdk_kinesis::Error: From<E>,
    {
        move |e| LocalError::Kinesis {
            op,
            source: Box::new(e.into()),
        }
    }

    pub(crate) fn dynamodb<E>(op: &'static str) -> impl FnOnce(E) -> LocalError
    where
        aws_sdk_dynamodb::Error: From<E>,
    {
        move |e| LocalError::DynamoDb {
            op,
            source: Box::new(e.into()),
        }
    }

    pub(crate) fn s3<E>(op: &'static str) -> impl FnOnce(E) -> LocalError
    where
        aws_sdk_s3::Error: From<E>,
    {
        move |e| LocalError::S3 {
            op,
            source: Box::new(e.into()),
        }
    }

    pub(crate) fn sqs<E>(op: &'static str) -> impl FnOnce(E) -> LocalError
    where
        aws_sdk_sqs::Error: From<E>,
    {
        move |e| LocalError::Sqs {
            op,
            source: Box::new(e.into()),
        }
    }
}
