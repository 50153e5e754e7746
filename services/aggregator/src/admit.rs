//! Which records of a batch the view gets: the usable ones (a record the view can never take
//! is parked), less the copies of events already applied, which the origin marks know
//! (`riffle_stage::marks`); what is left becomes the points pre-aggregation folds.

use std::collections::{BTreeMap, HashMap};

use riffle_codec::EnvelopeHead;
use riffle_codec::rules::DEFAULT_ALLOWED_LATENESS_SECS;
use riffle_runtime::{KinesisEvent, KinesisEventRecord};
use riffle_stage::RejectMessage;
use riffle_stage::dead_letter::park_message;
use riffle_stage::decode::Decoded;
use riffle_stage::dedup::{Position, origin_of, record_positions, redriven_elsewhere};
use riffle_stage::marks::{Gate, Ticket};
use riffle_stage::stages::ENRICHER;

use crate::aggregate::Point;
use crate::handler::{BatchReport, DEFAULT_WINDOW_SECS, SERVICE};

/// A usable record of the batch, before its origin's mark is known.
pub(crate) struct Candidate<'a> {
    agg_key: &'a str,
    window_start: i64,
    metric: f64,
    window_secs: u32,
    /// The subject's allowed lateness, millis.
    lateness_ms: i64,
    /// The enricher flagged it late: its window was final (ADR 0021).
    late: bool,
    /// Its event time capped by the validator's clock, when the enricher re-published it: how
    /// far that enricher shard had come (the enricher's watermark counts it the same way).
    time: Option<i64>,
    /// Index of the record's shard in [`Usable::shards`].
    shard: u32,
    position: Position,
    ingest_time: i64,
    /// The origin id and sequence the record is deduplicated by.
    origin: (&'a str, Position),
    /// Index of the record in the decoded batch.
    decoded: usize,
}

/// The usable records of a batch.
pub(crate) struct Usable<'a> {
    /// The input shards of the records. A batch comes from one shard, so this list nearly
    /// always has one entry.
    pub(crate) shards: Vec<String>,
    /// One per usable record, in batch order.
    pub(crate) candidates: Vec<Candidate<'a>>,
    /// Records redriven to another stage only: copies as far as the view is concerned.
    pub(crate) elsewhere: usize,
}

/// The records of `records` (decoded from `event`) the view can take, with the window length
/// of their subject in `windows`. A record that can never be applied joins `parked` (after
/// the ones decoding parked, so the queue gets them in batch order).
pub(crate) fn usable<'a>(
    event: &KinesisEvent,
    records: &'a [Decoded<'_>],
    windows: &Windows<'_>,
    parked: &mut Vec<RejectMessage>,
) -> Usable<'a> {
    let positions = record_positions(&event.records);
    let mut shards: Vec<String> = Vec::new();
    let mut candidates = Vec::with_capacity(records.len());
    let mut elsewhere = 0;
    for (decoded_index, decoded) in records.iter().enumerate() {
        if redriven_elsewhere(&decoded.envelope, SERVICE) {
            elsewhere += 1;
            continue;
        }
        let Some(enrichment) = decoded.envelope.enrichment.as_ref() else {
            continue;
        };
        let Some(record) = event.records.get(decoded.index) else {
            continue;
        };
        let located = positions
            .get(decoded.index)
            .and_then(|(s, p)| Some((*s, (*p)?)));
        let (shard, position) = match locate(&decoded.envelope, enrichment.metric, record, located)
        {
            Ok(located) => located,
            Err((code, detail)) => {
                parked.push(
                    park_message(SERVICE, record, code, detail).with_envelope(&decoded.envelope),
                );
                continue;
            }
        };
        let (window_secs, lateness_ms) = windows.of(&decoded.envelope);
        let envelope = &decoded.envelope;
        let from_enricher = envelope
            .origin
            .as_ref()
            .and_then(|o| o.id.strip_prefix(ENRICHER))
            .is_some_and(|rest| rest.starts_with('/'));
        // The validator stamped when it published, before the enricher read it: at or
        // before the stream's clock the enricher caps by, so this time never runs ahead of
        // what the enricher's watermark counted.
        let time = from_enricher.then(|| {
            let clock = envelope
                .stage_time(riffle_stage::stages::VALIDATOR)
                .unwrap_or(envelope.ingest_time);
            envelope.event_time.min(clock)
        });
        candidates.push(Candidate {
            agg_key: &enrichment.agg_key,
            window_start: enrichment.window_start,
            metric: enrichment.metric,
            window_secs,
            lateness_ms,
            late: enrichment.late,
            time,
            shard: shard_index(&mut shards, shard),
            position,
            ingest_time: decoded.envelope.ingest_time,
            origin: origin_of(&decoded.envelope, position),
            decoded: decoded_index,
        });
    }
    Usable {
        shards,
        candidates,
        elsewhere,
    }
}

