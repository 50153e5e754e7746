//! Checkpoints in DynamoDB: per (function, stream, shard), the last sequence number whose
//! records are all done, so a restarted runtime resumes right after it.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::RuntimeError;

/// Partition key attribute.
pub const PK: &str = "pk";
/// Last processed sequence number.
pub const SEQ: &str = "seq";
/// When the checkpoint was written (RFC 3339).
pub const UPDATED_AT: &str = "updated_at";
/// Written as `seq` once a closed shard is read to its end; sequence numbers are digits.
pub const SHARD_END: &str = "SHARD_END";

/// Where a shard stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Never processed.
    None,
    /// Records up to this sequence number are done.
    After(String),
    /// The shard is closed and fully processed.
    ShardEnd,
}

/// The checkpoints of one function on one stream.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    prefix: String,
}

impl CheckpointStore {
    /// Checkpoints of `function_name` reading `stream_name`, kept in `table`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        function_name: &str,
        stream_name: &str,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            prefix: format!("{function_name}#{stream_name}#"),
        }
    }

    /// The item key of a shard.
    pub fn key(&self, shard_id: &str) -> String {
        format!("{}{shard_id}", self.prefix)
    }

    /// Reads a shard's checkpoint (strongly consistent: it decides where reading resumes).
    pub async fn load(&self, shard_id: &str) -> Result<Checkpoint, RuntimeError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(self.key(shard_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RuntimeError::Aws(riffle_aws::AwsError::from_sdk("GetItem", e)))?;
        let seq = out
            .item()
            .and_then(|item| item.get(SEQ))
            .and_then(|v| v.as_s().ok());
        Ok(match seq {
            None => Checkpoint::None,
            Some(s) if s == SHARD_END => Checkpoint::ShardEnd,
            Some(s) => Checkpoint::After(s.clone()),
        })
    }

    /// Records that everything up to `seq` (or [`SHARD_END`]) is done.
    pub async fn save(&self, shard_id: &str, seq: &str) -> Result<(), RuntimeError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(self.key(shard_id)))
            .item(SEQ, AttributeValue::S(seq.to_owned()))
            .item(
                UPDATED_AT,
                AttributeValue::S(chrono::Utc::now().to_rfc3339()),
            )
            .send()
            .await
            .map_err(|e| RuntimeError::Aws(riffle_aws::AwsError::from_sdk("PutItem", e)))?;
        Ok(())
    }
}
