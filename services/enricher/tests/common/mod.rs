//! What the enricher's tests and its benchmark share: the registered schemas served from a
//! map and `Vec`-collecting output and dead-letter ports (`riffle_stage::testing`), the load
//! generator's reference catalogue as an in-process reference source, and Lambda Kinesis
//! events built from the generator's records.
//!
//! These are in-process implementations of the stages' own ports, not stand-ins for AWS:
//! `DynamoReference` is tested against the emulator in `tests/dynamo_reference.rs`.

// Each test binary (and the benchmark) uses a different part of this module.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use riffle_aws::AwsError;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_enricher::Enricher;
use riffle_enricher::reference::{Attributes, ReferenceCache, ReferenceSource};
use riffle_loadtest::{GeneratedEvent, Generator, GeneratorConfig, SchemaIds, reference_items};
pub use riffle_stage::testing::{MapSource, Sink, reject_messages};
use riffle_stage::{KinesisEvent, KinesisEventResponse, OutRecord, SqsMessage};

pub const ORDER_SCHEMA: &str = include_str!("../../../../schemas/events/order_placed.avsc");
pub const PAGE_VIEW_SCHEMA: &str = include_str!("../../../../schemas/events/page_view.avsc");
pub const SENSOR_SCHEMA: &str = include_str!("../../../../schemas/events/sensor_reading.avsc");

/// The registry ids the map source serves the schemas under.
pub const IDS: SchemaIds = SchemaIds {
    envelope: 1,
    order: 2,
    page_view: 3,
    sensor: 4,
};

pub const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/riffle-validated";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/riffle-enricher";
pub const SHARD: &str = "shardId-000000000000";
/// Long enough that nothing expires during a test.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// The envelope and the three event schemas under [`IDS`], as the registry serves them.
pub fn registered() -> MapSource {
    MapSource::with(
        [
            (IDS.envelope, ENVELOPE_SCHEMA),
            (IDS.order, ORDER_SCHEMA),
            (IDS.page_view, PAGE_VIEW_SCHEMA),
            (IDS.sensor, SENSOR_SCHEMA),
        ],
        [],
    )
}

/// A Kinesis sequence number as long as real ones, increasing with `i`.
pub fn sequence_number(i: usize) -> String {
    format!("4959033827149025660855969253836157109592157598913{i:07}")
}

/// The Lambda event the event source mapping would deliver for `events`, in order.
pub fn kinesis_event(events: &[GeneratedEvent]) -> KinesisEvent {
    kinesis_event_on(events, SHARD)
}

/// [`kinesis_event`] from another shard (a batch whose sequence numbers start over).
pub fn kinesis_event_on(events: &[GeneratedEvent], shard: &str) -> KinesisEvent {
    let source = std::sync::Arc::new(riffle_runtime::Source {
        aws_region: "us-east-1".into(),
        event_source_arn: STREAM_ARN.into(),
        invoke_identity_arn: ROLE_ARN.into(),
        shard_id: shard.into(),
    });
    let records = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let arrival = chrono::DateTime::from_timestamp_millis(e.ingest_time + 20).unwrap();
            source.event_record(
                e.record.clone(),
                &e.partition_key,
                &sequence_number(i),
                arrival,
            )
        })
        .collect();
    KinesisEvent { records }
}

/// Sequence numbers of a response's batch item failures, in order.
pub fn failed(response: &KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect()
}

/// The generator's reference catalogue, answering as the reference table would; counts what
/// it is asked and can be made to fail as an outage.
#[derive(Clone)]
pub struct Catalogue {
    inner: Arc<CatalogueInner>,
}

struct CatalogueInner {
    items: HashMap<String, Attributes>,
    down: AtomicBool,
    calls: AtomicUsize,
    keys_asked: AtomicUsize,
}

impl Catalogue {
    pub fn new() -> Self {
        let items = reference_items()
            .into_iter()
            .map(|item| (item.pk, Arc::new(item.attributes.into_iter().collect())))
            .collect();
        Catalogue {
            inner: Arc::new(CatalogueInner {
                items,
                down: AtomicBool::new(false),
                calls: AtomicUsize::new(0),
                keys_asked: AtomicUsize::new(0),
            }),
        }
    }

    /// The attributes of `key`, if the catalogue has it.
    pub fn get(&self, key: &str) -> Option<&HashMap<String, String>> {
        self.inner.items.get(key).map(|a| a.as_ref())
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// (fetch calls, keys asked for in total).
    pub fn asked(&self) -> (usize, usize) {
        (
            self.inner.calls.load(Ordering::SeqCst),
            self.inner.keys_asked.load(Ordering::SeqCst),
        )
    }
}

impl ReferenceSource for Catalogue {
    async fn fetch(&self, keys: Vec<String>) -> Result<HashMap<String, Attributes>, AwsError> {
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        self.inner
            .keys_asked
            .fetch_add(keys.len(), Ordering::SeqCst);
        if self.inner.down.load(Ordering::SeqCst) {
            return Err(AwsError::Call {
                operation: "BatchGetItem",
                code: "ServiceUnavailable".into(),
                message: "down (test)".into(),
                retryable: true,
            });
        }
        Ok(keys
            .into_iter()
            .filter_map(|k| self.inner.items.get(&k).map(|a| (k, a.clone())))
            .collect())
    }
}

pub use riffle_stage::marks::MemoryMarks;

pub type TestEnricher = Enricher<
    MapSource,
    Catalogue,
    Sink<OutRecord>,
    Sink<SqsMessage>,
    riffle_stage::marks::MemoryMarks,
>;

/// An enricher writing envelope version [`IDS`]`.envelope`, with the bundled contracts (served with the schemas, as registered).
pub fn enricher(
    source: MapSource,
    catalogue: Catalogue,
    output: Sink<OutRecord>,
    dlq: Sink<SqsMessage>,
) -> TestEnricher {
    enricher_with_marks(source, catalogue, output, dlq, MemoryMarks::default())
}

/// [`enricher`] keeping its origin marks in `marks` (benches clear them between runs).
pub fn enricher_with_marks(
    source: MapSource,
    catalogue: Catalogue,
    output: Sink<OutRecord>,
    dlq: Sink<SqsMessage>,
    marks: MemoryMarks,
) -> TestEnricher {
    Enricher::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(source),
        ReferenceCache::new(catalogue, CACHE_TTL),
        output,
        dlq,
        riffle_stage::marks::Marks::new(marks, riffle_stage::marks::DEFAULT_MARK_WINDOW),
    )
}

/// `n` generated events: 2% invalid, and `missing_reference` of the joining events naming a
/// product or device the catalogue lacks.
pub fn generate(seed: u64, n: usize, missing_reference: f64) -> Vec<GeneratedEvent> {
    let config = GeneratorConfig {
        seed,
        missing_reference_ratio: missing_reference,
        ..GeneratorConfig::default()
    };
    Generator::new(config, IDS).unwrap().batch(n).unwrap()
}
