//! The on-failure destination: what is sent to SQS for records the mapping gives up on.
//!
//! Exactly what Lambda sends for a Kinesis event source ([`riffle_aws::on_failure`]): the
//! shard, the first and last sequence number, how many records, why; never the records
//! themselves. They stay on the stream for its retention and `riffle dlq redrive` reads
//! them back by position, so the same tools work on AWS and locally.

use chrono::{DateTime, SecondsFormat, Utc};
pub use riffle_aws::on_failure::Condition;
use riffle_aws::on_failure::{KinesisBatchInfo, OnFailure, RequestContext, ResponseContext};

use crate::event::Pending;

/// What the failure record says besides the positions.
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

/// The on-failure message for `records`, consecutive Kinesis records of one shard (the
/// mapping gives up on whole records, never on part of an aggregate).
pub fn failure_message(ctx: &FailureContext<'_>, records: &[Pending]) -> OnFailure {
    let first = records.first();
    let last = records.last();
    let start = first.map(Pending::seq).unwrap_or_default();
    let end = last.map(Pending::seq).unwrap_or_default();
    OnFailure {
        request_context: RequestContext {
            // Derived from the records, so resending the same failure is recognisable.
            request_id: format!("{}:{}-{}", ctx.shard_id, start, end),
            function_arn: ctx.function_arn.to_owned(),
            condition: ctx.condition,
            approximate_invoke_count: ctx.invoke_count,
        },
        response_context: ResponseContext {
            status_code: 200,
            executed_version: "$LATEST".to_owned(),
            function_error: Some("Unhandled".to_owned()),
        },
        version: "1.0".to_owned(),
        timestamp: time(ctx.now),
        kinesis_batch_info: KinesisBatchInfo {
            shard_id: ctx.shard_id.to_owned(),
            start_sequence_number: start.to_owned(),
            end_sequence_number: end.to_owned(),
            approximate_arrival_of_first_record: first.map(|p| time(p.arrival())),
            approximate_arrival_of_last_record: last.map(|p| time(p.arrival())),
            batch_size: records.len() as u64,
            stream_arn: ctx.stream_arn.to_owned(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::record::Source;
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
    fn a_batch_is_one_message_of_positions_in_lambdas_shape() {
        let records: Vec<Pending> = (5..8).map(|i| pending(i, 400 * 1024)).collect();
        let ctx = ctx();
        let body = failure_message(&ctx, &records).to_body();
        assert!(
            body.len() < 2048,
            "metadata only, whatever the records' size"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(v["requestContext"]["approximateInvokeCount"], 4);
        assert_eq!(v["responseContext"]["functionError"], "Unhandled");
        let info = &v["KinesisBatchInfo"];
        assert_eq!(info["shardId"], "shardId-000000000001");
        assert_eq!(info["startSequenceNumber"], "5");
        assert_eq!(info["endSequenceNumber"], "7");
        assert_eq!(info["batchSize"], 3);
        assert_eq!(info["streamArn"], "arn:aws:kinesis:us-east-1:1:stream/s");
        assert!(v.get("records").is_none());
        assert_eq!(
            OnFailure::parse(&body).unwrap(),
            failure_message(&ctx, &records)
        );
    }
}
