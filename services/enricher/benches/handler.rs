//! How long the enricher takes per record, without I/O: `Enricher::handle` over a
//! 10,000-record Lambda Kinesis event of validated records from the load generator (with the
//! validator's stage time, and a few unreadable records) with the reference catalogue served
//! in-process, then the pure parts alone, to see where the time goes.
//!
//! `cargo bench -p riffle-enricher --bench handler`. Each figure is the median of [`RUNS`]
//! runs after [`WARM_UP`] runs, on one core (a current-thread runtime). After the first run
//! the reference cache holds the whole catalogue, as it does in a warm Lambda.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::*;
use riffle_codec::datum::read_record;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_enricher::reference::ReferenceCache;
use riffle_loadtest::bench::{RUNS, WARM_UP, load, median, report, timed};
use riffle_loadtest::{Expected, GeneratedEvent};
use riffle_stage::schemas::resolve_payload_schemas;

const RECORDS: usize = 10_000;

/// What the validated stream carries: valid events stamped by the validator, and the
/// occasional record nobody can read.
fn validated(events: Vec<GeneratedEvent>) -> Vec<GeneratedEvent> {
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    events
        .into_iter()
        .filter_map(|mut e| match e.expected {
            Expected::Valid { .. } => {
                let mut envelope = codec.decode(&e.record).unwrap();
                envelope
                    .stage_times
                    .insert("validator".into(), e.ingest_time + 40);
                e.record = codec.encode(&envelope).unwrap();
                Some(e)
            }
            Expected::Rejected { code, .. } => ["bad_magic", "truncated", "malformed"]
                .contains(&code)
                .then_some(e),
        })
        .take(RECORDS)
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = validated(generate(42, RECORDS + RECORDS / 10, 0.01));
    assert_eq!(events.len(), RECORDS);
    let event = kinesis_event(&events);
    eprintln!(
        "enricher bench: {RECORDS} records, {RUNS} runs after {WARM_UP}, load {}",
        load()
    );

    let (output, dlq) = (Sink::new(), Sink::new());
    // Marks cleared before every run: each run handles the batch as new.
    let marks = MemoryMarks::default();
    let enricher = enricher_with_marks(
        registered(),
        Catalogue::new(),
        output.clone(),
        dlq.clone(),
        marks.clone(),
    );
    let handler = median(|| {
        marks.clear();
        let batch = event.clone();
        let time = timed(|| {
            let response = runtime.block_on(enricher.handle(batch)).unwrap();
            assert!(response.batch_item_failures.is_empty());
        });
        output.take();
        dlq.take();
        time
    });

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let cache = SchemaCache::new(registered());
    let data: Vec<&[u8]> = event.records.iter().map(|r| &r.kinesis.data[..]).collect();
    let decoded: Vec<_> = data.iter().map(|d| codec.decode(d)).collect();
    let schemas = runtime.block_on(resolve_payload_schemas(&cache, &decoded));
    let envelopes: Vec<Envelope> = decoded.into_iter().flatten().collect();
    let reference = ReferenceCache::new(Catalogue::new(), CACHE_TTL);

    let decode = median(|| {
        timed(|| {
            for d in &data {
                drop(black_box(codec.decode(black_box(d))));
            }
        })
    });
    let mut keys = Vec::new();
    let derive = median(|| {
        keys.clear();
        timed(|| {
            for e in &envelopes {
                let Some(Ok(schema)) = schemas.get(&(e.schema_id as u32)) else {
                    continue;
                };
                let Ok(record) = read_record(schema, &e.payload) else {
                    continue;
                };
                let Some(spec) = schema.contract().and_then(|c| c.enrich.as_ref()) else {
                    continue;
                };
                if let Some(key) = spec.lookup_key(&record) {
                    keys.push(key);
                }
                let attributes = Default::default();
                black_box(spec.agg_key(&record, &attributes));
                black_box(spec.metric(&record));
                black_box(spec.window_start(e.event_time));
            }
        })
    });
    let lookup = median(|| {
        timed(|| {
            black_box(runtime.block_on(reference.get_many(&keys)).unwrap());
        })
    });
    marks.clear();
    let enriched: Vec<Envelope> = output_envelopes(&runtime, &enricher, &event, &output, &codec);
    let encode = median(|| {
        let mut out = Vec::with_capacity(1024);
        timed(|| {
            for e in &enriched {
                out.clear();
                codec.encode_into(black_box(e), &mut out).unwrap();
            }
        })
    });

    eprintln!();
    report("Enricher::handle (in-process ports)", handler, RECORDS);
    report("  envelope decode (frame + serde)", decode, RECORDS);
    report(
        "  payload walk + key/agg_key/metric/window",
        derive,
        RECORDS,
    );
    report("  reference cache lookup (warm, batch)", lookup, RECORDS);
    report("  enriched envelope encode", encode, enriched.len());
    eprintln!("\nload {}", load());
}

/// The enriched envelopes of one run, to time their encoding alone.
fn output_envelopes(
    runtime: &tokio::runtime::Runtime,
    enricher: &TestEnricher,
    event: &riffle_stage::KinesisEvent,
    output: &Sink<riffle_stage::OutRecord>,
    codec: &EnvelopeCodec,
) -> Vec<Envelope> {
    runtime.block_on(enricher.handle(event.clone())).unwrap();
    output
        .take()
        .iter()
        .map(|r| codec.decode(&r.data).unwrap())
        .collect()
}
