//! What the validator's tests and its benchmark share: the registered schemas served from a
//! map, `Vec`-collecting output and rejects ports, Lambda Kinesis events built from the load
//! generator's records, and the check of every record's outcome against the generator's
//! independent ground truth.
//!
//! The ports here are in-process implementations of the stage's own traits, not stand-ins for
//! AWS: the AWS implementations are tested against the emulators in their own crate.

// Each test binary (and the benchmark) uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::kinesis::KinesisEncryptionType;
use riffle_aws::AwsError;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::source::{SchemaSource, SourceError};
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_loadtest::{Expected, GeneratedEvent, Generator, GeneratorConfig, SchemaIds};
use riffle_stage::{
    KinesisEvent, KinesisEventResponse, OutRecord, Output, OutputError, RejectMessage, Rejects,
    SqsMessage,
};
use riffle_validator::Validator;

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

pub const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/riffle-raw";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/riffle-validator";
pub const SHARD: &str = "shardId-000000000000";

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

pub type TestValidator = Validator<MapSource, Sink<OutRecord>, Sink<SqsMessage>>;

/// A validator writing envelope version [`IDS`]`.envelope`, with the bundled contracts.
pub fn validator(
    source: MapSource,
    output: Sink<OutRecord>,
    rejects: Sink<SqsMessage>,
) -> TestValidator {
    Validator::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(source),
        riffle_codec::rules::bundled().unwrap(),
        output,
        rejects,
    )
}

/// `n` generated events with the default mix (2% invalid, every invalid kind).
pub fn generate(seed: u64, n: usize) -> Vec<GeneratedEvent> {
    let config = GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    };
    Generator::new(config, IDS).unwrap().batch(n).unwrap()
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

/// Asserts that every event of `events` (delivered as `kinesis_event(events)`) was either
/// published or rejected exactly as the generator says, with nothing retried.
///
/// `codec` reads what was published; `handled` is the wall-clock span of the handler call.
pub fn assert_outcomes(
    events: &[GeneratedEvent],
    codec: &EnvelopeCodec,
    published: &[OutRecord],
    rejected: &[RejectMessage],
    handled: (i64, i64),
) {
    let valid: Vec<&GeneratedEvent> = events
        .iter()
        .filter(|e| matches!(e.expected, Expected::Valid { .. }))
        .collect();
    assert_eq!(published.len(), valid.len(), "published count");
    // Same order as received: the validated stream keeps the order per partition key.
    for (out, event) in published.iter().zip(&valid) {
        let envelope = codec.decode(&out.data).unwrap();
        assert_eq!(envelope.event_id, event.event_id);
        assert_eq!(out.partition_key, event.partition_key, "{}", event.event_id);
        let stamped = envelope.stage_times.get(riffle_validator::STAGE).copied();
        assert!(
            stamped.is_some_and(|t| (handled.0..=handled.1).contains(&t)),
            "validator stage time {stamped:?} outside {handled:?}"
        );
        let mut original = codec.decode(&event.record).unwrap();
        original
            .stage_times
            .insert(riffle_validator::STAGE.to_string(), stamped.unwrap());
        assert_eq!(envelope, original, "only the stage time is added");
    }

    let by_seq: HashMap<&str, &RejectMessage> = rejected
        .iter()
        .map(|m| (m.sequence_number.as_str(), m))
        .collect();
    assert_eq!(by_seq.len(), rejected.len(), "one reject per record");
    let mut invalid = 0;
    for (i, event) in events.iter().enumerate() {
        let Expected::Rejected {
            code,
            envelope_readable,
        } = event.expected
        else {
            continue;
        };
        invalid += 1;
        let seq = sequence_number(i);
        let msg = by_seq
            .get(seq.as_str())
            .unwrap_or_else(|| panic!("{code} event {i} not rejected"));
        assert_eq!(msg.code, code, "event {i}: {}", msg.detail);
        assert_eq!(msg.stage, riffle_validator::STAGE);
        assert_eq!(msg.shard_id, SHARD);
        assert_eq!(msg.partition_key, event.partition_key);
        assert_eq!(msg.data().unwrap(), event.record, "original bytes kept");
        let named = envelope_readable.then(|| event.event_id.clone());
        assert_eq!(msg.event_id, named, "event {i} ({code})");
        if envelope_readable {
            assert_eq!(msg.source.as_deref(), Some(event.source.name()));
        }
    }
    assert_eq!(rejected.len(), invalid, "rejected count");
}
