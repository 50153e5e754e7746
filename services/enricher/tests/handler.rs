//! The enricher's handler over generated batches, checked against the generator's independent
//! ground truth: the view key, metric, window and reference flag of every event, dead letters
//! for what cannot be read, retries for what cannot be reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use riffle_codec::datum::read_record;
use riffle_codec::{CompiledSchema, EnvelopeCodec};
use riffle_loadtest::{Expected, GeneratedEvent, approx_eq};
use riffle_stage::RejectMessage;
use riffle_stage::dedup::{Position, republished_origin};

/// Invalid records the enricher cannot read either (the rest break rules only the validator
/// checks, and never reach it).
const UNREADABLE: [&str; 4] = ["bad_magic", "truncated", "malformed", "unknown_schema"];

/// Wall-clock millis, as the handler stamps them.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the validated stream could carry: valid events, plus records that someone other than
/// the validator wrote and that cannot be read.
fn enricher_input(events: Vec<GeneratedEvent>) -> Vec<GeneratedEvent> {
    events
        .into_iter()
        .filter(|e| match e.expected {
            Expected::Valid { .. } => true,
            Expected::Rejected { code, .. } => UNREADABLE.contains(&code),
        })
        .collect()
}

fn assert_enriched(
    shard: &str,
    events: &[GeneratedEvent],
    catalogue: &Catalogue,
    published: &[riffle_stage::OutRecord],
    dead: &[RejectMessage],
    handled: (i64, i64),
) {
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let mut published = published.iter();
    let dead: HashMap<&str, &RejectMessage> = dead
        .iter()
        .map(|m| (m.sequence_number.as_str(), m))
        .collect();
    let mut dead_expected = 0;
    for (i, event) in events.iter().enumerate() {
        match &event.expected {
            Expected::Valid {
                subject,
                agg_key,
                window_start,
                metric,
                reference_found,
            } => {
                let out = published
                    .next()
                    .expect("a published record per valid event");
                assert_eq!(out.partition_key, event.partition_key);
                let envelope = codec.decode(&out.data).unwrap();
                assert_eq!(&envelope.subject, subject);
                let enrichment = envelope.enrichment.clone().unwrap();
                assert_eq!(&enrichment.agg_key, agg_key, "event {i}");
                assert!(
                    approx_eq(enrichment.metric, *metric),
                    "event {i}: metric {} != {metric}",
                    enrichment.metric
                );
                assert_eq!(enrichment.window_start, *window_start, "event {i}");
                // Subjects that join nothing count as found.
                assert_eq!(enrichment.reference_found, reference_found.unwrap_or(true));
                if *reference_found == Some(false) {
                    assert!(agg_key.contains("unknown"), "{agg_key}");
                    assert!(enrichment.attributes.is_empty());
                }
                if *reference_found == Some(true) {
                    let key = reference_key(&envelope);
                    assert_eq!(Some(&enrichment.attributes), catalogue.get(&key), "{key}");
                }
                let stamped = envelope.stage_times[riffle_enricher::STAGE];
                assert!((handled.0..=handled.1).contains(&stamped));

                let mut original = codec.decode(&event.record).unwrap();
                original.enrichment = Some(enrichment);
                original
                    .stage_times
                    .insert(riffle_enricher::STAGE.to_string(), stamped);
                // Re-published under the enricher's own origin: its input shard and position.
                let position = Position::new(&sequence_number(i), 0).unwrap();
                original.origin =
                    Some(republished_origin(riffle_enricher::STAGE, shard, &position));
                assert_eq!(
                    envelope, original,
                    "only enrichment, stage time and origin added"
                );
            }
            Expected::Rejected { code, .. } => {
                dead_expected += 1;
                let msg = dead
                    .get(sequence_number(i).as_str())
                    .unwrap_or_else(|| panic!("{code} event {i} not dead-lettered"));
                assert_eq!(msg.code, *code, "{}", msg.detail);
                assert_eq!(msg.stage, riffle_enricher::STAGE);
                assert_eq!(msg.partition_key, event.partition_key);
                assert_eq!(msg.data().unwrap(), event.record);
            }
        }
    }
    assert!(published.next().is_none(), "more published than valid");
    assert_eq!(dead.len(), dead_expected);
}

