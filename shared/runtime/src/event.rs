//! The Lambda Kinesis event, built from records read with GetRecords, and the pure rules
//! of the event source mapping: cutting batches, reading partial failures, bisecting,
//! expiring old records.

use std::collections::VecDeque;

use std::sync::Arc;

use aws_lambda_events::event::streams::KinesisEventResponse;
use chrono::{DateTime, Utc};

use crate::record::{KinesisEvent, KinesisEventRecord, KinesisRecord, Source};

pub use riffle_aws::limits::LAMBDA_INVOCATION_PAYLOAD_MAX_BYTES as INVOCATION_PAYLOAD_MAX_BYTES;
/// `{"Records":[` and `]}` around the records.
const EVENT_ENVELOPE_BYTES: usize = 16;
/// Field names, quotes and fixed values of one record in JSON, generously counted (a test
/// checks the estimate never falls short).
const RECORD_FIXED_JSON_BYTES: usize = 360;

impl Source {
    /// The Lambda event record for one Kinesis record.
    pub fn record(self: &Arc<Self>, record: &aws_sdk_kinesis::types::Record) -> KinesisEventRecord {
        let arrival = record
            .approximate_arrival_timestamp()
            .and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.to_millis().ok()?))
            .unwrap_or_else(Utc::now);
        self.event_record(
            record.data().as_ref().to_vec(),
            record.partition_key(),
            record.sequence_number(),
            arrival,
        )
    }

    /// The Lambda event record from its parts.
    pub fn event_record(
        self: &Arc<Self>,
        data: Vec<u8>,
        partition_key: &str,
        sequence_number: &str,
        arrival: DateTime<Utc>,
    ) -> KinesisEventRecord {
        KinesisEventRecord {
            source: self.clone(),
            kinesis: KinesisRecord {
                data,
                partition_key: partition_key.to_owned(),
                sequence_number: sequence_number.to_owned(),
                approximate_arrival_timestamp: arrival,
            },
        }
    }
}

/// An event record waiting to be delivered, with its JSON size worked out once.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The record as the handler sees it.
    pub record: KinesisEventRecord,
    /// Upper bound of its size in the invocation payload.
    pub size: usize,
}

impl Pending {
    /// Wraps a record, estimating its payload size.
    pub fn new(record: KinesisEventRecord) -> Self {
        let size = estimate_json_size(&record);
        Self { record, size }
    }

    /// The record's sequence number.
    pub fn seq(&self) -> &str {
        &self.record.kinesis.sequence_number
    }

    /// When Kinesis received the record.
    pub fn arrival(&self) -> DateTime<Utc> {
        self.record.kinesis.approximate_arrival_timestamp
    }
}

/// An upper bound of the record's length in the event JSON, without serializing it.
pub fn estimate_json_size(r: &KinesisEventRecord) -> usize {
    let source = &r.source;
    RECORD_FIXED_JSON_BYTES
        + r.kinesis.data.len().div_ceil(3) * 4
        + escaped_len(&r.kinesis.partition_key)
        + escaped_len(&r.kinesis.sequence_number) * 2
        + escaped_len(&source.shard_id)
        + escaped_len(&source.aws_region)
        + escaped_len(&source.event_source_arn)
        + escaped_len(&source.invoke_identity_arn)
}

/// Length of a string once JSON-escaped (control characters worst case `\u00XX`).
fn escaped_len(s: &str) -> usize {
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// Takes the next batch from the front of `buffer`: at most `batch_size` records and at
/// most the invocation payload limit, but always at least one record (a record is at most
/// 1 MiB, far below the limit).
pub fn cut_batch(buffer: &mut VecDeque<Pending>, batch_size: usize) -> Vec<Pending> {
    cut_batch_within(buffer, batch_size, INVOCATION_PAYLOAD_MAX_BYTES)
}

fn cut_batch_within(
    buffer: &mut VecDeque<Pending>,
    batch_size: usize,
    payload_limit: usize,
) -> Vec<Pending> {
    let mut bytes = EVENT_ENVELOPE_BYTES;
    let mut count = 0;
    for p in buffer.iter() {
        if count >= batch_size || (count > 0 && bytes + p.size + 1 > payload_limit) {
            break;
        }
        bytes += p.size + 1;
        count += 1;
    }
    buffer.drain(..count).collect()
}

/// The event for a batch.
pub fn event_of(batch: &[Pending]) -> KinesisEvent {
    KinesisEvent {
        records: batch.iter().map(|p| p.record.clone()).collect(),
    }
}

/// How a handler's successful answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every record is done.
    Success,
    /// Records from this index on must be retried; those before are done.
    FailedFrom(usize),
    /// The answer names no usable record: the whole batch failed.
    WholeBatchFailed,
}

