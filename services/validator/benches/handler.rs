//! How long the validator takes per record, without I/O: `Validator::handle` over a
//! 10,000-record Lambda Kinesis event from the load generator (2% invalid) with in-process
//! ports, then the pure parts alone, to see where the time goes.
//!
//! `cargo bench -p riffle-validator --bench handler`. Each figure is the median of
//! [`RUNS`] runs after [`WARM_UP`] runs, on one core (a current-thread runtime). The target
//! is at most 2 µs per record for the handler.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use riffle_codec::datum::read_record;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_stage::KinesisEvent;
use riffle_stage::schemas::resolve_payload_schemas;
use riffle_validator::verdict::{self, Verdict};

const RECORDS: usize = 10_000;
const WARM_UP: usize = 3;
const RUNS: usize = 20;
/// What the handler may spend per record.
const TARGET_US_PER_RECORD: f64 = 2.0;

/// Median of `RUNS` timings of `run`, after `WARM_UP` untimed ones; `run` returns the time of
/// the part it wants measured.
fn median(mut run: impl FnMut() -> Duration) -> Duration {
    for _ in 0..WARM_UP {
        run();
    }
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    times[RUNS / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// One result line: µs per record and records per second.
fn report(what: &str, time: Duration, records: usize) -> f64 {
    let us = time.as_secs_f64() * 1e6 / records as f64;
    eprintln!(
        "{what:<44} {us:>8.3} µs/record {:>12.0} records/s  ({records} records, median {:.2} ms)",
        1e6 / us,
        time.as_secs_f64() * 1e3,
    );
    us
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = generate(42, RECORDS);
    let event = kinesis_event(&events);
    let json = serde_json::to_string(&event).unwrap();
    eprintln!(
        "validator bench: {RECORDS} records, {} invalid, {:.1} MB of event JSON, {RUNS} runs after {WARM_UP}",
        events
            .iter()
            .filter(|e| matches!(e.expected, riffle_loadtest::Expected::Rejected { .. }))
            .count(),
        json.len() as f64 / 1e6,
    );

    let (output, rejects) = (Sink::new(), Sink::new());
    let validator = validator(registered(), output.clone(), rejects.clone());
    let handler = median(|| {
        let batch = event.clone();
        let time = timed(|| {
            let response = runtime.block_on(validator.handle(batch)).unwrap();
            assert!(response.batch_item_failures.is_empty());
        });
        output.take();
        rejects.take();
        time
    });

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let contracts = riffle_codec::rules::bundled().unwrap();
    let cache = SchemaCache::new(registered());
    let data: Vec<&[u8]> = event
        .records
        .iter()
        .map(|r| &r.kinesis.data.0[..])
        .collect();
    let decoded: Vec<_> = data.iter().map(|d| codec.decode(d)).collect();
    let schemas = runtime.block_on(resolve_payload_schemas(&cache, &decoded));
    let envelopes: Vec<Envelope> = decoded.into_iter().flatten().collect();

    let parse = median(|| timed(|| drop(black_box(serde_json::from_str::<KinesisEvent>(&json)))));
    let decode = median(|| {
        timed(|| {
            for d in &data {
                drop(black_box(codec.decode(black_box(d))));
            }
        })
    });
    let encode = median(|| {
        let mut out = Vec::with_capacity(1024);
        timed(|| {
            for e in &envelopes {
                out.clear();
                codec.encode_into(black_box(e), &mut out).unwrap();
            }
        })
    });
    let payload = |check: bool| {
        median(|| {
            timed(|| {
                for e in &envelopes {
                    let Some(Ok(schema)) = schemas.get(&(e.schema_id as u32)) else {
                        continue;
                    };
                    let Ok(record) = read_record(schema, &e.payload) else {
                        continue;
                    };
                    if check && let Some(contract) = contracts.get(&e.subject) {
                        drop(black_box(contract.check(
                            &record,
                            e.event_time,
                            e.ingest_time,
                        )));
                    }
                    black_box(record);
                }
            })
        })
    };
    let walk = payload(false);
    let walk_and_check = payload(true);
    let judge = median(|| {
        let now = verdict::now_ms();
        timed(|| {
            for d in &data {
                let verdict =
                    verdict::judge(&codec, &contracts, &schemas, &[], codec.decode(d), now);
                if let Verdict::Retry(why) = verdict {
                    panic!("retry: {why}");
                }
                black_box(verdict);
            }
        })
    });
    let clone = median(|| timed(|| drop(black_box(event.clone()))));

    eprintln!();
    let us = report("Validator::handle (in-process ports)", handler, RECORDS);
    report("  decode + judge per record (verdict)", judge, RECORDS);
    report("    envelope decode (frame + serde)", decode, RECORDS);
    report("    payload walk (read_record)", walk, RECORDS);
    report("    payload walk + contract check", walk_and_check, RECORDS);
    report("    envelope encode", encode, envelopes.len());
    report("not in handle: event JSON parse (Lambda)", parse, RECORDS);
    report("not in handle: KinesisEvent clone (bench)", clone, RECORDS);
    eprintln!(
        "\ntarget {TARGET_US_PER_RECORD} µs/record: {}",
        if us <= TARGET_US_PER_RECORD {
            "met"
        } else {
            "NOT met"
        }
    );
}
