//! A Lambda Kinesis event exactly as Lambda delivers it (JSON, `data` in base64), with real
//! framed envelopes inside, through the validator; the response is serialised and compared
//! with the expected response file.
//!
//! The fixture was written once by the ignored `write_fixture` test from the load generator
//! (seed 42); run `cargo test -p riffle-validator --test fixture -- --ignored write_fixture`
//! to write it again after a deliberate change to the envelope or the event schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use riffle_codec::EnvelopeCodec;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_loadtest::{Expected, GeneratedEvent, Generator, GeneratorConfig, InvalidKind, Source};
use riffle_stage::{KinesisEvent, KinesisEventResponse};
use riffle_validator::verdict::now_ms;

const EVENT_FILE: &str = "validator_kinesis_event.json";
const EVENT: &str = include_str!("../../../tests/fixtures/validator_kinesis_event.json");
const RESPONSE: &str = include_str!("../../../tests/fixtures/validator_kinesis_response.json");

/// Another envelope version the registry knows: records framed with it must be learned.
const KNOWN_ENVELOPE_VERSION: u32 = 6;
/// An envelope version the registry cannot be asked about (outage): its record is retried.
const UNREACHABLE_ENVELOPE_VERSION: u32 = 7;

/// What each fixture record must become, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Valid,
    Rejected(&'static str),
    Retried,
}

const FATES: [Fate; 9] = [
    Fate::Valid,
    Fate::Valid,
    Fate::Valid,
    Fate::Rejected("pattern_mismatch"),
    Fate::Rejected("bad_magic"),
    Fate::Rejected("subject_mismatch"),
    Fate::Rejected("event_time_skew"),
    Fate::Valid,
    Fate::Retried,
];

fn source() -> MapSource {
    MapSource::with(
        [
            (IDS.envelope, ENVELOPE_SCHEMA),
            (KNOWN_ENVELOPE_VERSION, ENVELOPE_SCHEMA),
            (IDS.order, ORDER_SCHEMA),
            (IDS.page_view, PAGE_VIEW_SCHEMA),
            (IDS.sensor, SENSOR_SCHEMA),
        ],
        [UNREACHABLE_ENVELOPE_VERSION],
    )
}

#[tokio::test]
async fn lambda_event_file_through_the_validator() {
    let event: KinesisEvent = serde_json::from_str(EVENT).unwrap();
    // Parse -> serialise -> parse keeps every field Lambda sends.
    let again: KinesisEvent =
        serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
    assert_eq!(again, event);
    assert_eq!(event.records.len(), FATES.len());

    let (output, rejects) = (Sink::new(), Sink::new());
    let validator = validator(source(), output.clone(), rejects.clone());
    let started = now_ms();
    let response = validator.handle(event.clone()).await.unwrap();
    let handled = (started, now_ms());

    let expected: serde_json::Value = serde_json::from_str(RESPONSE).unwrap();
    assert_eq!(serde_json::to_value(&response).unwrap(), expected);
    let back: KinesisEventResponse = serde_json::from_value(expected).unwrap();
    assert_eq!(back, response);

    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let mut published = output.take().into_iter();
    let rejected = reject_messages(&rejects.take());
    let retried = failed(&response);
    for (record, fate) in event.records.iter().zip(FATES) {
        let seq = &record.kinesis.sequence_number;
        match fate {
            Fate::Valid => {
                let out = published.next().unwrap();
                assert_eq!(out.partition_key, record.kinesis.partition_key);
                let envelope = codec.decode(&out.data).unwrap();
                let stamped = envelope.stage_times[riffle_validator::STAGE];
                assert!((handled.0..=handled.1).contains(&stamped));
                // Whatever version it came in, it leaves in the version this stage writes.
                assert_eq!(&out.data[..5], &[0, 0, 0, 0, IDS.envelope as u8]);
            }
            Fate::Rejected(code) => {
                let msg = rejected.iter().find(|m| &m.sequence_number == seq).unwrap();
                assert_eq!(msg.code, code, "{}", msg.detail);
                assert_eq!(msg.data().unwrap(), record.kinesis.data);
            }
            Fate::Retried => assert_eq!(retried, vec![seq.clone()]),
        }
    }
    assert!(published.next().is_none());
    assert_eq!(
        rejected.len(),
        FATES
            .iter()
            .filter(|f| matches!(f, Fate::Rejected(_)))
            .count()
    );
}

/// Picks the fixture's events from the generator; they are written to the file once.
fn fixture_events() -> Vec<GeneratedEvent> {
    let config = GeneratorConfig {
        invalid_ratio: 0.3,
        ..GeneratorConfig::default()
    };
    let events = Generator::new(config, IDS).unwrap().batch(2_000).unwrap();
    let valid_from = |source: Source, skip: usize| {
        events
            .iter()
            .filter(|e| e.source == source && matches!(e.expected, Expected::Valid { .. }))
            .nth(skip)
            .unwrap()
            .clone()
    };
    let invalid = |kind: InvalidKind| {
        events
            .iter()
            .find(|e| matches!(e.expected, Expected::Rejected { code, .. } if code == kind.code()))
            .unwrap()
            .clone()
    };
    let reframed = |mut event: GeneratedEvent, version: u32| {
        let envelope = EnvelopeCodec::new(IDS.envelope)
            .unwrap()
            .decode(&event.record)
            .unwrap();
        event.record = EnvelopeCodec::new(version)
            .unwrap()
            .encode(&envelope)
            .unwrap();
        event
    };
    vec![
        valid_from(Source::ShopWeb, 0),
        valid_from(Source::Web, 0),
        valid_from(Source::IotGateway, 0),
        invalid(InvalidKind::PatternMismatch),
        invalid(InvalidKind::BadMagic),
        invalid(InvalidKind::SubjectMismatch),
        invalid(InvalidKind::EventTimeSkew),
        reframed(valid_from(Source::ShopApp, 0), KNOWN_ENVELOPE_VERSION),
        reframed(valid_from(Source::Web, 1), UNREACHABLE_ENVELOPE_VERSION),
    ]
}

#[test]
#[ignore = "writes the fixture files; run by hand after a deliberate format change"]
fn write_fixture() {
    let events = fixture_events();
    let event = kinesis_event(&events);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    // As Lambda writes it: the arrival time is a JSON number of seconds, and an unencrypted
    // record carries no encryption type.
    let mut json = serde_json::to_value(&event).unwrap();
    for record in json["Records"].as_array_mut().unwrap() {
        let kinesis = record["kinesis"].as_object_mut().unwrap();
        kinesis.remove("encryptionType");
        let arrival = &kinesis["approximateArrivalTimestamp"];
        let seconds: f64 = arrival.as_str().unwrap().parse().unwrap();
        kinesis.insert("approximateArrivalTimestamp".into(), seconds.into());
    }
    let json = serde_json::to_string_pretty(&json).unwrap();
    std::fs::write(dir.join(EVENT_FILE), json + "\n").unwrap();
    let mut failure = riffle_stage::KinesisBatchItemFailure::default();
    failure.item_identifier = Some(event.records[8].kinesis.sequence_number.clone());
    let mut response = KinesisEventResponse::default();
    response.batch_item_failures = vec![failure];
    let json = serde_json::to_string_pretty(&response).unwrap();
    std::fs::write(dir.join("validator_kinesis_response.json"), json + "\n").unwrap();
}
