//! DynamoDB's batch calls within their limits, with the unprocessed part retried: DynamoDB
//! may answer a batch call with some keys or items left undone (throttling, partition
//! limits) and a success code, so every caller must try those again. One place does it, with
//! backoff, and fails with an error naming what is left when it runs out of tries: never
//! silently.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, WriteRequest};

use crate::AwsError;
use crate::backoff::full_jitter;
use crate::limits::{DYNAMODB_BATCH_GET_MAX_KEYS, DYNAMODB_BATCH_WRITE_MAX_ITEMS};

/// One DynamoDB item (or key).
pub type Item = HashMap<String, AttributeValue>;

/// Tries of one chunk, the first included, before its unprocessed part is an error.
pub const MAX_ATTEMPTS: u32 = 8;
const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How the batch calls read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Read {
    /// Eventually consistent (half the read units).
    #[default]
    Eventual,
    /// Strongly consistent: sees every write acknowledged before the call.
    Consistent,
}

/// The items of `keys` in `table` that exist, in no particular order.
///
/// # Errors
/// A call failed as a whole, or keys stayed unprocessed after [`MAX_ATTEMPTS`] tries
/// (`UnprocessedKeys`, retryable).
pub async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<Item>,
    read: Read,
) -> Result<Vec<Item>, AwsError> {
    let mut found = Vec::with_capacity(keys.len());
    let mut keys = keys;
    while !keys.is_empty() {
        let rest = keys.split_off(keys.len().min(DYNAMODB_BATCH_GET_MAX_KEYS));
        let mut pending = std::mem::replace(&mut keys, rest);
        for attempt in 0.. {
            if pending.is_empty() {
                break;
            }
            if attempt >= MAX_ATTEMPTS {
                return Err(left_over("BatchGetItem", "UnprocessedKeys", pending.len()));
            }
            pause(attempt).await;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(read == Read::Consistent)
                .build()
                .map_err(|e| build_error("BatchGetItem", &e))?;
            let out = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("BatchGetItem", e))?;
            if let Some(items) = out.responses().and_then(|r| r.get(table)) {
                found.extend(items.iter().cloned());
            }
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(table)) {
                pending = left.keys().to_vec();
            }
        }
    }
    Ok(found)
}

/// Writes `requests` (puts and deletes) to `table`, 25 per call.
///
/// # Errors
/// A call failed as a whole, or items stayed unprocessed after [`MAX_ATTEMPTS`] tries
/// (`UnprocessedItems`, retryable). Chunks before the failing one are written.
pub async fn batch_write(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<(), AwsError> {
    let mut requests = requests;
    while !requests.is_empty() {
        let rest = requests.split_off(requests.len().min(DYNAMODB_BATCH_WRITE_MAX_ITEMS));
        let mut pending = std::mem::replace(&mut requests, rest);
        for attempt in 0.. {
            if pending.is_empty() {
                break;
            }
            if attempt >= MAX_ATTEMPTS {
                return Err(left_over(
                    "BatchWriteItem",
                    "UnprocessedItems",
                    pending.len(),
                ));
            }
            pause(attempt).await;
            let out = client
                .batch_write_item()
                .request_items(table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("BatchWriteItem", e))?;
            if let Some(left) = out.unprocessed_items().and_then(|u| u.get(table)) {
                pending = left.clone();
            }
        }
    }
    Ok(())
}

/// A put request for `item`.
///
/// # Errors
/// Never for an item (the builder only checks that one is set).
pub fn put(item: Item) -> Result<WriteRequest, AwsError> {
    let put = aws_sdk_dynamodb::types::PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| build_error("BatchWriteItem", &e))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

async fn pause(attempt: u32) {
    if attempt > 0 {
        tokio::time::sleep(full_jitter(attempt - 1, BASE_BACKOFF, MAX_BACKOFF)).await;
    }
}

fn left_over(operation: &'static str, code: &str, count: usize) -> AwsError {
    AwsError::Call {
        operation,
        code: code.to_owned(),
        message: format!("{count} still unprocessed after {MAX_ATTEMPTS} tries"),
        retryable: true,
    }
}

fn build_error(operation: &'static str, e: &dyn std::error::Error) -> AwsError {
    AwsError::Call {
        operation,
        code: "BuildError".into(),
        message: e.to_string(),
        retryable: false,
    }
}
