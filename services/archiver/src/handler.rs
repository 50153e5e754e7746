//! The archiver's batch handler: decode, render payloads, group by partition, one Parquet
//! object per group.
//!
//! Retries: every object key is made of the shard and the first and last sequence numbers
//! of its records, so a batch retried as it was overwrites its own objects. A retry that
//! cuts the shard differently (bisection on error, or a batch that grew while waiting)
//! names its objects differently, and the events it shares with the first attempt are
//! then in two objects; readers that need exactly one copy deduplicate by `event_id`
//! (the (shard, sequence) idempotence that the view gets later would fix it here too).
//! Nothing is ever reported as a batch item failure: a record no retry can fix is parked
//! (see `riffle_stage::dead_letter`), and any failure to write affects the whole batch, so
//! it fails the batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use riffle_codec::datum::to_json;
use riffle_codec::source::SchemaSource;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_runtime::{HandlerError, KinesisHandler};
use riffle_stage::batch::shard_id;
use riffle_stage::dead_letter::{park, park_message};
use riffle_stage::decode::{DecodedBatch, decode_batch};
use riffle_stage::schemas::{BatchSchemas, payload_schema, resolve_schemas_of, take_outage};
use riffle_stage::{RejectMessage, Rejects};
use riffle_telemetry::Metrics;
use tokio::task::JoinSet;

use crate::ArchiverError;
use crate::key::{Partition, cmp_sequence, object_key};
use crate::store::ObjectStore;
use crate::table::{ArchivedRow, attributes_json, write_rows};

/// The `Service` dimension of the archiver's metrics.
pub const SERVICE: &str = "archiver";
/// Objects written at the same time.
pub const MAX_CONCURRENT_PUTS: usize = 8;
/// `stage_times` key of the validator's emit time.
pub const VALIDATOR_STAGE: &str = "validator";
/// `stage_times` key of the enricher's emit time.
pub const ENRICHER_STAGE: &str = "enricher";

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Records sent to the dead-letter queue.
    pub parked: usize,
    /// Rows archived.
    pub rows: usize,
    /// Keys of the objects written, sorted.
    pub objects: Vec<String>,
    /// Bytes written.
    pub bytes: usize,
}

/// The archiver: writes every `enriched` event to the S3 archive.
pub struct Archiver<S, O, D> {
    codec: EnvelopeCodec,
    schemas: SchemaCache<S>,
    store: Arc<O>,
    dead_letters: D,
    prefix: String,
}

impl<S, O, D> std::fmt::Debug for Archiver<S, O, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("envelope_id", &self.codec.id())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

type Groups = BTreeMap<(Partition, String), Vec<ArchivedRow>>;

