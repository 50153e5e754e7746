//! Unpacking KPL aggregates before the handler sees a batch.
//!
//! Lambda hands aggregated records to the function as they are; unpacking them here, for both
//! the Lambda and the local path, means no handler has to know aggregation exists. Each user
//! record becomes an event record of its own that keeps its parent's sequence number, so a
//! failure reported for any of them restarts the shard at the parent, which is the unit
//! Kinesis and Lambda know. A corrupt aggregate is passed on untouched; the handler rejects it
//! with its reason (the validator reports the deaggregation error).

use riffle_codec::kpl;

use crate::{KinesisEvent, KinesisEventRecord, KinesisRecord};

/// `event` with every valid aggregate replaced by its user records, in order.
pub fn expand(mut event: KinesisEvent) -> KinesisEvent {
    if !event
        .records
        .iter()
        .any(|r| kpl::is_aggregated(&r.kinesis.data))
    {
        return event;
    }
    let mut records = Vec::with_capacity(event.records.len());
    for record in event.records.drain(..) {
        if !kpl::is_aggregated(&record.kinesis.data) {
            records.push(record);
            continue;
        }
        // A compressed aggregate (ADR 0022) is unpacked first; its user records are copied
        // out of the unpacked buffer below like those of a plain one.
        let opened = kpl::open(&record.kinesis.data);
        match kpl::records_of(&opened) {
            // Built field by field, never by cloning the parent: its data is the whole
            // aggregate (up to about 1 MiB), and copying it once per user record made
            // unpacking quadratic; it was half of every stage's CPU in the demo.
            Ok(subs) => records.extend(subs.iter().map(|sub| KinesisEventRecord {
                source: record.source.clone(),
                kinesis: KinesisRecord {
                    data: sub.data.to_vec(),
                    partition_key: sub.partition_key.to_owned(),
                    sequence_number: record.kinesis.sequence_number.clone(),
                    approximate_arrival_timestamp: record.kinesis.approximate_arrival_timestamp,
                },
            })),
            Err(e) => {
                tracing::warn!(seq = %record.kinesis.sequence_number, error = %e, "corrupt aggregate passed on");
                records.push(record);
            }
        }
    }
    event.records = records;
    event
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(seq: &str, key: &str, data: Vec<u8>) -> KinesisEventRecord {
        let mut r = KinesisEventRecord::default();
        r.kinesis.sequence_number = seq.into();
        r.kinesis.partition_key = key.into();
        r.kinesis.data = data;
        r
    }

    #[test]
    fn expands_aggregates_in_place_and_keeps_plain_records() {
        let mut agg = kpl::Aggregator::new();
        agg.add("k1", None, b"one");
        agg.add("k2", None, b"two");
        // Compressed (ADR 0022): many records, so the frame is smaller than the aggregate.
        let mut packed = kpl::Aggregator::new();
        for _ in 0..50 {
            packed.add("k3", None, b"three three three");
        }
        let compressed = kpl::compress(packed.finish());
        assert!(kpl::is_compressed(&compressed));
        let event = KinesisEvent {
            records: vec![
                record("1", "p", b"plain".to_vec()),
                record("2", "k1", agg.finish()),
                record("3", "p", b"last".to_vec()),
                record("4", "k3", compressed),
            ],
        };
        let out = expand(event);
        let seen: Vec<_> = out
            .records
            .iter()
            .map(|r| {
                (
                    r.kinesis.sequence_number.as_str(),
                    r.kinesis.partition_key.as_str(),
                    r.kinesis.data.as_slice(),
                )
            })
            .collect();
        let mut expected = vec![
            ("1", "p", &b"plain"[..]),
            ("2", "k1", b"one"),
            ("2", "k2", b"two"),
            ("3", "p", b"last"),
        ];
        expected.extend(std::iter::repeat_n(
            ("4", "k3", &b"three three three"[..]),
            50,
        ));
        assert_eq!(seen, expected);
    }

    #[test]
    fn corrupt_aggregates_pass_through() {
        let mut agg = kpl::Aggregator::new();
        agg.add("k", None, b"x");
        let mut bytes = agg.finish();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        // A compressed one cut short.
        let mut packed = kpl::Aggregator::new();
        for _ in 0..50 {
            packed.add("k", None, b"y y y y y y");
        }
        let compressed = kpl::compress(packed.finish());
        let cut = compressed[..compressed.len() - 3].to_vec();
        let event = KinesisEvent {
            records: vec![
                record("9", "k", bytes.clone()),
                record("10", "k", cut.clone()),
            ],
        };
        let out = expand(event);
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.records[0].kinesis.data, bytes);
        assert_eq!(out.records[1].kinesis.data, cut);
    }
}
