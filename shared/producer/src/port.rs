//! The port through which the producer reaches Kinesis: one PutRecords call, and the stream's
//! shard map (for aggregation). [`KinesisPort`] is the real implementation; tests wrap it to
//! refuse chosen entries the way Kinesis does under load.

use std::future::Future;

use riffle_aws::AwsError;

/// One entry of a PutRecords request: riffle-aws' record to write.
pub use riffle_aws::OutRecord as PutEntry;

/// Per-entry outcome of a PutRecords call: `None` when written, else the entry's error
/// ([`AwsError::Entry`] with Kinesis' error code).
pub type EntryResults = Vec<Option<AwsError>>;

/// What the producer needs from Kinesis.
pub trait PutRecordsPort: Send + Sync + 'static {
    /// One PutRecords call with `entries` (already within the request limits); one result per
    /// entry, in order.
    ///
    /// # Errors
    /// A failure of the call as a whole ([`AwsError::Call`]); the producer then treats every
    /// entry as failed with it.
    fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> impl Future<Output = Result<EntryResults, AwsError>> + Send;

    /// The starting hash keys of the stream's open shards.
    ///
    /// # Errors
    /// The shards could not be listed.
    fn shard_starts(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Vec<u128>, AwsError>> + Send;
}

/// [`PutRecordsPort`] on a real Kinesis client.
#[derive(Debug, Clone)]
pub struct KinesisPort {
    client: aws_sdk_kinesis::Client,
}

impl KinesisPort {
    /// The port over `client`.
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        KinesisPort { client }
    }
}

impl PutRecordsPort for KinesisPort {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<EntryResults, AwsError> {
        riffle_aws::kinesis::put_records_once(&self.client, stream, entries).await
    }

    async fn shard_starts(&self, stream: &str) -> Result<Vec<u128>, AwsError> {
        riffle_stage::aggregate::open_shard_starts(&self.client, stream).await
    }
}
