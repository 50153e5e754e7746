//! Riffle's AWS plumbing: one way to build SDK clients, and the batch writers every stage
//! uses to hand records on.
//!
//! Layout:
//! - this file: [`sdk_config`] and the client constructors, [`AwsError`];
//! - [`kinesis`]: [`KinesisPublisher`], PutRecords within Kinesis' limits, retrying only
//!   the failed entries and keeping order per partition key;
//! - [`sqs`]: [`SqsSender`], SendMessageBatch within SQS' limits;
//! - [`backoff`]: exponential backoff with full jitter, shared by both;
//! - [`limits`]: the service limits, one definition each;
//! - [`esm`]: a Kinesis event source mapping's settings (`RIFFLE_ESM`) and Lambda's limits;
//! - [`dynamo_batch`]: BatchGetItem/BatchWriteItem within limits, unprocessed parts retried;
//! - [`meter`]: DynamoDB items and Kinesis PUT payload units this process asked for;
//! - [`calls`]: the AWS calls of a batch, for its records' trace spans;
//! - [`on_failure`]: Lambda's on-failure message for Kinesis sources (metadata only);
//! - [`stream_read`]: records read back from a shard by position;
//! - [`table`]: CreateTable from a template's table shape, indexes included;
//! - [`tls`]: the platform's trust roots read once for every HTTPS client.
//!
//! Endpoints come only from the SDK's own variables (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_KINESIS`, ...), so the same code talks to AWS and to the local
//! emulators.

pub mod backoff;
pub mod calls;
pub mod dynamo_batch;
pub mod esm;
pub mod kinesis;
pub mod limits;
pub mod meter;
pub mod on_failure;
pub mod sqs;
pub mod stream_read;
pub mod table;
pub mod tls;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

pub use kinesis::{FailedRecord, KinesisPublisher, OutRecord, PublishConfig, PutOutcome};
pub use sqs::{FailedMessage, SendOutcome, SqsMessage, SqsSender};

/// Attempts the SDK makes per call (its own retry layer, below ours).
pub const SDK_MAX_ATTEMPTS: u32 = 3;
/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one attempt of one call.
pub const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for one call, SDK retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared SDK configuration: region, credentials and endpoints from the environment,
/// standard retries and bounded timeouts so a stuck call cannot hang a shard forever.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(tls::sdk_http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

/// An S3 client with path-style addressing (the local emulator serves buckets only that
/// way, and AWS accepts it too), whose calls a batch's trace spans show ([`calls`]).
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .interceptor(calls::CallRecorder)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// A Kinesis client whose calls a batch's trace spans show ([`calls`]).
pub fn kinesis_client(config: &aws_config::SdkConfig) -> aws_sdk_kinesis::Client {
    let kinesis_config = aws_sdk_kinesis::config::Builder::from(config)
        .interceptor(calls::CallRecorder)
        .build();
    aws_sdk_kinesis::Client::from_conf(kinesis_config)
}

/// An SQS client whose calls a batch's trace spans show ([`calls`]).
pub fn sqs_client(config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let sqs_config = aws_sdk_sqs::config::Builder::from(config)
        .interceptor(calls::CallRecorder)
        .build();
    aws_sdk_sqs::Client::from_conf(sqs_config)
}

/// A DynamoDB client whose item reads and writes are counted ([`meter`]) and whose calls a
/// batch's trace spans show ([`calls`]).
pub fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let dynamo_config = aws_sdk_dynamodb::config::Builder::from(config)
        .interceptor(meter::DynamoMeter)
        .interceptor(calls::CallRecorder)
        .build();
    aws_sdk_dynamodb::Client::from_conf(dynamo_config)
}

/// Error codes that mean "try again later" in the services Riffle uses.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "TooManyRequestsException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "ServiceUnavailable",
    "KMSThrottlingException",
    "TransactionInProgressException",
];

/// Whether an AWS error code is worth retrying.
pub fn retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// What went wrong talking to AWS, or why a record was not sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// A call failed as a whole (service error, timeout, connection failure).
    #[error("{operation} failed: {code}: {message}")]
    Call {
        /// The API operation.
        operation: &'static str,
        /// The service's error code, or the kind of transport failure.
        code: String,
        /// Human-readable detail.
        message: String,
        /// Whether retrying later may succeed.
        retryable: bool,
    },
    /// One entry of a batch call failed.
    #[error("entry failed: {code}: {message}")]
    Entry {
        /// The service's per-entry error code.
        code: String,
        /// Human-readable detail.
        message: String,
    },
    /// A record is larger than the service accepts; it was not sent.
    #[error("record of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the record as the service counts it.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A Kinesis partition key is empty or longer than allowed; the record was not sent.
    #[error("partition key of {chars} characters is outside 1..={max}")]
    InvalidPartitionKey {
        /// Length of the key in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// Not sent because an earlier record with the same partition key finally failed;
    /// sending it would have put it ahead of that record.
    #[error("not sent: an earlier record with the same partition key failed")]
    OrderGuard,
}

impl AwsError {
    /// Whether trying the same thing again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            AwsError::Call { retryable, .. } => *retryable,
            AwsError::Entry { code, .. } => retryable_code(code),
            AwsError::TooLarge { .. } | AwsError::InvalidPartitionKey { .. } => false,
            AwsError::OrderGuard => true,
        }
    }

    /// The service error code, if the error came from a service.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Call { code, .. } | AwsError::Entry { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Converts an SDK error of `operation`, deciding whether it is retryable: transport
    /// failures and timeouts are, service errors by their code.
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let (code, retryable) = match &err {
            SdkError::ServiceError(service) => match service.err().code() {
                Some(code) => (code.to_owned(), retryable_code(code)),
                // No code at all usually means a 5xx without a body.
                None => ("Unknown".to_owned(), true),
            },
            SdkError::TimeoutError(_) => ("Timeout".to_owned(), true),
            SdkError::DispatchFailure(_) => ("DispatchFailure".to_owned(), true),
            SdkError::ResponseError(_) => ("ResponseError".to_owned(), true),
            SdkError::ConstructionFailure(_) => ("ConstructionFailure".to_owned(), false),
            _ => ("Unknown".to_owned(), true),
        };
        let message = match err.message() {
            Some(m) => m.to_owned(),
            None => aws_sdk_kinesis::error::DisplayErrorContext(&err).to_string(),
        };
        AwsError::Call {
            operation,
            code,
            message,
            retryable,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn retryability_follows_the_code() {
        let throttled = AwsError::Entry {
            code: "ProvisionedThroughputExceededException".into(),
            message: String::new(),
        };
        assert!(throttled.retryable());
        let bad = AwsError::Entry {
            code: "ValidationException".into(),
            message: String::new(),
        };
        assert!(!bad.retryable());
        assert!(!AwsError::TooLarge { bytes: 2, limit: 1 }.retryable());
        assert!(AwsError::OrderGuard.retryable());
    }
}
