//! The view table behind a port: read current items, write one item only over the
//! version that was read.
//!
//! DynamoDB update expressions can add to a number but cannot keep a minimum or maximum,
//! so an item is written whole: the current items of a batch are read with BatchGetItem,
//! merged in memory, and put back with a condition on the `version` read (or on the item
//! not existing yet). A writer that lost the race reads that one item again (strongly
//! consistent) and merges again; see `write.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use riffle_aws::AwsError;
use riffle_aws::backoff::full_jitter;

use crate::AggregatorError;
use crate::aggregate::{ViewKey, ViewRow};
use riffle_view::item::{key_item, number, parse_item, row_item};

/// BatchGetItem limit: keys per request.
pub const BATCH_GET_MAX_KEYS: usize = 100;
/// Requests per chunk of keys while DynamoDB keeps returning some of them unprocessed
/// (it does under throttling).
pub const BATCH_GET_MAX_ATTEMPTS: u32 = 8;
const UNPROCESSED_BASE_BACKOFF: Duration = Duration::from_millis(25);
const UNPROCESSED_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The item now holds the row.
    Written,
    /// Someone else wrote the item since it was read; nothing was written.
    Conflict,
}

/// Where the view lives.
pub trait ViewStore: Send + Sync + 'static {
    /// The current items for `keys` (strongly consistent); absent keys are not in the map.
    fn load(
        &self,
        keys: &[ViewKey],
    ) -> impl Future<Output = Result<HashMap<ViewKey, ViewRow>, AggregatorError>> + Send;

    /// Writes `row` if the stored item is still at `row.version - 1` (version 1: if there is
    /// no item yet).
    fn save(&self, row: &ViewRow) -> impl Future<Output = Result<Saved, AggregatorError>> + Send;
}

/// The view in DynamoDB: hash `agg_key` (S), range `window_start` (N).
#[derive(Debug, Clone)]
pub struct DynamoViewStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoViewStore {
    /// The view in `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn load_chunk(
        &self,
        keys: &[ViewKey],
        out: &mut HashMap<ViewKey, ViewRow>,
    ) -> Result<(), AggregatorError> {
        let mut pending: Vec<HashMap<String, AttributeValue>> = keys.iter().map(key_item).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt >= BATCH_GET_MAX_ATTEMPTS {
                return Err(AggregatorError::View(AwsError::Call {
                    operation: "BatchGetItem",
                    code: "UnprocessedKeys".into(),
                    message: format!("{} keys still unprocessed", pending.len()),
                    retryable: true,
                }));
            }
            if attempt > 0 {
                tokio::time::sleep(full_jitter(
                    attempt - 1,
                    UNPROCESSED_BASE_BACKOFF,
                    UNPROCESSED_MAX_BACKOFF,
                ))
                .await;
            }
            attempt += 1;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|e| build_error("BatchGetItem", &e))?;
            let response = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| AggregatorError::View(AwsError::from_sdk("BatchGetItem", e)))?;
            if let Some(items) = response.responses().and_then(|r| r.get(&self.table)) {
                for item in items {
                    let row = parse_item(item)?;
                    out.insert(row.key.clone(), row);
                }
            }
            if let Some(left) = response.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                pending = left.keys().to_vec();
            }
        }
        Ok(())
    }
}

impl ViewStore for DynamoViewStore {
    async fn load(&self, keys: &[ViewKey]) -> Result<HashMap<ViewKey, ViewRow>, AggregatorError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_MAX_KEYS) {
            self.load_chunk(chunk, &mut out).await?;
        }
        Ok(out)
    }

    async fn save(&self, row: &ViewRow) -> Result<Saved, AggregatorError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(row_item(row)));
        put = if row.version <= 1 {
            put.condition_expression("attribute_not_exists(agg_key)")
        } else {
            put.condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", number(row.version - 1))
        };
        match put.send().await {
            Ok(_) => Ok(Saved::Written),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(Saved::Conflict)
            }
            Err(e) => Err(AggregatorError::View(AwsError::from_sdk("PutItem", e))),
        }
    }
}

fn build_error(operation: &'static str, e: &dyn std::error::Error) -> AggregatorError {
    AggregatorError::View(AwsError::Call {
        operation,
        code: "BuildError".into(),
        message: e.to_string(),
        retryable: false,
    })
}