impl<S: SchemaSource, O: ObjectStore, D: Rejects> Archiver<S, O, D> {
    /// An archiver reading envelopes with `codec`, payload (and other envelope) schemas from
    /// `schemas`, writing objects under `prefix`.
    pub fn new(
        codec: EnvelopeCodec,
        schemas: SchemaCache<S>,
        store: O,
        dead_letters: D,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            codec,
            schemas,
            store: Arc::new(store),
            dead_letters,
            prefix: prefix.into(),
        }
    }

    /// Handles one Lambda batch: `Ok` with no item failures once every record is archived
    /// or parked; `Err` (the whole batch is retried) when the bucket, the registry or the
    /// queue failed.
    ///
    /// # Errors
    /// See [`ArchiverError::retryable`].
    pub async fn handle_batch(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, ArchiverError> {
        let started = Instant::now();
        let mut metrics = Metrics::new(SERVICE);
        let result = self
            .process(&event, chrono::Utc::now().timestamp_millis())
            .await;
        match &result {
            Ok(report) => {
                metrics.count("RecordsIn", report.records as u64);
                metrics.count("RecordsParked", report.parked as u64);
                metrics.count("RowsArchived", report.rows as u64);
                metrics.count("ObjectsWritten", report.objects.len() as u64);
                metrics.count("BytesWritten", report.bytes as u64);
            }
            Err(e) => {
                tracing::error!(error = %e, retryable = e.retryable(), records = event.records.len(), "batch failed");
                metrics.count("BatchesFailed", 1);
            }
        }
        metrics.millis("BatchMs", started.elapsed().as_secs_f64() * 1000.0);
        metrics.flush();
        result.map(|_| KinesisEventResponse::default())
    }

    /// [`Archiver::handle_batch`] at a given time (`archived_at`), reporting what it did.
    ///
    /// # Errors
    /// As [`Archiver::handle_batch`].
    pub async fn process(
        &self,
        event: &KinesisEvent,
        now_ms: i64,
    ) -> Result<BatchReport, ArchiverError> {
        let DecodedBatch {
            records,
            mut parked,
        } = decode_batch(SERVICE, &self.codec, &self.schemas, &event.records).await?;
        // The writer schema of every distinct payload schema id, fetched once; an id the
        // registry does not know parks its records, an outage fails the batch.
        let envelopes: Vec<&Envelope> = records.iter().map(|d| &d.envelope).collect();
        let mut schemas = resolve_schemas_of(&self.schemas, envelopes).await;
        if let Some(e) = take_outage(&mut schemas) {
            return Err(ArchiverError::Registry(e));
        }

        let mut groups = Groups::new();
        let mut rows = 0;
        for decoded in records {
            let Some(record) = event.records.get(decoded.index) else {
                continue;
            };
            match archived_row(record, decoded.envelope, &schemas, now_ms) {
                Ok((partition, row)) => {
                    rows += 1;
                    groups
                        .entry((partition, row.kinesis_shard_id.clone()))
                        .or_default()
                        .push(row);
                }
                Err(message) => parked.push(*message),
            }
        }

        // Parked first, so that a queue failure fails the batch before anything is written.
        let not_parked = park(&self.dead_letters, &parked).await?;
        if not_parked > 0 {
            return Err(ArchiverError::NotParked { count: not_parked });
        }

        let mut report = BatchReport {
            records: event.records.len(),
            parked: parked.len(),
            rows,
            ..BatchReport::default()
        };
        let mut tasks = JoinSet::new();
        for ((partition, shard), group) in groups {
            let (Some(first), Some(last)) = (
                group
                    .iter()
                    .map(|r| r.kinesis_sequence_number.as_str())
                    .min_by(|a, b| cmp_sequence(a, b)),
                group
                    .iter()
                    .map(|r| r.kinesis_sequence_number.as_str())
                    .max_by(|a, b| cmp_sequence(a, b)),
            ) else {
                continue;
            };
            let key = object_key(&self.prefix, &partition, &shard, first, last);
            let body = write_rows(&group)?;
            report.bytes += body.len();
            report.objects.push(key.clone());
            if tasks.len() >= MAX_CONCURRENT_PUTS {
                joined(tasks.join_next().await)?;
            }
            let store = Arc::clone(&self.store);
            tasks.spawn(async move { store.put(&key, body).await });
        }
        while let Some(done) = tasks.join_next().await {
            joined(Some(done))?;
        }
        report.objects.sort();
        Ok(report)
    }
}

impl<S, O, D> KinesisHandler for Archiver<S, O, D>
where
    S: SchemaSource + 'static,
    O: ObjectStore,
    D: Rejects + 'static,
{
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        self.handle_batch(event).await.map_err(Into::into)
    }
}

fn joined(
    done: Option<Result<Result<(), ArchiverError>, tokio::task::JoinError>>,
) -> Result<(), ArchiverError> {
    match done {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(ArchiverError::Task(e.to_string())),
    }
}

