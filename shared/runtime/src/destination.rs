//! The on-failure destination: what is sent to SQS for records the mapping gives up on.
//!
//! Each message has the shape of Lambda's own failure record for Kinesis
//! (`requestContext`, `responseContext`, `KinesisBatchInfo`, ...) plus a `records` array
//! with the records themselves in the Lambda event shape (data base64), so a message can
//! be redriven without reading the stream again. A batch is spread over as many messages
//! as SQS' message size needs, each with the batch info of its own records. A record too
//! big for a message on its own keeps its metadata but not its data; its sequence number
//! is listed in `dataOmitted` so it can be read back from the stream while retained.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::event::Pending;
use riffle_aws::sqs::MESSAGE_MAX_BYTES;

/// Why records were given up on, in Lambda's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The batch failed more often than `maximum_retry_attempts` allows.
    RetryAttemptsExhausted,
    /// The records became older than `maximum_record_age_secs`.
    RecordAgeExceeded,
}

impl Condition {
    /// The name Lambda uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// What the failure records say besides the records.
#[derive(Debug, Clone)]
pub struct FailureContext<'a> {
    /// The function's ARN.
    pub function_arn: &'a str,
    /// The stream's ARN.
    pub stream_arn: &'a str,
    /// The shard.
    pub shard_id: &'a str,
    /// Why.
    pub condition: Condition,
    /// Invocations made for these records.
    pub invoke_count: u32,
    /// When.
    pub now: DateTime<Utc>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn message(
    ctx: &FailureContext<'_>,
    chunk: &[Pending],
    records: Vec<Value>,
    omitted: Vec<&str>,
) -> Value {
    let first = chunk.first();
    let last = chunk.last();
    let start = first.map(Pending::seq).unwrap_or_default();
    let end = last.map(Pending::seq).unwrap_or_default();
    json!({
        "requestContext": {
            // Derived from the records, so resending the same failure is recognisable.
            "requestId": format!("{}:{}-{}", ctx.shard_id, start, end),
            "functionArn": ctx.function_arn,
            "condition": ctx.condition.as_str(),
            "approximateInvokeCount": ctx.invoke_count,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": time(ctx.now),
        "KinesisBatchInfo": {
            "shardId": ctx.shard_id,
            "startSequenceNumber": start,
            "endSequenceNumber": end,
            "approximateArrivalOfFirstRecord": first.map(|p| time(p.arrival())),
            "approximateArrivalOfLastRecord": last.map(|p| time(p.arrival())),
            "batchSize": chunk.len(),
            "streamArn": ctx.stream_arn,
        },
        "records": records,
        "dataOmitted": omitted,
    })
}

/// The SQS message bodies for `records`, each within SQS' message size.
pub fn failure_messages(ctx: &FailureContext<'_>, records: &[Pending]) -> Vec<String> {
    // Header size with no records, plus room for the chunk's own sequence numbers.
    let header = message(ctx, &[], Vec::new(), Vec::new()).to_string().len() + 512;
    let budget = MESSAGE_MAX_BYTES.saturating_sub(header);
    let mut bodies = Vec::new();
    let mut start = 0;
    let mut values: Vec<Value> = Vec::new();
    let mut omitted: Vec<&str> = Vec::new();
    let mut bytes = 0;
    for (i, p) in records.iter().enumerate() {
        let mut value = serde_json::to_value(&p.record).unwrap_or(Value::Null);
        let mut size = value.to_string().len() + 1;
        let mut too_big = false;
        if size > budget {
            // Keep the metadata; the data stays readable in the stream for its retention.
            if let Some(kinesis) = value.get_mut("kinesis") {
                kinesis["data"] = Value::String(String::new());
            }
            size = value.to_string().len() + 1 + p.seq().len() + 3;
            too_big = true;
        }
        if !values.is_empty() && bytes + size > budget {
            bodies.push(
                message(
                    ctx,
                    &records[start..i],
                    std::mem::take(&mut values),
                    std::mem::take(&mut omitted),
                )
                .to_string(),
            );
            start = i;
            bytes = 0;
        }
        if too_big {
            omitted.push(p.seq());
        }
        bytes += size;
        values.push(value);
    }
    if !values.is_empty() {
        bodies.push(message(ctx, &records[start..], values, omitted).to_string());
    }
    bodies
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::record::{KinesisEventRecord, Source};
    use std::sync::Arc;

    fn pending(seq: u64, len: usize) -> Pending {
        let source = Arc::new(Source {
            aws_region: "us-east-1".into(),
            event_source_arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(),
            invoke_identity_arn: "arn:aws:iam::1:role/f".into(),
            shard_id: "shardId-000000000001".into(),
        });
        Pending::new(source.event_record(vec![1; len], "k", &seq.to_string(), Utc::now()))
    }

    fn ctx() -> FailureContext<'static> {
        FailureContext {
            function_arn: "arn:aws:lambda:us-east-1:1:function:f",
            stream_arn: "arn:aws:kinesis:us-east-1:1:stream/s",
            shard_id: "shardId-000000000001",
            condition: Condition::RetryAttemptsExhausted,
            invoke_count: 4,
            now: Utc::now(),
        }
    }

    #[test]
    fn small_batch_is_one_message_in_lambdas_shape() {
        let records: Vec<Pending> = (5..8).map(|i| pending(i, 10)).collect();
        let bodies = failure_messages(&ctx(), &records);
        assert_eq!(bodies.len(), 1);
        let v: Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(v["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(v["requestContext"]["approximateInvokeCount"], 4);
        let info = &v["KinesisBatchInfo"];
        assert_eq!(info["shardId"], "shardId-000000000001");
        assert_eq!(info["startSequenceNumber"], "5");
        assert_eq!(info["endSequenceNumber"], "7");
        assert_eq!(info["batchSize"], 3);
        let back: Vec<KinesisEventRecord> = serde_json::from_value(v["records"].clone()).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].kinesis.data, vec![1; 10]);
    }

    #[test]
    fn large_batches_spread_over_messages_within_the_limit() {
        let records: Vec<Pending> = (0..10).map(|i| pending(i, 60 * 1024)).collect();
        let bodies = failure_messages(&ctx(), &records);
        assert!(bodies.len() > 1);
        let mut total = 0;
        for b in &bodies {
            assert!(b.len() <= MESSAGE_MAX_BYTES, "{}", b.len());
            let v: Value = serde_json::from_str(b).unwrap();
            let n = v["records"].as_array().unwrap().len();
            assert_eq!(v["KinesisBatchInfo"]["batchSize"], n);
            total += n;
        }
        assert_eq!(total, 10);
    }

    #[test]
    fn a_record_too_big_for_sqs_keeps_its_metadata() {
        let records = vec![pending(1, 10), pending(2, 400 * 1024), pending(3, 10)];
        let bodies = failure_messages(&ctx(), &records);
        let all: Vec<Value> = bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        for b in &bodies {
            assert!(b.len() <= MESSAGE_MAX_BYTES);
        }
        let omitted: Vec<&Value> = all
            .iter()
            .flat_map(|v| v["dataOmitted"].as_array().unwrap())
            .collect();
        assert_eq!(omitted, vec![&Value::String("2".into())]);
        let count: usize = all
            .iter()
            .map(|v| v["records"].as_array().unwrap().len())
            .sum();
        assert_eq!(count, 3);
    }
}
