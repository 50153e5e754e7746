//! Turning a batch's decoded envelopes into archive rows: payloads rendered as JSON by their
//! writer schemas, the partition taken from the event time, the Kinesis coordinates kept so
//! that recovery can find each row again; a record that can never become a row is parked.

use riffle_codec::datum::to_json;
use riffle_codec::source::SchemaSource;
use std::borrow::Cow;
use std::sync::Arc;

use riffle_codec::{EnvelopeRef, SchemaCache};
use riffle_runtime::{KinesisEvent, KinesisEventRecord};
use riffle_stage::RejectMessage;
use riffle_stage::batch::shard_id;
use riffle_stage::dead_letter::park_message;
use riffle_stage::decode::Decoded;
use riffle_stage::dedup::{Position, origin_of, record_positions, redriven_elsewhere};
use riffle_stage::marks::Ticket;
use riffle_stage::schemas::{BatchSchemas, payload_schema, resolve_schemas_of, take_outage};

use crate::ArchiverError;
use crate::handler::SERVICE;
use riffle_archive::key::Partition;
use riffle_archive::table::{ArchivedRow, attributes_json};

/// `stage_times` key of the enricher's emit time.
pub use riffle_stage::stages::ENRICHER as ENRICHER_STAGE;
/// `stage_times` key of the validator's emit time.
pub use riffle_stage::stages::VALIDATOR as VALIDATOR_STAGE;

/// A usable record, before its origin's mark is known.
pub(crate) struct Candidate {
    /// Shared by the batch's records of the same partition (nearly all of them).
    pub(crate) partition: Arc<Partition>,
    pub(crate) row: ArchivedRow,
    pub(crate) sub: u32,
    pub(crate) origin: (String, Position),
}

/// A record admitted as new.
pub(crate) struct Fresh {
    pub(crate) partition: Arc<Partition>,
    pub(crate) row: ArchivedRow,
    pub(crate) sub: u32,
    pub(crate) ticket: Ticket,
}

/// The rows a batch may archive, and the records it leaves to another stage.
pub(crate) struct Candidates {
    /// One per usable record, in batch order.
    pub(crate) rows: Vec<Candidate>,
    /// Records redriven to another stage only: copies as far as the archive is concerned.
    pub(crate) elsewhere: usize,
}

/// The writer schema of every distinct payload schema id of `records`, fetched once for the
/// whole batch rather than per record. An id the registry does not know parks its records
/// (see [`candidates`]); an outage fails the batch, since no record could be rendered.
///
/// # Errors
/// [`ArchiverError::Registry`] when the registry could not be asked.
pub(crate) async fn payload_schemas<S: SchemaSource>(
    cache: &SchemaCache<S>,
    records: &[Decoded<'_>],
) -> Result<BatchSchemas, ArchiverError> {
    // Collected rather than mapped lazily: a closure held across the registry calls would
    // keep the handler's future from being `Send`.
    let envelopes: Vec<&EnvelopeRef<'_>> = records.iter().map(|d| &d.envelope).collect();
    let mut schemas = resolve_schemas_of(cache, envelopes).await;
    if let Some(e) = take_outage(&mut schemas) {
        return Err(ArchiverError::Registry(e));
    }
    Ok(schemas)
}

/// The archive row of every decoded record of `event` this stage should archive. A record
/// that can never become a row joins `parked` (after the ones decoding parked, so the queue
/// gets them in batch order).
pub(crate) fn candidates(
    event: &KinesisEvent,
    records: Vec<Decoded<'_>>,
    schemas: &BatchSchemas,
    now_ms: i64,
    parked: &mut Vec<RejectMessage>,
) -> Candidates {
    let positions = record_positions(&event.records);
    let mut rows = Vec::with_capacity(records.len());
    let mut elsewhere = 0;
    let mut partitions = Partitions::default();
    let mut scratch = String::with_capacity(4096);
    for decoded in records {
        let Some(record) = event.records.get(decoded.index) else {
            continue;
        };
        if redriven_elsewhere(&decoded.envelope, SERVICE) {
            elsewhere += 1;
            continue;
        }
        let Some((_, Some(position))) = positions.get(decoded.index).copied() else {
            // Without a position a redelivery could not be told from a new event; Lambda
            // never sends one, so it is parked rather than archived unguarded.
            let detail = format!(
                "sequence number {:?} is not a Kinesis one",
                record.kinesis.sequence_number
            );
            parked.push(
                park_message(SERVICE, record, "no_position", detail)
                    .with_envelope(&decoded.envelope),
            );
            continue;
        };
        let (origin, seq) = origin_of(&decoded.envelope, position);
        let origin = (origin.to_owned(), seq);
        match archived_row(
            record,
            decoded.envelope,
            schemas,
            now_ms,
            &mut partitions,
            &mut scratch,
        ) {
            Ok((partition, row)) => rows.push(Candidate {
                partition,
                row,
                sub: position.sub(),
                origin,
            }),
            Err(message) => parked.push(*message),
        }
    }
    Candidates { rows, elsewhere }
}

/// The partitions of a batch's records, made once each: a batch's events fall in a few
/// hours of a few subjects, and a partition is three strings and a date computation.
#[derive(Default)]
pub(crate) struct Partitions {
    /// (subject, hour since the epoch, partition) of the batch so far, most recent first.
    /// A list, not only the last one: subjects come interleaved in a batch, and keeping only
    /// the last made most records compute theirs anew (perf).
    made: Vec<(String, i64, Arc<Partition>)>,
}

/// Partitions a batch keeps at once; past this the oldest is forgotten (a batch of events
/// spread over more hours and subjects only computes some again).
const KEPT_PARTITIONS: usize = 32;

impl Partitions {
    /// The partition of an event of `subject` at `event_time_ms` (see [`Partition::of`]).
    fn of(&mut self, subject: &str, event_time_ms: i64) -> Option<Arc<Partition>> {
        let hour = event_time_ms.div_euclid(3_600_000);
        if let Some(i) = self
            .made
            .iter()
            .position(|(s, h, _)| *h == hour && s == subject)
        {
            if i > 0 {
                let found = self.made.remove(i);
                self.made.insert(0, found);
            }
            return self.made.first().map(|(_, _, p)| p.clone());
        }
        let partition = Arc::new(Partition::of(subject, event_time_ms)?);
        self.made.truncate(KEPT_PARTITIONS - 1);
        self.made
            .insert(0, (subject.to_owned(), hour, partition.clone()));
        Some(partition)
    }
}

/// The distinct shards of `rows`, sorted: the marks and the intents are kept per shard, and
/// a batch nearly always comes from one.
pub(crate) fn distinct_shards<'a>(rows: impl IntoIterator<Item = &'a ArchivedRow>) -> Vec<&'a str> {
    let mut shards: Vec<&str> = rows
        .into_iter()
        .map(|row| row.kinesis_shard_id.as_str())
        .collect();
    shards.sort_unstable();
    shards.dedup();
    shards
}

