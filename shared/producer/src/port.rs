//! The port through which the producer reaches Kinesis: one PutRecords call, and the stream's
//! shard map (for aggregation). [`KinesisPort`] is the real implementation; tests wrap it to
//! refuse chosen entries the way Kinesis does under load.

use std::future::Future;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use riffle_aws::AwsError;

/// One entry of a PutRecords request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEntry {
    /// The entry's partition key.
    pub partition_key: String,
    /// The entry's data.
    pub data: Vec<u8>,
}

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
        let n = entries.len();
        let mut request_entries = Vec::with_capacity(n);
        for entry in entries {
            let built = PutRecordsRequestEntry::builder()
                .data(Blob::new(entry.data))
                .partition_key(entry.partition_key)
                .build()
                .map_err(|e| AwsError::Call {
                    operation: "PutRecords",
                    code: "BuildError".to_owned(),
                    message: e.to_string(),
                    retryable: false,
                })?;
            request_entries.push(built);
        }
        let response = self
            .client
            .put_records()
            .stream_name(stream)
            .set_records(Some(request_entries))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("PutRecords", e))?;
        let results = response.records();
        Ok((0..n)
            .map(|i| match results.get(i) {
                Some(result) => result.error_code().map(|code| AwsError::Entry {
                    code: code.to_owned(),
                    message: result.error_message().unwrap_or_default().to_owned(),
                }),
                // A short answer leaves the entry's fate unknown: sending it again is safe
                // (consumers deduplicate by event id).
                None => Some(AwsError::Entry {
                    code: "InternalFailure".to_owned(),
                    message: "no result for entry".to_owned(),
                }),
            })
            .collect())
    }

    async fn shard_starts(&self, stream: &str) -> Result<Vec<u128>, AwsError> {
        riffle_stage::aggregate::open_shard_starts(&self.client, stream).await
    }
}
