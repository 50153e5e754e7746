//! Ports where a stage crosses into the world, with their AWS implementations.
//!
//! Handlers take these as generic parameters so that their logic is tested with the same code
//! paths as in production: the AWS implementations are tested against the local emulators.

use std::future::Future;

use riffle_aws::{AwsError, KinesisPublisher, OutRecord, SqsMessage, SqsSender};

/// A port call that failed as a whole (not per record).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OutputError(#[from] pub AwsError);

impl OutputError {
    /// Whether retrying the batch may help.
    pub fn retryable(&self) -> bool {
        self.0.retryable()
    }
}

/// The next stage's stream.
pub trait Output: Send + Sync {
    /// Writes `records`; returns the indexes of records that finally failed.
    fn publish(
        &self,
        records: Vec<OutRecord>,
    ) -> impl Future<Output = Result<Vec<usize>, OutputError>> + Send;
}

/// Where rejected records go.
pub trait Rejects: Send + Sync {
    /// Sends `messages`; returns the indexes of messages that finally failed.
    fn reject(
        &self,
        messages: Vec<SqsMessage>,
    ) -> impl Future<Output = Result<Vec<usize>, OutputError>> + Send;
}

/// [`Output`] on a Kinesis stream.
#[derive(Debug)]
pub struct KinesisOutput {
    publisher: KinesisPublisher,
    stream: String,
}

impl KinesisOutput {
    /// Publishes to `stream` through `publisher`.
    pub fn new(publisher: KinesisPublisher, stream: impl Into<String>) -> Self {
        KinesisOutput {
            publisher,
            stream: stream.into(),
        }
    }
}

impl Output for KinesisOutput {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<usize>, OutputError> {
        let outcome = self.publisher.put_all(&self.stream, records).await?;
        for failed in outcome.failed.iter().take(3) {
            tracing::warn!(index = failed.index, error = %failed.error, "record not written");
        }
        Ok(outcome.failed.into_iter().map(|f| f.index).collect())
    }
}

/// [`Rejects`] on an SQS queue.
#[derive(Debug)]
pub struct SqsRejects {
    sender: SqsSender,
    queue_url: String,
}

impl SqsRejects {
    /// Sends to `queue_url` through `sender`.
    pub fn new(sender: SqsSender, queue_url: impl Into<String>) -> Self {
        SqsRejects {
            sender,
            queue_url: queue_url.into(),
        }
    }
}

impl Rejects for SqsRejects {
    async fn reject(&self, messages: Vec<SqsMessage>) -> Result<Vec<usize>, OutputError> {
        let outcome = self.sender.send_all(&self.queue_url, messages).await?;
        for failed in outcome.failed.iter().take(3) {
            tracing::warn!(index = failed.index, error = %failed.error, "reject not sent");
        }
        Ok(outcome.failed.into_iter().map(|f| f.index).collect())
    }
}
