//! Where a record sits on its shard ([`Position`]), the positions of a Lambda batch
//! ([`record_positions`]), and the origin a record is deduplicated by ([`origin_of`]).
//! The per-batch high-water marks built on them are in [`crate::marks`]
//! (docs/adr/0010-exactly-once-at-batch-cost.md).

use crate::KinesisEventRecord;
use riffle_codec::Envelope;

use crate::batch::shard_id;

/// Decimal digits of the sequence number in an encoded position. Kinesis sequence numbers
/// have 56 digits today; 64 leaves room and fits two 32-digit halves in `u128`s.
pub const SEQUENCE_DIGITS: usize = 64;
/// Largest sub-record index an encoded position holds (5 digits). Aggregates between stages
/// are at most about 1 MiB (ADR 0010), and a user record takes well over ten bytes in one
/// (its envelope alone is more), so its index stays below this.
pub const MAX_SUB_INDEX: u32 = 99_999;
/// Half of [`SEQUENCE_DIGITS`]: 10^32 < 2^107, so each half fits a `u128`.
const HALF_DIGITS: usize = SEQUENCE_DIGITS / 2;
/// 10^16: a quarter of the digits, which fits a `u64`.
const TEN_POW_QUARTER: u128 = 10u128.pow(HALF_DIGITS as u32 / 2);
/// Length of an encoded position: the digits, `:` and the 5-digit sub index.
const ENCODED_LEN: usize = SEQUENCE_DIGITS + 6;

/// Where a user record sits on its shard: the Kinesis sequence number of the record that
/// carried it and its index among the user records of that record (0 for a plain record).
///
/// Ordered as the stream is; [`Position::encode`] gives a fixed-width string that sorts the
/// same way (`<64-digit sequence>:<5-digit sub index>`). Copy and allocation-free, because
/// the aggregator keeps one per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sequence number divided by 10^32.
    hi: u128,
    /// Sequence number modulo 10^32.
    lo: u128,
    sub: u32,
}

impl Position {
    /// The position of sub-record `sub` of the record with `sequence_number`; `None` if the
    /// number is not decimal digits, has more than [`SEQUENCE_DIGITS`] significant digits,
    /// or `sub` exceeds [`MAX_SUB_INDEX`].
    pub fn new(sequence_number: &str, sub: u32) -> Option<Position> {
        let digits = sequence_number.as_bytes();
        if digits.is_empty() || sub > MAX_SUB_INDEX || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let significant = sequence_number.trim_start_matches('0');
        if significant.len() > SEQUENCE_DIGITS {
            return None;
        }
        let split = significant.len().saturating_sub(HALF_DIGITS);
        let (hi, lo) = significant.split_at(split);
        Some(Position {
            hi: parse_digits(hi)?,
            lo: parse_digits(lo)?,
            sub,
        })
    }

    /// The fixed-width text form: equal widths make string order the stream's order.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(ENCODED_LEN);
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Position::encode`]'s form to `out`. Formatting a `u128` divides by ten in
    /// 128 bits per digit; as four 16-digit `u64` quarters it costs a tenth (the aggregator
    /// encodes one position per record).
    pub fn encode_into(&self, out: &mut String) {
        use std::fmt::Write;
        let quarter = |half: u128| {
            (
                u64::try_from(half / TEN_POW_QUARTER).unwrap_or(u64::MAX),
                u64::try_from(half % TEN_POW_QUARTER).unwrap_or(u64::MAX),
            )
        };
        let (a, b) = quarter(self.hi);
        let (c, d) = quarter(self.lo);
        // Writing to a String cannot fail.
        let _ = write!(out, "{a:016}{b:016}{c:016}{d:016}:{:05}", self.sub);
    }

    /// Reads [`Position::encode`]'s form back.
    pub fn decode(text: &str) -> Option<Position> {
        let (seq, sub) = text.split_once(':')?;
        if seq.len() != SEQUENCE_DIGITS || sub.len() != 5 {
            return None;
        }
        Position::new(seq, parse_digits(sub)?.try_into().ok()?)
    }

    /// The sub-record index.
    pub fn sub(&self) -> u32 {
        self.sub
    }

    /// The sequence number in decimal, without leading zeros.
    pub fn sequence(&self) -> String {
        let mut text = String::with_capacity(ENCODED_LEN);
        self.encode_into(&mut text);
        text.truncate(SEQUENCE_DIGITS);
        let significant = text.trim_start_matches('0');
        if significant.is_empty() {
            "0".to_owned()
        } else {
            significant.to_owned()
        }
    }
}

fn parse_digits(digits: &str) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > HALF_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Two u64 parses instead of 128-bit arithmetic per digit.
    let (hi, lo) = digits.split_at(digits.len().saturating_sub(HALF_DIGITS / 2));
    let hi: u64 = if hi.is_empty() { 0 } else { hi.parse().ok()? };
    let lo: u64 = lo.parse().ok()?;
    Some(u128::from(hi) * TEN_POW_QUARTER + u128::from(lo))
}

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
pub fn origin_of(envelope: &Envelope, position: Position) -> (&str, Position) {
    envelope
        .origin
        .as_ref()
        .and_then(|o| {
            let sub = u32::try_from(o.sub).ok()?;
            Some((o.id.as_str(), Position::new(&o.seq, sub)?))
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
pub fn redriven_elsewhere(envelope: &Envelope, stage: &str) -> bool {
    envelope.origin.as_ref().is_some_and(|o| {
        o.id.strip_prefix(REDRIVE_ORIGIN_PREFIX)
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

    #[test]
    fn positions_order_like_the_stream_and_encode_at_a_fixed_width() {
        let seqs = [
            "0",
            "7",
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588899",
            "149590338271490256608559692538361571095921575989136588898",
            "9999999999999999999999999999999999999999999999999999999999999999",
        ];
        let mut positions = Vec::new();
        for seq in seqs {
            for sub in [0, 1, 12, MAX_SUB_INDEX] {
                positions.push(Position::new(seq, sub).unwrap());
            }
        }
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(sorted, positions, "numeric order, then sub index");
        let encoded: Vec<String> = positions.iter().map(Position::encode).collect();
        assert!(encoded.iter().all(|e| e.len() == ENCODED_LEN));
        assert_eq!(
            encoded[8],
            "0000000049590338271490256608559692538361571095921575989136588898:00000"
        );
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "text order agrees");
        for (p, e) in positions.iter().zip(&encoded) {
            assert_eq!(Position::decode(e), Some(*p));
        }
        assert_eq!(
            Position::new("0049", 3).unwrap(),
            Position::new("49", 3).unwrap()
        );
        assert_eq!(
            Position::new("49", 3).unwrap().encode(),
            format!("{}49:00003", "0".repeat(62))
        );
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
    fn foreign_sequence_numbers_have_no_position() {
        for bad in ["", "12a", "-1", " 1", &"1".repeat(65)] {
            assert_eq!(Position::new(bad, 0), None, "{bad:?}");
        }
        assert_eq!(Position::new("1", MAX_SUB_INDEX + 1), None);
        for bad in ["", "1:00000", &format!("{}:0", "0".repeat(64)), "x:y"] {
            assert_eq!(Position::decode(bad), None, "{bad:?}");
        }
    }

    fn record(shard: &str, seq: &str) -> KinesisEventRecord {
        let mut r = KinesisEventRecord::default();
        r.kinesis.sequence_number = seq.into();
        r.source = crate::Source::of_shard(shard);
        r
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
