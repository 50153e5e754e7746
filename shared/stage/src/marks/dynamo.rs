//! [`DynamoMarks`]: the marks of each (stage, shard) as one DynamoDB item, and that item's
//! layout (key, version, the origin map, expiry).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_aws::AwsError;

use super::{Mark, MarkStore, ShardMarks};
use crate::dedup::Position;
use crate::ports::OutputError;

/// Prefix of a marks item's partition key: `marks#<stage>#<shard>`.
pub const MARKS_KEY_PREFIX: &str = "marks#";

/// [`MarkStore`] in a DynamoDB table with hash key `pk` (S) and TTL on `expires_at` (the
/// platform's claims table): one item per (stage, shard),
/// `{pk: "marks#<stage>#<shard>", version, marks: {"o:<origin>": "<position>|<at>[|<time>]"}, expires_at}`
/// (`time`: the origin's latest observed event time, ADR 0021).
/// Map keys carry a prefix because DynamoDB map keys cannot be empty and an origin id can.
#[derive(Debug, Clone)]
pub struct DynamoMarks {
    client: aws_sdk_dynamodb::Client,
    table: Arc<str>,
}

const PK: &str = "pk";
const VERSION: &str = "version";
const MARKS: &str = "marks";
const EXPIRES_AT: &str = "expires_at";
const ORIGIN_PREFIX: &str = "o:";

impl DynamoMarks {
    /// Marks in `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoMarks {
            client,
            table: Arc::from(table.into()),
        }
    }
}

/// The partition key of (stage, shard)'s marks.
pub fn marks_key(stage: &str, shard: &str) -> String {
    format!("{MARKS_KEY_PREFIX}{stage}#{shard}")
}

fn parse_mark(value: &AttributeValue) -> Option<Mark> {
    let mut parts = value.as_s().ok()?.split('|');
    let seq = Position::decode(parts.next()?)?;
    let at = parts.next()?.parse().ok()?;
    // The observed time is a third part, absent in marks written without one.
    let time = match parts.next() {
        None => None,
        Some(t) => Some(t.parse().ok()?),
    };
    Some(Mark { seq, at, time })
}

fn format_mark(m: &Mark) -> String {
    match m.time {
        None => format!("{}|{}", m.seq.encode(), m.at),
        Some(t) => format!("{}|{}|{t}", m.seq.encode(), m.at),
    }
}

impl MarkStore for DynamoMarks {
    async fn load(&self, stage: &str, shard: &str) -> Result<ShardMarks, OutputError> {
        let out = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key(PK, AttributeValue::S(marks_key(stage, shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| OutputError(AwsError::from_sdk("GetItem", e)))?;
        let Some(item) = out.item() else {
            return Ok(ShardMarks::default());
        };
        let version = item
            .get(VERSION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut marks = HashMap::new();
        if let Some(Ok(map)) = item.get(MARKS).map(AttributeValue::as_m) {
            for (key, value) in map {
                // An entry of another shape is skipped, not trusted: its origin starts over.
                if let (Some(origin), Some(mark)) =
                    (key.strip_prefix(ORIGIN_PREFIX), parse_mark(value))
                {
                    marks.insert(origin.to_owned(), mark);
                }
            }
        }
        Ok(ShardMarks { version, marks })
    }

    async fn save(
        &self,
        stage: &str,
        shard: &str,
        marks: &ShardMarks,
        expires_at: i64,
    ) -> Result<bool, OutputError> {
        let map: HashMap<String, AttributeValue> = marks
            .marks
            .iter()
            .map(|(origin, m)| {
                (
                    format!("{ORIGIN_PREFIX}{origin}"),
                    AttributeValue::S(format_mark(m)),
                )
            })
            .collect();
        let mut request = self
            .client
            .put_item()
            .table_name(&*self.table)
            .item(PK, AttributeValue::S(marks_key(stage, shard)))
            .item(VERSION, AttributeValue::N(marks.version.to_string()))
            .item(MARKS, AttributeValue::M(map))
            .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()));
        request = if marks.version <= 1 {
            request.condition_expression("attribute_not_exists(#pk)")
        } else {
            request
                .condition_expression("#v = :prev")
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(
                    ":prev",
                    AttributeValue::N((marks.version - 1).to_string()),
                )
        };
        if marks.version <= 1 {
            request = request.expression_attribute_names("#pk", PK);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let conflict = e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception());
                if conflict {
                    Ok(false)
                } else {
                    Err(OutputError(AwsError::from_sdk("PutItem", e)))
                }
            }
        }
    }
}