/// The reference key an event joins, read from its payload with the codec alone: `product#`
/// and the order's `product_id`, or `device#` and the reading's `device_id`.
fn reference_key(envelope: &riffle_codec::Envelope) -> String {
    let (field, prefix, schema) = match envelope.subject.as_str() {
        "com.riffle.shop.OrderPlaced" => ("product_id", "product#", ORDER_SCHEMA),
        "com.riffle.iot.SensorReading" => ("device_id", "device#", SENSOR_SCHEMA),
        other => panic!("{other} joins no reference data"),
    };
    let schema = CompiledSchema::parse(envelope.schema_id as u32, schema).unwrap();
    let record = read_record(&schema, &envelope.payload).unwrap();
    let id = record.get(field).unwrap().as_str().unwrap().to_string();
    format!("{prefix}{id}")
}

/// The distinct reference keys the valid events of `events` join.
fn reference_keys(events: &[GeneratedEvent]) -> BTreeSet<String> {
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    events
        .iter()
        .filter(|e| {
            matches!(
                e.expected,
                Expected::Valid {
                    reference_found: Some(_),
                    ..
                }
            )
        })
        .map(|e| reference_key(&codec.decode(&e.record).unwrap()))
        .collect()
}

#[tokio::test]
async fn enriches_every_event_as_the_ground_truth_says() {
    let events = enricher_input(generate(21, 5_000, 0.05));
    let missing = |prefix: &str| {
        events
            .iter()
            .filter(|e| {
                matches!(&e.expected, Expected::Valid { agg_key, reference_found: Some(false), .. }
                    if agg_key.starts_with(prefix))
            })
            .count()
    };
    assert!(missing("orders:") > 0 && missing("sensors:") > 0);
    for code in UNREADABLE {
        assert!(
            events
                .iter()
                .any(|e| matches!(e.expected, Expected::Rejected { code: c, .. } if c == code)),
            "no {code} record in the batch"
        );
    }

    let catalogue = Catalogue::new();
    let (output, dlq) = (Sink::new(), Sink::new());
    let enricher = enricher(registered(), catalogue.clone(), output.clone(), dlq.clone());
    let started = now_ms();
    let response = enricher.handle(kinesis_event(&events)).await.unwrap();
    let handled = (started, now_ms());
    assert_eq!(failed(&response), Vec::<String>::new());
    let dead = reject_messages(&dlq.take());
    assert_enriched(SHARD, &events, &catalogue, &output.take(), &dead, handled);

    // One reference call for the batch, each distinct key asked once.
    let first_keys = reference_keys(&events);
    assert_eq!(catalogue.asked(), (1, first_keys.len()));

    // The next batch finds the catalogue in the cache; only keys never seen are fetched. (It
    // comes from another shard: its sequence numbers start over.)
    let more = enricher_input(generate(22, 1_000, 0.05));
    let started = now_ms();
    let other = "shardId-000000000001";
    let response = enricher
        .handle(kinesis_event_on(&more, other))
        .await
        .unwrap();
    let handled = (started, now_ms());
    assert!(response.batch_item_failures.is_empty());
    let dead = reject_messages(&dlq.take());
    assert_enriched(other, &more, &catalogue, &output.take(), &dead, handled);
    let unseen = reference_keys(&more).difference(&first_keys).count();
    assert!(unseen > 0);
    assert_eq!(catalogue.asked(), (2, first_keys.len() + unseen));
}

#[tokio::test]
async fn outages_fail_the_batch_for_a_retry() {
    let events = enricher_input(generate(23, 300, 0.0));
    let (source, catalogue) = (registered(), Catalogue::new());
    let (output, dlq) = (Sink::new(), Sink::new());
    let enricher = enricher(
        source.clone(),
        catalogue.clone(),
        output.clone(),
        dlq.clone(),
    );

    source.set_down(true);
    let err = enricher.handle(kinesis_event(&events)).await.unwrap_err();
    assert!(err.retryable(), "{err}");
    source.set_down(false);

    catalogue.set_down(true);
    let err = enricher.handle(kinesis_event(&events)).await.unwrap_err();
    assert!(err.retryable(), "{err}");
    catalogue.set_down(false);

    output.set_refuse(true);
    let err = enricher.handle(kinesis_event(&events)).await.unwrap_err();
    assert!(err.retryable(), "{err}");
    output.set_refuse(false);

    // Nothing half-done was handed on by the failed attempts... except by the attempt whose
    // output refused: its dead letters were sent, and a retry sends them again.
    assert!(output.take().is_empty());
    dlq.take();
    let started = now_ms();
    let response = enricher.handle(kinesis_event(&events)).await.unwrap();
    let handled = (started, now_ms());
    assert!(response.batch_item_failures.is_empty());
    let dead = reject_messages(&dlq.take());
    assert_enriched(SHARD, &events, &catalogue, &output.take(), &dead, handled);
}

