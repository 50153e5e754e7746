//! The validator's handler over generated batches: every record ends up published, rejected
//! with the generator's expected code, or reported for retry, and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashSet};

use common::*;
use riffle_codec::EnvelopeCodec;
use riffle_loadtest::{Expected, InvalidKind};
use riffle_validator::verdict::now_ms;

const EVENTS: usize = 5_000;

fn envelope_codec() -> EnvelopeCodec {
    EnvelopeCodec::new(IDS.envelope).unwrap()
}

#[tokio::test]
async fn every_record_gets_the_generators_outcome() {
    let events = generate(7, EVENTS);
    let invalid = events
        .iter()
        .filter(|e| matches!(e.expected, Expected::Rejected { .. }))
        .count();
    // 2% of 5,000 is 100; a generator change that stopped producing invalid events would make
    // the rest of this test vacuous.
    assert!((60..=150).contains(&invalid), "{invalid} invalid events");
    let codes: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| match e.expected {
            Expected::Rejected { code, .. } => Some(code),
            Expected::Valid { .. } => None,
        })
        .collect();
    let all: BTreeSet<&str> = InvalidKind::ALL.iter().map(|k| k.code()).collect();
    assert_eq!(codes, all, "every invalid kind is in the batch");

    let (source, output, rejects) = (registered(), Sink::new(), Sink::new());
    let validator = validator(source.clone(), output.clone(), rejects.clone());
    let started = now_ms();
    let response = validator.handle(kinesis_event(&events)).await.unwrap();
    let handled = (started, now_ms());

    assert_eq!(failed(&response), Vec::<String>::new());
    let rejected = reject_messages(&rejects.take());
    assert_outcomes(
        &events,
        &envelope_codec(),
        &output.take(),
        &rejected,
        handled,
    );

    // Each schema id is asked for once per batch at most: three payload schemas, and the
    // unregistered id once as an envelope version and once as a payload schema.
    let first = source.fetches();
    assert!(first <= 5, "{first} registry fetches for one batch");
    // Registered schemas stay cached; only the unregistered id is asked about again. (The
    // batch comes from another shard: its sequence numbers start over.)
    let more = generate(8, 1_000);
    let started = now_ms();
    let response = validator
        .handle(kinesis_event_on(&more, "shardId-000000000001"))
        .await
        .unwrap();
    let handled = (started, now_ms());
    assert!(response.batch_item_failures.is_empty());
    let rejected = reject_messages(&rejects.take());
    assert_outcomes(&more, &envelope_codec(), &output.take(), &rejected, handled);
    assert!(
        source.fetches() - first <= 2,
        "cached schemas fetched again"
    );
}

#[tokio::test]
async fn registry_outage_retries_instead_of_rejecting() {
    let events = generate(11, 2_000);
    let (source, output, rejects) = (registered(), Sink::new(), Sink::new());
    source.set_down(true);
    let validator = validator(source.clone(), output.clone(), rejects.clone());
    let event = kinesis_event(&events);

    let response = validator.handle(event.clone()).await.unwrap();
    let retried: HashSet<String> = failed(&response).into_iter().collect();
    assert_eq!(
        retried.len(),
        response.batch_item_failures.len(),
        "no duplicates"
    );
    assert!(output.take().is_empty(), "nothing published unproven");
    let rejected = reject_messages(&rejects.take());

    // Only what can be decided without the registry is rejected: a broken frame or envelope.
    // Everything else, a subject's contract included (it comes with the schema, ADR 0020),
    // waits for the registry.
    let decidable = ["bad_magic", "truncated", "malformed"];
    for msg in &rejected {
        assert!(decidable.contains(&msg.code.as_str()), "{msg:?}");
        assert!(!retried.contains(&msg.sequence_number));
    }
    for (i, event) in events.iter().enumerate() {
        let seq = sequence_number(i);
        match event.expected {
            Expected::Valid { .. } => assert!(retried.contains(&seq), "valid event {i}"),
            Expected::Rejected { code, .. } => {
                let rejected_as = rejected.iter().find(|m| m.sequence_number == seq);
                match rejected_as {
                    Some(msg) => assert_eq!(msg.code, code),
                    None => assert!(retried.contains(&seq), "{code} event {i} dropped"),
                }
            }
        }
    }
    assert_eq!(retried.len() + rejected.len(), events.len());
    assert!(
        rejected
            .iter()
            .any(|m| decidable.contains(&m.code.as_str())),
        "the batch has records decidable without the registry"
    );

    // Lambda delivers the batch again once the registry is back; now every record resolves.
    // (Records rejected the first time are rejected again: rejects are idempotent by
    // sequence number for whoever replays them.)
    source.set_down(false);
    let started = now_ms();
    let response = validator.handle(event).await.unwrap();
    let handled = (started, now_ms());
    assert!(response.batch_item_failures.is_empty());
    let rejected = reject_messages(&rejects.take());
    assert_outcomes(
        &events,
        &envelope_codec(),
        &output.take(),
        &rejected,
        handled,
    );
}

#[tokio::test]
async fn records_the_ports_could_not_write_are_retried() {
    let events = generate(13, 3_000);
    let output = Sink::failing(|i| i % 7 == 3);
    let rejects = Sink::failing(|i| i % 5 == 1);
    let validator = validator(registered(), output.clone(), rejects.clone());
    let response = validator.handle(kinesis_event(&events)).await.unwrap();

    // Ports see valid and rejected records in batch order, so index n of a call is the n-th
    // record of that kind.
    let seqs_of = |valid: bool| -> Vec<String> {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.expected, Expected::Valid { .. }) == valid)
            .map(|(i, _)| sequence_number(i))
            .collect()
    };
    let (valid, invalid) = (seqs_of(true), seqs_of(false));
    let mut expected: Vec<String> = valid
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 7 == 3)
        .chain(invalid.iter().enumerate().filter(|(n, _)| n % 5 == 1))
        .map(|(_, s)| s.clone())
        .collect();
    expected.sort();
    let mut got = failed(&response);
    got.sort();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    let failing = |len: usize, pick: fn(usize) -> bool| (0..len).filter(|n| pick(*n)).count();
    let published = output.take();
    assert_eq!(
        published.len(),
        valid.len() - failing(valid.len(), |n| n % 7 == 3)
    );
    let kept: Vec<String> = reject_messages(&rejects.take())
        .into_iter()
        .map(|m| m.sequence_number)
        .collect();
    assert_eq!(
        kept.len(),
        invalid.len() - failing(invalid.len(), |n| n % 5 == 1)
    );
    assert!(kept.iter().all(|s| !got.contains(s)), "kept and retried");
}

#[tokio::test]
async fn a_port_refusing_the_whole_call_fails_the_batch() {
    let events = generate(17, 500);
    let (output, rejects) = (Sink::new(), Sink::new());
    let validator = validator(registered(), output.clone(), rejects.clone());

    output.set_refuse(true);
    let err = validator.handle(kinesis_event(&events)).await.unwrap_err();
    assert!(err.retryable(), "{err}");

    output.set_refuse(false);
    rejects.set_refuse(true);
    let err = validator.handle(kinesis_event(&events)).await.unwrap_err();
    assert!(err.retryable(), "{err}");

    rejects.set_refuse(false);
    let response = validator.handle(kinesis_event(&events)).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
}

#[tokio::test]
async fn an_empty_batch_is_an_empty_response() {
    let validator = validator(registered(), Sink::new(), Sink::new());
    let response = validator.handle(kinesis_event(&[])).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
}
