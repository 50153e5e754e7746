//! Where records go that no retry can fix.
//!
//! A record whose envelope cannot be decoded (bad frame, malformed body, an envelope schema
//! id the registry does not know), that lacks what the stage needs (the `enrichment` after
//! the enricher), or whose payload the stage cannot use will fail the same way on every
//! attempt. Reporting it as a batch item failure would make Lambda resume the shard from it
//! again and again until it ages out: the shard stalls and every later record is replayed on
//! each attempt. Failing the whole batch is worse still. So such a record is *parked*:
//! logged, counted, and sent with its reason to the stage's dead-letter queue
//! (`RIFFLE_DLQ_URL`, SQS) as a [`RejectMessage`] (the format every stage uses, so one tool
//! replays them all), and the batch goes on.
//!
//! The message carries the record's bytes so it can be replayed after a fix. SQS takes at
//! most [`MESSAGE_MAX_BYTES`]; a record too big for that is parked without its bytes but
//! with its shard id and sequence number, which find it on the stream for the retention
//! period (the same pointer Lambda's own on-failure destination gives).
//!
//! If the queue cannot take the messages the stage fails the batch as a whole (`Err`) before
//! anything else is written: nothing may be dropped silently, and failing first keeps the
//! retry from applying the good records twice.

use crate::KinesisEventRecord;
use riffle_aws::sqs::MESSAGE_MAX_BYTES;

use crate::ports::{OutputError, Rejects};
use crate::reject::RejectMessage;

/// The dead-letter message for `record`, parked by `stage` with reason `code`, trimmed to
/// what SQS accepts.
pub fn park_message(
    stage: &str,
    record: &KinesisEventRecord,
    code: &str,
    detail: String,
) -> RejectMessage {
    let mut message = RejectMessage::new(stage, record, code, detail);
    if message.to_sqs(String::new()).size() > MESSAGE_MAX_BYTES {
        message.detail = format!(
            "{} (record of {} bytes too large for SQS: bytes omitted, find it by shard and sequence number)",
            message.detail,
            record.kinesis.data.len()
        );
        message.data_base64.clear();
    }
    message
}

/// Logs and sends `parked` to the dead-letter queue behind `dead_letters`; returns how many
/// messages the queue finally refused (the caller fails the batch when that is not zero).
///
/// # Errors
/// The queue could not be called at all.
pub async fn park<D: Rejects>(
    dead_letters: &D,
    parked: &[RejectMessage],
) -> Result<usize, OutputError> {
    if parked.is_empty() {
        return Ok(0);
    }
    for message in parked {
        tracing::warn!(
            code = %message.code,
            sequence_number = %message.sequence_number,
            detail = %message.detail,
            "parking record on the dead-letter queue"
        );
    }
    let messages = parked
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_sqs(i.to_string()))
        .collect();
    Ok(dead_letters.reject(messages).await?.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testing::{Sink, reject_messages};

    fn record(data: Vec<u8>) -> KinesisEventRecord {
        let mut record = KinesisEventRecord::default();
        record.kinesis.data = data;
        record.kinesis.sequence_number = "49".into();
        record.source = crate::Source::of_shard("shardId-000000000003");
        record
    }

    #[test]
    fn message_keeps_the_bytes() {
        let m = park_message(
            "aggregator",
            &record(vec![0, 1, 2, 255]),
            "no_enrichment",
            "x".into(),
        );
        assert_eq!(m.data().unwrap(), vec![0, 1, 2, 255]);
        assert_eq!(m.code, "no_enrichment");
        assert_eq!(m.shard_id, "shardId-000000000003");
    }

    #[test]
    fn oversized_records_keep_only_the_pointer() {
        let m = park_message(
            "aggregator",
            &record(vec![7; MESSAGE_MAX_BYTES]),
            "malformed",
            "x".into(),
        );
        assert!(m.to_sqs("0".into()).size() <= MESSAGE_MAX_BYTES);
        assert!(m.data_base64.is_empty());
        assert_eq!(m.sequence_number, "49");
        assert!(m.detail.contains("too large"));
    }

    #[tokio::test]
    async fn park_sends_and_counts_refusals() {
        let parked = vec![
            park_message("archiver", &record(vec![1]), "malformed", "x".into()),
            park_message("archiver", &record(vec![2]), "truncated", "y".into()),
        ];
        let queue = Sink::new();
        assert_eq!(park(&queue, &[]).await.unwrap(), 0);
        assert_eq!(park(&queue, &parked).await.unwrap(), 0);
        assert_eq!(reject_messages(&queue.take()), parked);

        let refusing = Sink::failing(|i| i == 1);
        assert_eq!(park(&refusing, &parked).await.unwrap(), 1);
        refusing.set_refuse(true);
        assert!(park(&refusing, &parked).await.unwrap_err().retryable());
    }
}
