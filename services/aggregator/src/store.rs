//! The view table behind a port: read current items, write one item only over the
//! version that was read.
//!
//! DynamoDB update expressions can add to a number but cannot keep a minimum or maximum,
//! so an item is written whole: the current items of a batch are read with BatchGetItem,
//! merged in memory, and put back with a condition on the `version` read (or on the item
//! not existing yet). A writer that lost the race reads that one item again (strongly
//! consistent) and merges again; see `write.rs`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_view::watermark;

use riffle_aws::AwsError;
use riffle_aws::dynamo_batch::{self, Read};

use crate::AggregatorError;
use crate::aggregate::{ViewKey, ViewRow};
use riffle_view::item::{key_item, number, parse_item, row_item};

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

    /// Publishes how far the enricher shards feeding input `shard` have come (`time`, event
    /// time) and the allowed lateness of the views the batch wrote (`lateness`, millis by
    /// view name) into the view's watermark item ([`riffle_view::watermark`]), at `now_ms`.
    fn publish_watermark(
        &self,
        shard: &str,
        time: i64,
        lateness: &BTreeMap<String, i64>,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), AggregatorError>> + Send;
}

/// The view in DynamoDB: hash `agg_key` (S), range `window_start` (N); its watermark item
/// in the claims table (hash `pk`).
#[derive(Debug, Clone)]
pub struct DynamoViewStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    claims_table: String,
}

impl DynamoViewStore {
    /// The view in `table`, its watermark in `claims_table`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        claims_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            claims_table: claims_table.into(),
        }
    }
}

impl ViewStore for DynamoViewStore {
    async fn load(&self, keys: &[ViewKey]) -> Result<HashMap<ViewKey, ViewRow>, AggregatorError> {
        let keys = keys.iter().map(key_item).collect();
        let items = dynamo_batch::batch_get(&self.client, &self.table, keys, Read::Consistent)
            .await
            .map_err(AggregatorError::View)?;
        let mut out = HashMap::with_capacity(items.len());
        for item in &items {
            let row = parse_item(item)?;
            out.insert(row.key.clone(), row);
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

    async fn publish_watermark(
        &self,
        shard: &str,
        time: i64,
        lateness: &BTreeMap<String, i64>,
        now_ms: i64,
    ) -> Result<(), AggregatorError> {
        // One UpdateItem setting this shard's entry and the views' lateness: other shards set
        // other attributes of the same item, and DynamoDB applies each update whole.
        let mut update = self
            .client
            .update_item()
            .table_name(&self.claims_table)
            .key(
                watermark::CLAIMS_KEY_ATTRIBUTE,
                AttributeValue::S(watermark::WATERMARK_KEY.into()),
            )
            .expression_attribute_names("#s", format!("{}{shard}", watermark::SHARD_PREFIX))
            .expression_attribute_values(":s", watermark::shard_value(time, now_ms));
        let mut sets = vec!["#s = :s".to_owned()];
        for (i, (view, ms)) in lateness.iter().enumerate() {
            sets.push(format!("#l{i} = :l{i}"));
            update = update
                .expression_attribute_names(
                    format!("#l{i}"),
                    format!("{}{view}", watermark::LATENESS_PREFIX),
                )
                .expression_attribute_values(format!(":l{i}"), number(ms));
        }
        update
            .update_expression(format!("SET {}", sets.join(", ")))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AggregatorError::View(AwsError::from_sdk("UpdateItem", e)))
    }
}