/// The archive row of one record with its partition, or the message that parks it.
fn archived_row(
    record: &KinesisEventRecord,
    envelope: EnvelopeRef<'_>,
    schemas: &BatchSchemas,
    now_ms: i64,
    partitions: &mut Partitions,
    scratch: &mut String,
) -> Result<(Arc<Partition>, ArchivedRow), Box<RejectMessage>> {
    let park = |envelope: &EnvelopeRef<'_>, code: &str, detail: String| {
        Box::new(park_message(SERVICE, record, code, detail).with_envelope(envelope))
    };
    let schema = match payload_schema(schemas, &envelope) {
        Ok(schema) => schema,
        Err((code, detail)) => return Err(park(&envelope, code, detail)),
    };
    // Rendered into one warm buffer and copied out at its size: written piece by piece into
    // a fresh string per row, the JSON cost twice what it costs alone (perf, the bench).
    scratch.clear();
    if let Err(e) = to_json(schema, &envelope.payload, scratch) {
        return Err(park(&envelope, e.code(), e.to_string()));
    }
    let payload_json = scratch.as_str().to_owned();
    let Some(partition) = partitions.of(&envelope.subject, envelope.event_time) else {
        let detail = format!("event_time {} is not a date", envelope.event_time);
        return Err(park(&envelope, "event_time_out_of_range", detail));
    };
    let (validated_at, enriched_at) = (
        envelope.stage_time(VALIDATOR_STAGE),
        envelope.stage_time(ENRICHER_STAGE),
    );
    let Some(enrichment) = envelope.enrichment else {
        // decode_batch parks these already; kept total rather than trusting that.
        return Err(park(&envelope, "no_enrichment", "no enrichment".into()));
    };
    let row = ArchivedRow {
        validated_at,
        enriched_at,
        event_id: envelope.event_id.into_owned(),
        source: envelope.source.into_owned(),
        subject: envelope.subject.into_owned(),
        schema_id: envelope.schema_id,
        event_time: envelope.event_time,
        ingest_time: envelope.ingest_time,
        archived_at: now_ms,
        trace_header: envelope.trace_header.map(Cow::into_owned),
        attributes_json: attributes_json(enrichment.attributes.iter().map(|(k, v)| (k, v))),
        agg_key: enrichment.agg_key.into_owned(),
        metric: enrichment.metric,
        window_start: enrichment.window_start,
        reference_found: enrichment.reference_found,
        payload_json,
        payload: envelope.payload.into_owned(),
        kinesis_partition_key: record.kinesis.partition_key.clone(),
        kinesis_sequence_number: record.kinesis.sequence_number.clone(),
        kinesis_shard_id: shard_id(record).to_owned(),
        late: enrichment.late,
    };
    Ok((partition, row))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use riffle_codec::EnvelopeCodec;
    use riffle_stage::testing::{kinesis_event as event, reject_messages};

    use crate::fixtures::{H16, archiver, order};
    use riffle_archive::testing::MemoryBucket;

    #[tokio::test]
    async fn unusable_records_are_parked() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut unknown = order(H16, 1);
        unknown.schema_id = 99;
        let mut malformed = order(H16, 2);
        malformed.payload.truncate(3);
        let mut timeless = order(H16, 3);
        timeless.event_time = i64::MAX;
        let mut ev = event(&[
            codec.encode(&order(H16, 4)).unwrap(),
            codec.encode(&unknown).unwrap(),
            codec.encode(&malformed).unwrap(),
            codec.encode(&timeless).unwrap(),
            vec![0, 0, 0],
            codec.encode(&order(H16, 5)).unwrap(),
        ]);
        ev.records[5].kinesis.sequence_number = "not-a-number".into();
        let report = arch.process(&ev, 1).await.unwrap();
        assert_eq!((report.rows, report.parked), (1, 5));
        let parked = reject_messages(&arch.dead_letters.take());
        let codes: Vec<String> = parked.iter().map(|m| m.code.clone()).collect();
        assert_eq!(
            codes,
            vec![
                "truncated",
                "unknown_schema",
                "malformed",
                "event_time_out_of_range",
                "no_position",
            ]
        );
        assert_eq!(
            parked[1].event_id.as_deref(),
            Some(unknown.event_id.as_str())
        );
    }
}