/// Where a record with `metric` sits on its shard (`located`, from the batch's positions),
/// or the reject code and detail that park it.
fn locate<'p>(
    envelope: &impl EnvelopeHead,
    metric: f64,
    record: &KinesisEventRecord,
    located: Option<(&'p str, Position)>,
) -> Result<(&'p str, Position), (&'static str, String)> {
    if !metric.is_finite() {
        // DynamoDB numbers have no NaN or infinity, and one would poison the sum.
        return Err((
            "non_finite_metric",
            format!("event {} has metric {}", envelope.event_id(), metric),
        ));
    }
    // Without a position the record could be applied twice; Lambda never sends one, so it
    // is parked rather than guessed at.
    located.ok_or_else(|| {
        (
            "no_position",
            format!(
                "sequence number {:?} is not a Kinesis one",
                record.kinesis.sequence_number
            ),
        )
    })
}

/// The index of `shard` in `shards`, added when it is new: records carry the index, so the
/// shard id is kept once per batch rather than once per record.
fn shard_index(shards: &mut Vec<String>, shard: &str) -> u32 {
    let index = match shards.iter().position(|s| s == shard) {
        Some(i) => i,
        None => {
            shards.push(shard.to_owned());
            shards.len() - 1
        }
    };
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// The window lengths and allowed lateness of a batch's records: by payload schema id, from
/// the contract registered with the schema (ADR 0020; versions of one subject may differ),
/// else the configured length of the subject, else the default, so a subject without one
/// still counts; the default lateness where no contract names one.
pub(crate) struct Windows<'a> {
    /// Configured lengths by subject.
    pub(crate) configured: &'a HashMap<String, u32>,
    /// Length and allowed lateness (millis) by payload schema id, from the registered
    /// contracts.
    pub(crate) by_schema: HashMap<i32, (u32, i64)>,
}

impl Windows<'_> {
    fn of(&self, envelope: &riffle_codec::EnvelopeRef<'_>) -> (u32, i64) {
        if let Some(found) = self.by_schema.get(&envelope.schema_id) {
            return *found;
        }
        let subject: &str = &envelope.subject;
        let secs = self.configured.get(subject).copied().unwrap_or_else(|| {
            tracing::warn!(subject, "no contract for subject, using the default window");
            DEFAULT_WINDOW_SECS
        });
        (secs, i64::from(DEFAULT_ALLOWED_LATENESS_SECS) * 1000)
    }
}

/// The admitted records of a batch, as pre-aggregation takes them.
pub(crate) struct Admitted<'a> {
    /// One per admitted record; `record` indexes `tickets` and `ingested`.
    pub(crate) points: Vec<Point<'a>>,
    /// The gate's ticket of each admitted record, done once its item holds it.
    pub(crate) tickets: Vec<Ticket>,
    /// Ingest time of each admitted record, for the ingest-to-view latency.
    pub(crate) ingested: Vec<i64>,
    /// Index in the decoded batch of each admitted record, for its trace span.
    pub(crate) decoded: Vec<usize>,
    /// The allowed lateness of each view the batch's records belong to, millis by view name,
    /// for the view's watermark item.
    pub(crate) lateness: BTreeMap<String, i64>,
}

