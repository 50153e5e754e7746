//! Where a record sits on its shard ([`Position`]), the positions of a Lambda batch
//! ([`record_positions`]), and the origin a record is deduplicated by ([`origin_of`]).
//! The per-batch high-water marks built on them are in [`crate::marks`]
//! (docs/adr/0010-exactly-once-at-batch-cost.md).

use crate::KinesisEventRecord;
use riffle_codec::EnvelopeHead;

use crate::batch::shard_id;

pub use riffle_codec::position::{MAX_SUB_INDEX, Position, SEQUENCE_DIGITS};

/// The shard and position of every record of a (deaggregated) Lambda event, in order.
///
/// The sub-record index is the ordinal among consecutive records of one shard with the same
/// sequence number: deaggregation keeps order and a redelivery always starts at a whole
/// Kinesis record, so the ordinals are the same on every delivery. `None` for a record whose
/// sequence number is not a Kinesis one.
pub fn record_positions(records: &[KinesisEventRecord]) -> Vec<(&str, Option<Position>)> {
    let mut out: Vec<(&str, Option<Position>)> = Vec::with_capacity(records.len());
    let mut previous: Option<(&str, &str)> = None;
    let mut sub: u32 = 0;
    for record in records {
        let shard = shard_id(record);
        let seq = record.kinesis.sequence_number.as_str();
        sub = if previous == Some((shard, seq)) {
            sub.saturating_add(1)
        } else {
            0
        };
        previous = Some((shard, seq));
        out.push((shard, Position::new(seq, sub)));
    }
    out
}

/// Origin id of records whose envelope names none (a producer that does not use
/// `riffle-producer`): the record's own input position is its sequence, so redeliveries are
/// recognised; a copy of it at a new position is not (ADR 0010).
pub const POSITION_ORIGIN: &str = "";

/// The origin id and sequence a stage deduplicates `envelope` by, read at `position` of its
/// input shard: the envelope's own origin when it has a usable one, else
/// ([`POSITION_ORIGIN`], `position`).
pub fn origin_of<E: EnvelopeHead>(envelope: &E, position: Position) -> (&str, Position) {
    envelope
        .origin_parts()
        .and_then(|(id, seq, sub)| {
            let sub = u32::try_from(sub).ok()?;
            Some((id, Position::new(seq, sub)?))
        })
        .unwrap_or((POSITION_ORIGIN, position))
}

/// Prefix of the origin ids `riffle dlq redrive` gives the records it puts back:
/// `redrive:<stage>/<message id>/<index>`, new for every record, addressed to one stage.
pub const REDRIVE_ORIGIN_PREFIX: &str = "redrive:";

/// The origin of a record redriven to `stage` (record `index` of dead-letter message
/// `message_id`): unique, so no mark holds it back, and addressed, so the other readers of
/// the stream (the aggregator and the archiver share `enriched`) leave it alone.
pub fn redrive_origin(stage: &str, message_id: &str, index: usize) -> riffle_codec::Origin {
    riffle_codec::Origin {
        id: format!("{REDRIVE_ORIGIN_PREFIX}{stage}/{message_id}/{index}"),
        seq: "0".to_owned(),
        sub: 0,
    }
}

/// Whether `envelope` was redriven to a stage other than `stage`: that stage's record, which
/// `stage` already handled (or never had to).
pub fn redriven_elsewhere<E: EnvelopeHead>(envelope: &E, stage: &str) -> bool {
    envelope.origin_parts().is_some_and(|(id, _, _)| {
        id.strip_prefix(REDRIVE_ORIGIN_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(to, _)| to != stage)
    })
}

/// The origin id of what `stage` re-publishes from `shard`: `<stage>/<shard>`.
pub fn republished_origin_id(stage: &str, shard: &str) -> String {
    format!("{stage}/{shard}")
}

/// The origin a stage stamps on the record it re-publishes from `shard` at `position`: the
/// same on every retry of the batch, so downstream drops the copies (ADR 0010).
pub fn republished_origin(stage: &str, shard: &str, position: &Position) -> riffle_codec::Origin {
    riffle_codec::Origin {
        id: republished_origin_id(stage, shard),
        seq: position.sequence(),
        sub: i32::try_from(position.sub()).unwrap_or(i32::MAX),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(shard: &str, seq: &str) -> KinesisEventRecord {
        let mut r = KinesisEventRecord::default();
        r.kinesis.sequence_number = seq.into();
        r.source = crate::Source::of_shard(shard);
        r
    }

    #[test]
    fn redriven_records_are_addressed_to_one_stage() {
        let mut e = riffle_codec::Envelope {
            origin: None,
            event_id: "e".into(),
            source: "s".into(),
            subject: "x".into(),
            schema_id: 1,
            event_time: 0,
            ingest_time: 0,
            stage_times: std::collections::HashMap::new(),
            trace_header: None,
            payload: Vec::new(),
            enrichment: None,
        };
        assert!(!redriven_elsewhere(&e, "archiver"));
        e.origin = Some(redrive_origin("aggregator", "m-1", 3));
        assert!(redriven_elsewhere(&e, "archiver"));
        assert!(!redriven_elsewhere(&e, "aggregator"));
        let p = Position::new("77", 0).unwrap();
        let (origin, seq) = origin_of(&e, p);
        assert_eq!(
            (origin, seq),
            ("redrive:aggregator/m-1/3", Position::new("0", 0).unwrap())
        );
        e.origin = Some(republished_origin(
            "enricher",
            "shardId-1",
            &Position::new("0042", 3).unwrap(),
        ));
        let (origin, seq) = origin_of(&e, p);
        assert_eq!(
            (origin, seq),
            ("enricher/shardId-1", Position::new("42", 3).unwrap())
        );
        e.origin = None;
        assert_eq!(origin_of(&e, p), (POSITION_ORIGIN, p));
    }

    #[test]
    fn sub_indexes_count_user_records_of_one_kinesis_record() {
        let records = [
            record("shardId-1", "10"),
            record("shardId-1", "11"),
            record("shardId-1", "11"),
            record("shardId-1", "11"),
            record("shardId-2", "11"),
            record("shardId-1", "12"),
            record("shardId-1", "x"),
        ];
        let got: Vec<(&str, Option<(u32, String)>)> = record_positions(&records)
            .into_iter()
            .map(|(s, p)| (s, p.map(|p| (p.sub(), p.encode()))))
            .collect();
        let subs: Vec<(&str, Option<u32>)> = got
            .iter()
            .map(|(s, p)| (*s, p.as_ref().map(|p| p.0)))
            .collect();
        assert_eq!(
            subs,
            vec![
                ("shardId-1", Some(0)),
                ("shardId-1", Some(0)),
                ("shardId-1", Some(1)),
                ("shardId-1", Some(2)),
                ("shardId-2", Some(0)),
                ("shardId-1", Some(0)),
                ("shardId-1", None),
            ]
        );
        // A redelivery that starts at the aggregate gives the same positions.
        let again = record_positions(&records[1..4]);
        assert_eq!(
            again.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            record_positions(&records)[1..4]
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
        );
    }
}
