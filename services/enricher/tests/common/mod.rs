//! What the enricher's tests and its benchmark share: the registered schemas served from a
//! map, the load generator's reference catalogue as an in-process reference source,
//! `Vec`-collecting output and dead-letter ports, and Lambda Kinesis events built from the
//! generator's records.
//!
//! The ports here are in-process implementations of the stage's own traits, not stand-ins for
//! AWS: `DynamoReference` is tested against the emulator in `tests/dynamo_reference.rs`.

// Each test binary (and the benchmark) uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEncryptionType;
use riffle_aws::AwsError;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::source::{SchemaSource, SourceError};
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_enricher::Enricher;
use riffle_enricher::reference::{Attributes, ReferenceCache, ReferenceSource};
use riffle_loadtest::{GeneratedEvent, Generator, GeneratorConfig, SchemaIds, reference_items};
use riffle_stage::{
    KinesisEvent, KinesisEventResponse, OutRecord, Output, OutputError, RejectMessage, Rejects,
    SqsMessage,
};

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

/// Schemas by registry id, as a registry would serve them; `down` makes every fetch fail as an
/// outage would, `unavailable` only the fetches of some ids.
#[derive(Clone)]
pub struct MapSource {
    inner: Arc<MapInner>,
}

struct MapInner {
    schemas: HashMap<u32, String>,
    unavailable: HashSet<u32>,
    down: AtomicBool,
    fetches: AtomicUsize,
}

impl MapSource {
    /// The envelope and the three event schemas under [`IDS`].
    pub fn registered() -> Self {
        Self::with(
            [
                (IDS.envelope, ENVELOPE_SCHEMA),
                (IDS.order, ORDER_SCHEMA),
                (IDS.page_view, PAGE_VIEW_SCHEMA),
                (IDS.sensor, SENSOR_SCHEMA),
            ],
            [],
        )
    }

    /// `schemas` by id; fetching an id in `unavailable` fails as a registry outage.
    pub fn with<'a>(
        schemas: impl IntoIterator<Item = (u32, &'a str)>,
        unavailable: impl IntoIterator<Item = u32>,
    ) -> Self {
        MapSource {
            inner: Arc::new(MapInner {
                schemas: schemas
                    .into_iter()
                    .map(|(id, s)| (id, s.to_string()))
                    .collect(),
                unavailable: unavailable.into_iter().collect(),
                down: AtomicBool::new(false),
                fetches: AtomicUsize::new(0),
            }),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// How often the registry was asked.
    pub fn fetches(&self) -> usize {
        self.inner.fetches.load(Ordering::SeqCst)
    }
}

impl SchemaSource for MapSource {
    async fn fetch_schema(&self, id: u32) -> Result<String, SourceError> {
        self.inner.fetches.fetch_add(1, Ordering::SeqCst);
        if self.inner.down.load(Ordering::SeqCst) || self.inner.unavailable.contains(&id) {
            return Err(SourceError::Unavailable("connection refused (test)".into()));
        }
        self.inner
            .schemas
            .get(&id)
            .cloned()
            .ok_or(SourceError::NotFound(id))
    }
}

/// Collects what a port is given. `fail` picks the indexes (within one call) reported as
/// finally failed, which are then not kept; `refuse` fails whole calls.
#[derive(Clone)]
pub struct Sink<T> {
    inner: Arc<SinkInner<T>>,
}

struct SinkInner<T> {
    items: Mutex<Vec<T>>,
    fail: fn(usize) -> bool,
    refuse: AtomicBool,
}

impl<T: Clone> Sink<T> {
    pub fn new() -> Self {
        Self::failing(|_| false)
    }

    pub fn failing(fail: fn(usize) -> bool) -> Self {
        Sink {
            inner: Arc::new(SinkInner {
                items: Mutex::new(Vec::new()),
                fail,
                refuse: AtomicBool::new(false),
            }),
        }
    }

    pub fn set_refuse(&self, refuse: bool) {
        self.inner.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Everything kept so far, and forgets it.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.inner.items.lock().unwrap())
    }

    fn accept(&self, items: Vec<T>) -> Result<Vec<usize>, OutputError> {
        if self.inner.refuse.load(Ordering::SeqCst) {
            return Err(OutputError(AwsError::Call {
                operation: "PutRecords",
                code: "ServiceUnavailable".into(),
                message: "refused (test)".into(),
                retryable: true,
            }));
        }
        let mut failed = Vec::new();
        let mut kept = self.inner.items.lock().unwrap();
        for (i, item) in items.into_iter().enumerate() {
            if (self.inner.fail)(i) {
                failed.push(i);
            } else {
                kept.push(item);
            }
        }
        Ok(failed)
    }
}

impl Output for Sink<OutRecord> {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<usize>, OutputError> {
        self.accept(records)
    }
}

impl Rejects for Sink<SqsMessage> {
    async fn reject(&self, messages: Vec<SqsMessage>) -> Result<Vec<usize>, OutputError> {
        self.accept(messages)
    }
}

/// A Kinesis sequence number as long as real ones, increasing with `i`.
pub fn sequence_number(i: usize) -> String {
    format!("4959033827149025660855969253836157109592157598913{i:07}")
}

/// The Lambda event the event source mapping would deliver for `events`, in order.
pub fn kinesis_event(events: &[GeneratedEvent]) -> KinesisEvent {
    let source = riffle_runtime::event::Source {
        aws_region: "us-east-1".into(),
        event_source_arn: STREAM_ARN.into(),
        invoke_identity_arn: ROLE_ARN.into(),
        shard_id: SHARD.into(),
    };
    let mut event = KinesisEvent::default();
    event.records = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let arrival = chrono::DateTime::from_timestamp_millis(e.ingest_time + 20).unwrap();
            source.event_record(
                e.record.clone(),
                &e.partition_key,
                &sequence_number(i),
                arrival,
                KinesisEncryptionType::None,
            )
        })
        .collect();
    event
}

/// Sequence numbers of a response's batch item failures, in order.
pub fn failed(response: &KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect()
}

/// Reject messages as the rejects queue would hold them.
pub fn reject_messages(sent: &[SqsMessage]) -> Vec<RejectMessage> {
    sent.iter()
        .map(|m| {
            let msg: RejectMessage = serde_json::from_str(&m.body).unwrap();
            assert!(
                m.attributes
                    .contains(&("code".to_string(), msg.code.clone())),
                "code attribute of {m:?}"
            );
            msg
        })
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

pub type TestEnricher = Enricher<MapSource, Catalogue, Sink<OutRecord>, Sink<SqsMessage>>;

/// An enricher writing envelope version [`IDS`]`.envelope`, with the bundled contracts.
pub fn enricher(
    source: MapSource,
    catalogue: Catalogue,
    output: Sink<OutRecord>,
    dlq: Sink<SqsMessage>,
) -> TestEnricher {
    Enricher::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(source),
        riffle_codec::rules::bundled().unwrap(),
        ReferenceCache::new(catalogue, CACHE_TTL),
        output,
        dlq,
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
