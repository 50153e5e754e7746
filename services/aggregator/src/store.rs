//! The view table behind a port: read current items, write one item only over the
//! version that was read.
//!
//! DynamoDB update expressions can add to a number but cannot keep a minimum or maximum,
//! so an item is written whole: the current items of a batch are read with BatchGetItem,
//! merged in memory, and put back with a condition on the `version` read (or on the item
//! not existing yet). A writer that lost the race reads that one item again (strongly
//! consistent) and merges again; see [`crate::handler`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use riffle_aws::AwsError;
use riffle_aws::backoff::full_jitter;

use crate::AggregatorError;
use crate::aggregate::{Aggregate, Position, ViewKey, ViewRow};

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

fn number(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key_item(key: &ViewKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("agg_key".to_owned(), AttributeValue::S(key.agg_key.clone())),
        ("window_start".to_owned(), number(key.window_start)),
    ])
}

/// Attribute holding, per input shard, the highest position applied (ADR 0009).
pub const APPLIED_ATTRIBUTE: &str = "applied";

/// The DynamoDB item of a row: the attributes of `schemas/view_row.avsc` plus `version` and
/// `applied` (a map of shard id to [`Position::encode`]).
pub fn row_item(row: &ViewRow) -> HashMap<String, AttributeValue> {
    let mut item = key_item(&row.key);
    let a = &row.aggregate;
    let applied = row
        .applied
        .iter()
        .map(|(shard, position)| (shard.clone(), AttributeValue::S(position.encode())))
        .collect();
    item.insert(APPLIED_ATTRIBUTE.to_owned(), AttributeValue::M(applied));
    item.extend([
        ("window_secs".to_owned(), number(row.window_secs)),
        ("count".to_owned(), number(a.count)),
        ("sum".to_owned(), number(a.sum)),
        ("min".to_owned(), number(a.min)),
        ("max".to_owned(), number(a.max)),
        ("updated_at".to_owned(), number(row.updated_at)),
        ("expires_at".to_owned(), number(row.expires_at)),
        ("version".to_owned(), number(row.version)),
    ]);
    item
}

/// Reads an item back; anything missing or unparsable makes it corrupt.
pub fn parse_item(item: &HashMap<String, AttributeValue>) -> Result<ViewRow, AggregatorError> {
    let agg_key = match item.get("agg_key") {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    let window_start_text = match item.get("window_start") {
        Some(AttributeValue::N(n)) => n.as_str(),
        _ => "",
    };
    let corrupt = |reason: String| AggregatorError::CorruptItem {
        agg_key: agg_key.clone(),
        window_start: window_start_text.parse().unwrap_or_default(),
        reason,
    };
    fn num<T: std::str::FromStr>(
        item: &HashMap<String, AttributeValue>,
        name: &str,
    ) -> Result<T, String> {
        match item.get(name) {
            Some(AttributeValue::N(n)) => n
                .parse::<T>()
                .map_err(|_| format!("`{name}` = {n:?} does not parse")),
            Some(_) => Err(format!("`{name}` is not a number")),
            None => Err(format!("`{name}` is missing")),
        }
    }
    let read = || -> Result<ViewRow, String> {
        if agg_key.is_empty() {
            return Err("`agg_key` is missing".into());
        }
        Ok(ViewRow {
            key: ViewKey {
                agg_key: agg_key.clone(),
                window_start: num(item, "window_start")?,
            },
            window_secs: num(item, "window_secs")?,
            aggregate: Aggregate {
                count: num(item, "count")?,
                sum: num(item, "sum")?,
                min: num(item, "min")?,
                max: num(item, "max")?,
            },
            updated_at: num(item, "updated_at")?,
            expires_at: num(item, "expires_at")?,
            version: num(item, "version")?,
            applied: applied(item)?,
        })
    };
    read().map_err(corrupt)
}

/// The `applied` map; an item written before positions were kept has none (nothing is
/// known to be applied from any shard, which is what an empty map says).
fn applied(item: &HashMap<String, AttributeValue>) -> Result<BTreeMap<String, Position>, String> {
    let map = match item.get(APPLIED_ATTRIBUTE) {
        None => return Ok(BTreeMap::new()),
        Some(AttributeValue::M(map)) => map,
        Some(_) => return Err(format!("`{APPLIED_ATTRIBUTE}` is not a map")),
    };
    map.iter()
        .map(|(shard, value)| {
            let position = value
                .as_s()
                .ok()
                .and_then(|text| Position::decode(text))
                .ok_or_else(|| format!("`{APPLIED_ATTRIBUTE}.{shard}` is not a position"))?;
            Ok((shard.clone(), position))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn item_round_trips() {
        let row = ViewRow {
            key: ViewKey {
                agg_key: "orders:category=books".into(),
                window_start: 1_764_000_000_000,
            },
            window_secs: 60,
            aggregate: Aggregate {
                count: 3,
                sum: 0.1 + 0.2,
                min: -1e-7,
                max: 1e20,
            },
            updated_at: 1_764_000_001_000,
            expires_at: 1_766_592_060,
            version: 4,
            applied: BTreeMap::from([
                (
                    "shardId-000000000000".into(),
                    Position::new(
                        "49590338271490256608559692538361571095921575989136588898",
                        3,
                    )
                    .unwrap(),
                ),
                (
                    "shardId-000000000001".into(),
                    Position::new("7", 0).unwrap(),
                ),
            ]),
        };
        assert_eq!(parse_item(&row_item(&row)).unwrap(), row);
        // Items from before positions were kept read as holding none.
        let mut old = row_item(&row);
        old.remove(APPLIED_ATTRIBUTE);
        assert!(parse_item(&old).unwrap().applied.is_empty());
    }

    #[test]
    fn foreign_items_are_corrupt_not_panics() {
        let mut item = row_item(&ViewRow {
            key: ViewKey {
                agg_key: "k".into(),
                window_start: 0,
            },
            window_secs: 60,
            aggregate: Aggregate::of(1.0),
            updated_at: 0,
            expires_at: 0,
            version: 1,
            applied: BTreeMap::new(),
        });
        let mut bad_mark = item.clone();
        bad_mark.insert(
            APPLIED_ATTRIBUTE.into(),
            AttributeValue::M(HashMap::from([(
                "shardId-0".into(),
                AttributeValue::S("12".into()),
            )])),
        );
        assert!(
            parse_item(&bad_mark)
                .unwrap_err()
                .to_string()
                .contains("applied")
        );
        item.insert("count".into(), AttributeValue::S("three".into()));
        let err = parse_item(&item).unwrap_err();
        assert!(matches!(err, AggregatorError::CorruptItem { .. }));
        assert!(err.to_string().contains("count"));
        item.remove("agg_key");
        assert!(parse_item(&item).is_err());
    }
}
