//! A view row as a DynamoDB item: the attributes of `schemas/view_row.avsc` plus `version`
//! (the optimistic lock) and `applied` (per input shard, the highest position folded in).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_codec::Position;

use crate::{Aggregate, ViewKey, ViewRow};

/// A view item that does not have the shape the aggregator writes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("view item {agg_key}/{window_start} is corrupt: {reason}")]
pub struct ItemError {
    /// Partition key of the item (empty when missing).
    pub agg_key: String,
    /// Sort key of the item (0 when missing).
    pub window_start: i64,
    /// What is wrong.
    pub reason: String,
}

/// A DynamoDB number.
pub fn number(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The item's key attributes.
pub fn key_item(key: &ViewKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("agg_key".to_owned(), AttributeValue::S(key.agg_key.clone())),
        ("window_start".to_owned(), number(key.window_start)),
    ])
}

/// Attribute holding, per input shard, the highest position applied (ADR 0009).
pub const APPLIED_ATTRIBUTE: &str = "applied";

/// Attribute holding the item's view ([`crate::view_name`]), the partition key of
/// [`BY_VIEW_INDEX`].
pub const VIEW_NAME_ATTRIBUTE: &str = "view_name";

/// The view table's index by view and window start (`infra/platform.yaml`): every key of one
/// view in one window, or over a time range, without a scan. It projects the aggregate, not
/// `applied`, whose per-shard positions readers never need.
pub const BY_VIEW_INDEX: &str = "by_view";

/// The DynamoDB item of a row: the attributes of `schemas/view_row.avsc` plus `version`,
/// `applied` (a map of shard id to [`Position::encode`]) and `view_name` (for
/// [`BY_VIEW_INDEX`]).
pub fn row_item(row: &ViewRow) -> HashMap<String, AttributeValue> {
    let mut item = key_item(&row.key);
    item.insert(
        VIEW_NAME_ATTRIBUTE.to_owned(),
        AttributeValue::S(crate::view_name(&row.key.agg_key).to_owned()),
    );
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
pub fn parse_item(item: &HashMap<String, AttributeValue>) -> Result<ViewRow, ItemError> {
    let agg_key = match item.get("agg_key") {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    let window_start_text = match item.get("window_start") {
        Some(AttributeValue::N(n)) => n.as_str(),
        _ => "",
    };
    let corrupt = |reason: String| ItemError {
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
        // The view the index finds it under: the key's part before its first `:`.
        assert_eq!(
            row_item(&row)[VIEW_NAME_ATTRIBUTE],
            AttributeValue::S("orders".into())
        );
        assert_eq!(crate::view_name("sensors:site=a:kind=b"), "sensors");
        assert_eq!(crate::view_name("com.riffle.x.Y"), "com.riffle.x.Y");
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
        assert_eq!(err.agg_key, "k");
        assert!(err.to_string().contains("count"));
        item.remove("agg_key");
        assert!(parse_item(&item).is_err());
    }
}