/// The archive row of one record with its partition, or the message that parks it.
fn archived_row(
    record: &KinesisEventRecord,
    envelope: Envelope,
    schemas: &BatchSchemas,
    now_ms: i64,
) -> Result<(Partition, ArchivedRow), Box<RejectMessage>> {
    let park = |envelope: &Envelope, code: &str, detail: String| {
        Box::new(park_message(SERVICE, record, code, detail).with_envelope(envelope))
    };
    let schema = match payload_schema(schemas, &envelope) {
        Ok(schema) => schema,
        Err((code, detail)) => return Err(park(&envelope, code, detail)),
    };
    let mut payload_json = String::with_capacity(envelope.payload.len() * 2);
    if let Err(e) = to_json(schema, &envelope.payload, &mut payload_json) {
        return Err(park(&envelope, e.code(), e.to_string()));
    }
    let Some(partition) = Partition::of(&envelope.subject, envelope.event_time) else {
        let detail = format!("event_time {} is not a date", envelope.event_time);
        return Err(park(&envelope, "event_time_out_of_range", detail));
    };
    let Some(enrichment) = envelope.enrichment else {
        // decode_batch parks these already; kept total rather than trusting that.
        return Err(park(&envelope, "no_enrichment", "no enrichment".into()));
    };
    let row = ArchivedRow {
        validated_at: envelope.stage_times.get(VALIDATOR_STAGE).copied(),
        enriched_at: envelope.stage_times.get(ENRICHER_STAGE).copied(),
        event_id: envelope.event_id,
        source: envelope.source,
        subject: envelope.subject,
        schema_id: envelope.schema_id,
        event_time: envelope.event_time,
        ingest_time: envelope.ingest_time,
        archived_at: now_ms,
        trace_header: envelope.trace_header,
        attributes_json: attributes_json(&enrichment.attributes),
        agg_key: enrichment.agg_key,
        metric: enrichment.metric,
        window_start: enrichment.window_start,
        reference_found: enrichment.reference_found,
        payload_json,
        payload: envelope.payload,
        kinesis_partition_key: record.kinesis.partition_key.clone(),
        kinesis_sequence_number: record.kinesis.sequence_number.clone(),
        kinesis_shard_id: shard_id(record).to_owned(),
    };
    Ok((partition, row))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use apache_avro::Schema;
    use apache_avro::types::Value;
    use std::collections::HashMap;

    use riffle_aws::AwsError;
    use riffle_stage::SqsMessage;
    use riffle_stage::testing::{
        MapSource, Sink, enriched_envelope as envelope, kinesis_event as event, reject_messages,
    };

    use super::*;
    use crate::table::read_rows;

    const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");
    const ORDER_ID: i32 = 3;

    pub(crate) fn order_payload(quantity: i32) -> Vec<u8> {
        let schema = Schema::parse_str(ORDER).unwrap();
        let value = Value::Record(vec![
            ("order_id".into(), Value::String("ord-0123456789ab".into())),
            ("customer_id".into(), Value::String("cus-000001".into())),
            ("product_id".into(), Value::String("sku-0001".into())),
            ("quantity".into(), Value::Int(quantity)),
            ("unit_price".into(), Value::Double(9.5)),
            ("currency".into(), Value::Enum(1, "USD".into())),
            ("coupon".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "placed_at".into(),
                Value::TimestampMillis(1_764_000_000_000),
            ),
            ("attributes".into(), Value::Map(HashMap::new())),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    #[derive(Default)]
    struct MemoryBucket {
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
        down: bool,
    }

    impl ObjectStore for MemoryBucket {
        async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), ArchiverError> {
            if self.down {
                return Err(ArchiverError::Store(AwsError::Call {
                    operation: "PutObject",
                    code: "SlowDown".into(),
                    message: String::new(),
                    retryable: true,
                }));
            }
            self.objects.lock().unwrap().insert(key.to_owned(), body);
            Ok(())
        }
    }

    fn archiver(
        bucket: MemoryBucket,
        registry_down: bool,
    ) -> Archiver<MapSource, MemoryBucket, Sink<SqsMessage>> {
        let source = MapSource::with([(ORDER_ID as u32, ORDER)], []);
        source.set_down(registry_down);
        Archiver::new(
            EnvelopeCodec::new(7).unwrap(),
            SchemaCache::new(source),
            bucket,
            Sink::new(),
            "events",
        )
    }

    /// An order event at `event_time` with quantity `q`.
    fn order(event_time: i64, q: i32) -> Envelope {
        let mut e = envelope(
            "orders:category=books",
            f64::from(q) * 9.5,
            event_time - event_time % 60_000,
        );
        e.event_id = format!("ev-{event_time}-{q}");
        e.event_time = event_time;
        e.schema_id = ORDER_ID;
        e.payload = order_payload(q);
        e.stage_times = HashMap::from([
            ("validator".to_owned(), event_time + 5),
            ("enricher".to_owned(), event_time + 9),
        ]);
        e.enrichment.as_mut().unwrap().attributes =
            HashMap::from([("category".to_owned(), "books".to_owned())]);
        e
    }

    // 2025-11-24T16:00:00Z and an hour later.
    const H16: i64 = 1_764_000_000_000;
    const H17: i64 = H16 + 3_600_000;

    #[tokio::test]
    async fn groups_land_under_their_partitions() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut page = order(H16 + 1, 1);
        page.subject = "com.riffle.web.PageView".into();
        let ev = event(&[
            codec.encode(&order(H16 + 10, 1)).unwrap(),
            codec.encode(&order(H17 + 10, 2)).unwrap(),
            codec.encode(&order(H16 + 20, 3)).unwrap(),
            codec.encode(&page).unwrap(),
        ]);
        let report = arch.process(&ev, 42).await.unwrap();
        assert_eq!(report.rows, 4);
        assert_eq!(
            report.objects,
            vec![
                "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/shardId-000000000000-49590000-49590002.parquet",
                "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=17/shardId-000000000000-49590001-49590001.parquet",
                "events/subject=com.riffle.web.PageView/dt=2025-11-24/hour=16/shardId-000000000000-49590003-49590003.parquet",
            ]
        );
        let objects = arch.store.objects.lock().unwrap();
        let rows = read_rows(&objects[&report.objects[0]]).unwrap();
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(first.event_time, H16 + 10);
        assert_eq!(first.validated_at, Some(H16 + 15));
        assert_eq!(first.enriched_at, Some(H16 + 19));
        assert_eq!(first.archived_at, 42);
        assert_eq!(first.kinesis_sequence_number, "49590000");
        assert_eq!(first.kinesis_partition_key, "pk-0");
        assert_eq!(first.kinesis_shard_id, "shardId-000000000000");
        assert_eq!(first.attributes_json, r#"{"category":"books"}"#);
        assert_eq!(first.payload, order_payload(1));
        let payload: serde_json::Value = serde_json::from_str(&first.payload_json).unwrap();
        assert_eq!(payload["quantity"], 1);
        assert_eq!(payload["currency"], "USD");
        assert_eq!(rows[1].kinesis_sequence_number, "49590002");
        // One registry fetch for the one payload schema id of the batch.
        assert_eq!(arch.schemas.source().fetched(), vec![ORDER_ID as u32]);
    }

    #[tokio::test]
    async fn the_same_batch_writes_the_same_keys() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[
            codec.encode(&order(H16, 1)).unwrap(),
            codec.encode(&order(H17, 1)).unwrap(),
        ]);
        let first = arch.process(&ev, 1).await.unwrap();
        let second = arch.process(&ev, 2).await.unwrap();
        assert_eq!(first.objects, second.objects);
        assert_eq!(arch.store.objects.lock().unwrap().len(), 2);
    }

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
        let ev = event(&[
            codec.encode(&order(H16, 4)).unwrap(),
            codec.encode(&unknown).unwrap(),
            codec.encode(&malformed).unwrap(),
            codec.encode(&timeless).unwrap(),
            vec![0, 0, 0],
        ]);
        let report = arch.process(&ev, 1).await.unwrap();
        assert_eq!((report.rows, report.parked), (1, 4));
        let parked = reject_messages(&arch.dead_letters.take());
        let codes: Vec<String> = parked.iter().map(|m| m.code.clone()).collect();
        assert_eq!(
            codes,
            vec![
                "truncated",
                "unknown_schema",
                "malformed",
                "event_time_out_of_range"
            ]
        );
        assert_eq!(
            parked[1].event_id.as_deref(),
            Some(unknown.event_id.as_str())
        );
    }

    #[tokio::test]
    async fn outages_fail_the_batch_retryably() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[codec.encode(&order(H16, 1)).unwrap()]);

        let arch = archiver(MemoryBucket::default(), true);
        let err = arch.handle_batch(ev.clone()).await.unwrap_err();
        assert!(matches!(err, ArchiverError::Registry(_)));
        assert!(err.retryable());

        let arch = archiver(
            MemoryBucket {
                down: true,
                ..MemoryBucket::default()
            },
            false,
        );
        let err = arch.handle_batch(ev).await.unwrap_err();
        assert!(matches!(err, ArchiverError::Store(_)));
        assert!(err.retryable());
    }
}
