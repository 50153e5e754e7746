//! Checkpoints in DynamoDB: per (function, stream, shard), the last sequence number whose
//! records are all done, so a restarted runtime resumes right after it.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::RuntimeError;
use crate::shard_item::{CONDITION_FAILED, ItemKeys, LEASE_OWNER};
// Still named from here by callers that think in checkpoints, as before the item's layout
// had a module of its own.
pub use crate::shard_item::{Checkpoint, PK, SEQ, SHARD_END, UPDATED_AT};

/// The checkpoints of one function on one stream.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    keys: ItemKeys,
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
            keys: ItemKeys::new(function_name, stream_name),
        }
    }

    /// The item key of a shard.
    pub fn key(&self, shard_id: &str) -> String {
        self.keys.shard(shard_id)
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
        Ok(Checkpoint::from_seq(seq.map(String::as_str)))
    }

    /// Records that everything up to `seq` (or [`SHARD_END`]) is done, whoever holds the
    /// shard's lease.
    pub async fn save(&self, shard_id: &str, seq: &str) -> Result<(), RuntimeError> {
        self.save_as(shard_id, seq, None).await
    }

    /// Records that everything up to `seq` (or [`SHARD_END`]) is done; with `owner`, only
    /// while `owner` holds the shard's lease (the lease lives in the same item, see
    /// [`crate::shard_item`]), so an instance that lost a shard cannot move its checkpoint.
    ///
    /// # Errors
    /// [`RuntimeError::LeaseLost`] when `owner` no longer holds the lease.
    pub async fn save_as(
        &self,
        shard_id: &str,
        seq: &str,
        owner: Option<&str>,
    ) -> Result<(), RuntimeError> {
        // An update, not a put: the lease attributes of the item stay as they are.
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(self.key(shard_id)))
            .update_expression("SET #seq = :seq, #at = :at")
            .expression_attribute_names("#seq", SEQ)
            .expression_attribute_names("#at", UPDATED_AT)
            .expression_attribute_values(":seq", AttributeValue::S(seq.to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(chrono::Utc::now().to_rfc3339()));
        if let Some(owner) = owner {
            request = request
                .condition_expression("#owner = :owner")
                .expression_attribute_names("#owner", LEASE_OWNER)
                .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = riffle_aws::AwsError::from_sdk("UpdateItem", e);
                if e.code() == Some(CONDITION_FAILED) {
                    Err(RuntimeError::LeaseLost(shard_id.to_owned()))
                } else {
                    Err(RuntimeError::Aws(e))
                }
            }
        }
    }
}