#[tokio::test]
async fn records_the_ports_could_not_write_are_retried() {
    let events = enricher_input(generate(25, 3_000, 0.02));
    let output = Sink::failing(|i| i % 9 == 4);
    let dlq = Sink::failing(|i| i % 2 == 0);
    let enricher = enricher(registered(), Catalogue::new(), output.clone(), dlq.clone());
    let response = enricher.handle(kinesis_event(&events)).await.unwrap();

    let seqs_of = |valid: bool| -> Vec<String> {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.expected, Expected::Valid { .. }) == valid)
            .map(|(i, _)| sequence_number(i))
            .collect()
    };
    let (valid, dead) = (seqs_of(true), seqs_of(false));
    let mut expected: Vec<String> = valid
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 9 == 4)
        .chain(dead.iter().enumerate().filter(|(n, _)| n % 2 == 0))
        .map(|(_, s)| s.clone())
        .collect();
    expected.sort();
    let mut got = failed(&response);
    got.sort();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}

#[tokio::test]
async fn an_empty_batch_asks_nobody() {
    let catalogue = Catalogue::new();
    let enricher = enricher(registered(), catalogue.clone(), Sink::new(), Sink::new());
    let response = enricher.handle(kinesis_event(&[])).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(catalogue.asked(), (0, 0));
}

#[tokio::test]
async fn events_after_their_window_is_final_are_flagged_late() {
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    // Page views join nothing: every one is published.
    let views = || {
        generate(31, 400, 0.0).into_iter().filter(
            |e| matches!(&e.expected, Expected::Valid { subject, .. } if subject == "com.riffle.web.PageView"),
        )
    };
    let t = now_ms() - now_ms().rem_euclid(60_000);
    // 60 s windows and 120 s of allowed lateness: the window from t is final once the
    // shard has seen an event at t + 180 s.
    let at = |e: GeneratedEvent, time: i64| {
        let mut e = e;
        let mut envelope = codec.decode(&e.record).unwrap();
        envelope.event_time = time;
        e.record = codec.encode(&envelope).unwrap();
        // Arrival (ingest + 20 ms) after every event time: the stream's clock caps nothing.
        e.ingest_time = t + 600_000;
        e
    };
    let times = [t + 1_000, t + 200_000, t + 2_000, t + 130_000, t + 59_999];
    let events: Vec<GeneratedEvent> = views().zip(times).map(|(e, time)| at(e, time)).collect();
    let output = Sink::new();
    let enricher = enricher(registered(), Catalogue::new(), output.clone(), Sink::new());
    let response = enricher.handle(kinesis_event(&events)).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let late = |out: Vec<riffle_stage::OutRecord>| -> Vec<bool> {
        out.iter()
            .map(|r| codec.decode(&r.data).unwrap().enrichment.unwrap().late)
            .collect()
    };
    // The first sees no watermark; the third's window closed at t + 180 s, which the second
    // passed; the fourth's window [t + 120 s, t + 180 s) closes at t + 300 s; the fifth
    // falls in the first window too, at its last millisecond.
    assert_eq!(late(output.take()), vec![false, false, true, false, true]);

    // The watermark is kept with the marks: the shard's next batch starts from it, while
    // another shard has its own.
    let next: Vec<GeneratedEvent> = views().skip(5).take(1).map(|e| at(e, t + 3_000)).collect();
    let mut batch = kinesis_event(&next);
    batch.records[0].kinesis.sequence_number = sequence_number(100);
    enricher.handle(batch).await.unwrap();
    assert_eq!(late(output.take()), vec![true]);
    enricher
        .handle(kinesis_event_on(&next, "shardId-000000000009"))
        .await
        .unwrap();
    assert_eq!(late(output.take()), vec![false]);
}
