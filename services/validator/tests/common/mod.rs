//! What the validator's tests and its benchmark share: the registered schemas served from a
//! map and `Vec`-collecting output and rejects ports (`riffle_stage::testing`), Lambda Kinesis
//! events built from the load generator's records, and the check of every record's outcome
//! against the generator's independent ground truth.

// Each test binary (and the benchmark) uses a different part of this module.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_loadtest::{Expected, GeneratedEvent, Generator, GeneratorConfig, SchemaIds};
pub use riffle_stage::testing::{MapSource, Sink, reject_messages};
use riffle_stage::{KinesisEvent, KinesisEventResponse, OutRecord, RejectMessage, SqsMessage};
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

pub use riffle_stage::marks::MemoryMarks;

pub type TestValidator =
    Validator<MapSource, Sink<OutRecord>, Sink<SqsMessage>, riffle_stage::marks::MemoryMarks>;

/// A validator writing envelope version [`IDS`]`.envelope`, with the bundled contracts (served with the schemas, as registered).
pub fn validator(
    source: MapSource,
    output: Sink<OutRecord>,
    rejects: Sink<SqsMessage>,
) -> TestValidator {
    validator_with_marks(source, output, rejects, MemoryMarks::default())
}

/// [`validator`] keeping its origin marks in `marks` (benches clear them between runs).
pub fn validator_with_marks(
    source: MapSource,
    output: Sink<OutRecord>,
    rejects: Sink<SqsMessage>,
    marks: MemoryMarks,
) -> TestValidator {
    Validator::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(source),
        output,
        rejects,
        riffle_stage::marks::Marks::new(marks, riffle_stage::marks::DEFAULT_MARK_WINDOW),
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
    let valid: Vec<(usize, &GeneratedEvent)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.expected, Expected::Valid { .. }))
        .collect();
    assert_eq!(published.len(), valid.len(), "published count");
    // Same order as received: the validated stream keeps the order per partition key.
    for (out, (i, event)) in published.iter().zip(&valid) {
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
        // Re-published under the validator's own origin: its input shard and position.
        let origin = envelope.origin.clone().unwrap();
        assert!(origin.id.starts_with("validator/shardId-"), "{origin:?}");
        assert_eq!(
            (origin.seq.as_str(), origin.sub),
            (sequence_number(*i).as_str(), 0)
        );
        original.origin = Some(origin);
        assert_eq!(
            envelope, original,
            "only the stage time and origin are added"
        );
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
        assert!(msg.shard_id.starts_with("shardId-"), "{}", msg.shard_id);
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