/// Lets through `candidates` above their origin's mark in `gate` (of the batch's `shards`);
/// the others are copies of events the view already holds, counted in `report` as
/// duplicates.
pub(crate) fn admit<'a>(
    gate: &mut Gate,
    shards: &[String],
    candidates: Vec<Candidate<'a>>,
    report: &mut BatchReport,
) -> Admitted<'a> {
    let mut admitted = Admitted {
        points: Vec::with_capacity(candidates.len()),
        tickets: Vec::with_capacity(candidates.len()),
        ingested: Vec::with_capacity(candidates.len()),
        decoded: Vec::with_capacity(candidates.len()),
        lateness: BTreeMap::new(),
    };
    for c in candidates {
        let shard = shards.get(c.shard as usize).map_or("", String::as_str);
        let (origin, seq) = c.origin;
        let Some(ticket) = gate.admit(shard, origin, seq) else {
            report.duplicates += 1;
            continue;
        };
        if let Some(time) = c.time {
            gate.observe(ticket, time);
        }
        let view = riffle_view::view_name(c.agg_key);
        if !admitted.lateness.contains_key(view) {
            admitted.lateness.insert(view.to_owned(), c.lateness_ms);
        }
        if c.late {
            // Its window is final: the view does not change, the event is counted as late
            // (and archived with the flag). Nothing more is to land, so its mark may move.
            report.late += 1;
            gate.done(ticket);
            continue;
        }
        admitted.points.push(Point {
            agg_key: c.agg_key,
            window_start: c.window_start,
            metric: c.metric,
            window_secs: c.window_secs,
            shard: c.shard,
            position: c.position,
            record: u32::try_from(admitted.tickets.len()).unwrap_or(u32::MAX),
        });
        admitted.tickets.push(ticket);
        admitted.ingested.push(c.ingest_time);
        admitted.decoded.push(c.decoded);
    }
    admitted
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use riffle_codec::EnvelopeCodec;
    use riffle_stage::testing::{Sink, enriched_envelope as envelope, reject_messages};

    use crate::fixtures::{MemoryStore, aggregator, blobs, event, event_at, from_origin, item};

    #[tokio::test]
    async fn unusable_records_are_parked_and_the_rest_counted() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut plain = envelope("a", 1.0, 0);
        plain.enrichment = None;
        let ev = event(&[
            codec.encode(&envelope("a", 1.0, 0)).unwrap(),
            b"not avro".to_vec(),
            codec.encode(&plain).unwrap(),
            codec.encode(&envelope("a", f64::NAN, 0)).unwrap(),
        ]);
        let report = agg.process(&ev, 1).await.unwrap();
        assert_eq!(report.parked, 3);
        let reasons: Vec<_> = reject_messages(&agg.dead_letters.take())
            .iter()
            .map(|l| l.code.clone())
            .collect();
        assert_eq!(
            reasons,
            vec!["bad_magic", "no_enrichment", "non_finite_metric"]
        );
        assert_eq!(item(&agg, "a", 0).aggregate.count, 1);
    }

    #[tokio::test]
    async fn an_event_again_at_a_new_position_is_dropped() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let first = from_origin(&codec, "p/0", 1, &[("a", 1.0)]);
        let report = agg.process(&event_at(&first, 10), 1_000).await.unwrap();
        assert_eq!(report.mark_writes, 1);
        // The producer retried: the same origin sequence later on the stream, then a new one,
        // and the new one again in the same batch.
        let second = from_origin(&codec, "p/0", 2, &[("a", 2.0)]);
        let retry = [first.clone(), second.clone(), second].concat();
        let report = agg.process(&event_at(&retry, 20), 2_000).await.unwrap();
        assert_eq!((report.duplicates, report.items_written), (2, 1));
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 3.0);
        // Another channel of the same producer has marks of its own.
        let other = from_origin(&codec, "p/1", 1, &[("a", 4.0)]);
        agg.process(&event_at(&other, 30), 3_000).await.unwrap();
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 7.0);
        assert_eq!(agg.marks.store().writes(), 3);
    }

    #[tokio::test]
    async fn kpl_user_records_of_one_sequence_number_count_apart() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        // Three user records of one aggregate share its sequence number.
        let mut ev = event_at(&blobs(&codec, &[("a", 1.0), ("a", 2.0), ("a", 4.0)]), 10);
        for r in &mut ev.records {
            r.kinesis.sequence_number = "10".into();
        }
        agg.process(&ev, 1).await.unwrap();
        agg.process(&ev, 2).await.unwrap();
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 7.0);
    }

    #[tokio::test]
    async fn a_record_without_a_kinesis_position_is_parked() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut ev = event(&blobs(&codec, &[("a", 1.0), ("a", 2.0)]));
        ev.records[1].kinesis.sequence_number = "not-a-number".into();
        let report = agg.process(&ev, 1).await.unwrap();
        assert_eq!(report.parked, 1);
        let codes: Vec<_> = reject_messages(&agg.dead_letters.take())
            .iter()
            .map(|m| m.code.clone())
            .collect();
        assert_eq!(codes, vec!["no_position"]);
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 1.0);
    }
}