/// Reads `batch_item_failures` as Lambda does: ignored unless the mapping reports item
/// failures; otherwise the lowest failed sequence number counts, and an empty, missing or
/// unknown identifier fails the whole batch.
pub fn verdict(
    batch: &[Pending],
    response: &KinesisEventResponse,
    report_failures: bool,
) -> Verdict {
    if !report_failures || response.batch_item_failures.is_empty() {
        return Verdict::Success;
    }
    let mut lowest: Option<usize> = None;
    for failure in &response.batch_item_failures {
        let Some(id) = failure.item_identifier.as_deref().filter(|s| !s.is_empty()) else {
            return Verdict::WholeBatchFailed;
        };
        match batch.iter().position(|p| p.seq() == id) {
            Some(i) => lowest = Some(lowest.map_or(i, |l| l.min(i))),
            None => return Verdict::WholeBatchFailed,
        }
    }
    match lowest {
        Some(i) => Verdict::FailedFrom(i),
        None => Verdict::Success,
    }
}

/// Splits a failing batch into two halves (the first one the larger), in order.
pub fn bisect(mut batch: Vec<Pending>) -> (Vec<Pending>, Vec<Pending>) {
    let second = batch.split_off(batch.len().div_ceil(2));
    (batch, second)
}

/// Separates records that arrived longer than `max_age` before `now` from the others,
/// both in order.
pub fn split_expired(
    batch: Vec<Pending>,
    max_age: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> (Vec<Pending>, Vec<Pending>) {
    let Some(max_age) = max_age.and_then(|a| chrono::Duration::from_std(a).ok()) else {
        return (Vec::new(), batch);
    };
    batch.into_iter().partition(|p| now - p.arrival() > max_age)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::KinesisEventResponse;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/kinesis_event.json");

    fn source() -> Arc<Source> {
        Arc::new(Source {
            aws_region: "us-east-1".into(),
            event_source_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/riffle-raw".into(),
            invoke_identity_arn: "arn:aws:iam::123456789012:role/riffle-validator".into(),
            shard_id: "shardId-000000000000".into(),
        })
    }

    fn pending(seq: u64, len: usize) -> Pending {
        Pending::new(source().event_record(
            vec![7; len],
            "key",
            &seq.to_string(),
            DateTime::from_timestamp_millis(1_700_000_000_000 + (seq % 1_000_000) as i64).unwrap(),
        ))
    }

    #[test]
    fn fixture_round_trips() {
        let parsed: KinesisEvent = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(parsed.records.len(), 2);
        let again: KinesisEvent =
            serde_json::from_slice(&serde_json::to_vec(&parsed).unwrap()).unwrap();
        assert_eq!(parsed, again);
    }

    #[test]
    fn built_records_match_a_real_lambda_event() {
        let parsed: KinesisEvent = serde_json::from_str(FIXTURE).unwrap();
        let built: Vec<KinesisEventRecord> = parsed
            .records
            .iter()
            .map(|r| {
                source().event_record(
                    r.kinesis.data.clone(),
                    &r.kinesis.partition_key,
                    &r.kinesis.sequence_number,
                    r.kinesis.approximate_arrival_timestamp,
                )
            })
            .collect();
        assert_eq!(built, parsed.records);
        // In JSON too, so every name and value on the wire is Lambda's.
        let fixture: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let ours = serde_json::to_value(event_of(
            &built.into_iter().map(Pending::new).collect::<Vec<_>>(),
        ))
        .unwrap();
        assert_eq!(ours, fixture);
    }

    #[test]
    fn size_estimate_is_an_upper_bound() {
        for len in [0, 1, 2, 3, 100, 4096] {
            let p = pending(49_568_167_373_333_333, len);
            let actual = serde_json::to_vec(&p.record).unwrap().len();
            assert!(p.size >= actual, "{} < {actual}", p.size);
            assert!(
                p.size < actual + RECORD_FIXED_JSON_BYTES,
                "estimate too loose"
            );
        }
        let mut odd = pending(1, 10);
        odd.record.kinesis.partition_key = "\"\u{1}".repeat(50);
        let odd = Pending::new(odd.record);
        assert!(odd.size >= serde_json::to_vec(&odd.record).unwrap().len());
    }

    #[test]
    fn batches_are_cut_by_count_and_payload() {
        let mut buffer: VecDeque<Pending> = (0..10).map(|i| pending(i, 10)).collect();
        let batch = cut_batch(&mut buffer, 4);
        assert_eq!(
            batch.iter().map(|p| p.seq()).collect::<Vec<_>>(),
            ["0", "1", "2", "3"]
        );
        assert_eq!(buffer.len(), 6);

        let one_mib = 1024 * 1024;
        let mut big: VecDeque<Pending> = (0..10).map(|i| pending(i, one_mib)).collect();
        let batch = cut_batch(&mut big, 10_000);
        let payload = serde_json::to_vec(&event_of(&batch)).unwrap().len();
        assert!(payload <= INVOCATION_PAYLOAD_MAX_BYTES);
        assert_eq!(batch.len(), 4, "4 MiB of data is ~5.3 MiB of base64");
        assert_eq!(big.front().unwrap().seq(), "4");

        let mut tiny_limit: VecDeque<Pending> = (0..3).map(|i| pending(i, 100)).collect();
        assert_eq!(cut_batch_within(&mut tiny_limit, 10, 1).len(), 1);
    }

    #[test]
    fn partial_failures_retry_from_the_lowest_sequence_number() {
        let batch: Vec<Pending> = (10..15).map(|i| pending(i, 1)).collect();
        let mut response = KinesisEventResponse::default();
        assert_eq!(verdict(&batch, &response, true), Verdict::Success);
        response.set_failures(["13", "11"]);
        assert_eq!(verdict(&batch, &response, true), Verdict::FailedFrom(1));
        assert_eq!(verdict(&batch, &response, false), Verdict::Success);
        response.set_failures(["99"]);
        assert_eq!(verdict(&batch, &response, true), Verdict::WholeBatchFailed);
        response.set_failures([""]);
        assert_eq!(verdict(&batch, &response, true), Verdict::WholeBatchFailed);
    }

    #[test]
    fn bisect_keeps_order_and_every_record() {
        let (a, b) = bisect((0..5).map(|i| pending(i, 1)).collect());
        assert_eq!(
            a.iter().map(|p| p.seq()).collect::<Vec<_>>(),
            ["0", "1", "2"]
        );
        assert_eq!(b.iter().map(|p| p.seq()).collect::<Vec<_>>(), ["3", "4"]);
        let (a, b) = bisect(vec![pending(9, 1)]);
        assert_eq!((a.len(), b.len()), (1, 0));
    }

    #[test]
    fn old_records_expire() {
        let batch: Vec<Pending> = (0..5).map(|i| pending(i * 1000, 1)).collect();
        let now = DateTime::from_timestamp_millis(1_700_000_000_000 + 62_500).unwrap();
        let age = Some(std::time::Duration::from_secs(60));
        let (expired, fresh) = split_expired(batch.clone(), age, now);
        assert_eq!(
            expired.iter().map(|p| p.seq()).collect::<Vec<_>>(),
            ["0", "1000", "2000"]
        );
        assert_eq!(fresh.len(), 2);
        let (expired, fresh) = split_expired(batch, None, now);
        assert_eq!((expired.len(), fresh.len()), (0, 5));
    }
}
