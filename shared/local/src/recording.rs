//! moto's request recorder, read back: what the local DynamoDB was asked for, item by item,
//! so that the stages' own metering (`riffle_aws::meter`) can be held to what the emulator
//! saw. The recorder keeps one JSON line per request (headers, body, base64 when binary).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::LocalError;

/// Item reads and writes one table was asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ItemCounts {
    /// Items read by key (GetItem, BatchGetItem keys).
    pub reads: u64,
    /// Items written (PutItem, UpdateItem, DeleteItem, BatchWriteItem and TransactWriteItems
    /// entries).
    pub writes: u64,
}

impl std::ops::AddAssign for ItemCounts {
    fn add_assign(&mut self, other: ItemCounts) {
        self.reads += other.reads;
        self.writes += other.writes;
    }
}

#[derive(Deserialize)]
struct Recorded {
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    body_encoded: bool,
}

/// The DynamoDB item reads and writes in a recording, per table. Requests of other
/// services, table management and Query/Scan (whose item counts only the answers know) are
/// left out; a line that is not a request the recorder writes is an error.
///
/// # Errors
/// [`LocalError::Recording`] for a line that does not read as a recorded request.
pub fn dynamo_items(recording: &str) -> Result<BTreeMap<String, ItemCounts>, LocalError> {
    let mut out: BTreeMap<String, ItemCounts> = BTreeMap::new();
    for (n, line) in recording.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| LocalError::Recording(format!("line {}: {why}", n + 1));
        let request: Recorded = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let Some(operation) = request
            .headers
            .get("X-Amz-Target")
            .and_then(|t| t.strip_prefix("DynamoDB_20120810."))
        else {
            continue;
        };
        let body = if request.body_encoded {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(request.body.trim())
                .map_err(|e| bad(format!("body is not base64: {e}")))?
        } else {
            request.body.into_bytes()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("{operation}: {e}")))?;
        let table = || body["TableName"].as_str().unwrap_or_default().to_owned();
        match operation {
            "GetItem" => out.entry(table()).or_default().reads += 1,
            "PutItem" | "UpdateItem" | "DeleteItem" => out.entry(table()).or_default().writes += 1,
            "BatchGetItem" => {
                for (t, request) in body["RequestItems"].as_object().into_iter().flatten() {
                    let keys = request["Keys"].as_array().map_or(0, Vec::len);
                    out.entry(t.clone()).or_default().reads += keys as u64;
                }
            }
            "BatchWriteItem" => {
                for (t, requests) in body["RequestItems"].as_object().into_iter().flatten() {
                    let n = requests.as_array().map_or(0, Vec::len);
                    out.entry(t.clone()).or_default().writes += n as u64;
                }
            }
            "TransactWriteItems" => {
                for item in body["TransactItems"].as_array().into_iter().flatten() {
                    let t = item
                        .as_object()
                        .and_then(|o| o.values().next())
                        .and_then(|action| action["TableName"].as_str())
                        .unwrap_or_default();
                    out.entry(t.to_owned()).or_default().writes += 1;
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(target: &str, body: &str) -> String {
        serde_json::json!({
            "headers": {"X-Amz-Target": format!("DynamoDB_20120810.{target}")},
            "method": "POST",
            "url": "http://127.0.0.1:1/",
            "body": body,
            "body_encoded": false,
        })
        .to_string()
    }

    #[test]
    fn items_are_counted_per_table_and_operation() {
        let encoded = serde_json::json!({
            "headers": {"X-Amz-Target": "DynamoDB_20120810.PutItem"},
            "body": "eyJUYWJsZU5hbWUiOiJ2aWV3In0=",
            "body_encoded": true,
        })
        .to_string();
        let recording = [
            line("GetItem", r#"{"TableName":"marks"}"#),
            line("UpdateItem", r#"{"TableName":"marks"}"#),
            line(
                "BatchGetItem",
                r#"{"RequestItems":{"view":{"Keys":[{},{},{}]},"ref":{"Keys":[{}]}}}"#,
            ),
            line("BatchWriteItem", r#"{"RequestItems":{"view":[{},{}]}}"#),
            line(
                "TransactWriteItems",
                r#"{"TransactItems":[{"Put":{"TableName":"schemas"}},{"Update":{"TableName":"schemas"}}]}"#,
            ),
            line("Scan", r#"{"TableName":"view"}"#),
            line("CreateTable", r#"{"TableName":"view"}"#),
            encoded,
            r#"{"headers": {"Host": "x"}, "method": "GET", "url": "/moto-api/", "body": ""}"#
                .to_owned(),
            String::new(),
        ]
        .join("\n");
        let got = dynamo_items(&recording).unwrap();
        let counts = |t: &str| got.get(t).copied().unwrap_or_default();
        assert_eq!(
            counts("marks"),
            ItemCounts {
                reads: 1,
                writes: 1
            }
        );
        assert_eq!(
            counts("view"),
            ItemCounts {
                reads: 3,
                writes: 3
            }
        );
        assert_eq!(
            counts("ref"),
            ItemCounts {
                reads: 1,
                writes: 0
            }
        );
        assert_eq!(
            counts("schemas"),
            ItemCounts {
                reads: 0,
                writes: 2
            }
        );
        assert!(dynamo_items("not json").is_err());
    }
}
