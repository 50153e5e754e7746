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

use common::*;
use riffle_codec::datum::read_record;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_loadtest::bench::{RUNS, Timing, WARM_UP, load, median, report, timed};
use riffle_loadtest::{Generator, GeneratorConfig};
use riffle_stage::KinesisEvent;
use riffle_stage::schemas::resolve_payload_schemas;
use riffle_stage::trace::Tracer;
use riffle_trace::DEFAULT_SAMPLE_RATE;
use riffle_validator::verdict::{self, Verdict};

const RECORDS: usize = 10_000;
/// What the handler may spend per record.
const TARGET_US_PER_RECORD: f64 = 2.0;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = generate(42, RECORDS);
    let event = kinesis_event(&events);
    let json = serde_json::to_string(&event).unwrap();
    eprintln!(
        "validator bench: {RECORDS} records, {} invalid, {:.1} MB of event JSON, {RUNS} runs after {WARM_UP}, load {}",
        events
            .iter()
            .filter(|e| matches!(e.expected, riffle_loadtest::Expected::Rejected { .. }))
            .count(),
        json.len() as f64 / 1e6,
        load(),
    );

    let (output, rejects) = (Sink::new(), Sink::new());
    // Marks cleared before every run: each run handles the batch as new.
    let marks = MemoryMarks::default();
    let validator =
        validator_with_marks(registered(), output.clone(), rejects.clone(), marks.clone());
    let handler = median(|| {
        marks.clear();
        let batch = event.clone();
        let time = timed(|| {
            let response = runtime.block_on(validator.handle(batch)).unwrap();
            assert!(response.batch_item_failures.is_empty());
        });
        output.take();
        rejects.take();
        time
    });

    // The same with tracing on, spans exported to a local X-Ray daemon over UDP: every record
    // traced, and the default (5 % of the records without a producer's header, here none has
    // one); exported in the background (the local runtime), and with the flush that ends
    // each batch on Lambda (which waits for the export).
    let dir = std::env::temp_dir().join(format!("riffle-validator-bench-{}", std::process::id()));
    let collector = riffle_trace::Collector::start(&dir).unwrap();
    // A negative rate is tracing off.
    let traced = |rate: f64, event: &KinesisEvent, lambda: bool| {
        let tracer = if rate < 0.0 {
            Tracer::off()
        } else {
            Tracer::to_daemon("riffle-validator", collector.address(), rate)
                .unwrap()
                .flushing_each_batch(lambda)
        };
        let validator =
            validator_with_marks(registered(), output.clone(), rejects.clone(), marks.clone())
                .with_tracer(tracer);
        median(|| {
            marks.clear();
            let batch = event.clone();
            let time = timed(|| {
                runtime.block_on(validator.handle(batch)).unwrap();
            });
            output.take();
            rejects.take();
            time
        })
    };
    let all_sampled = traced(1.0, &event, false);
    let all_sampled_lambda = traced(1.0, &event, true);
    let unheaded = kinesis_event(
        &Generator::new(
            GeneratorConfig {
                seed: 42,
                trace_header_ratio: 0.0,
                ..GeneratorConfig::default()
            },
            IDS,
        )
        .unwrap()
        .batch(RECORDS)
        .unwrap(),
    );
    let default_sampled = traced(DEFAULT_SAMPLE_RATE, &unheaded, false);
    let default_sampled_lambda = traced(DEFAULT_SAMPLE_RATE, &unheaded, true);
    let untraced_unheaded = traced(0.0, &unheaded, false);
    let off_unheaded = traced(-1.0, &unheaded, false);
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);

    // `cargo bench ... -- handler-only` stops here, for profiling the handler alone.
    let per_record = |t: Timing| t.median.as_secs_f64() * 1e6 / RECORDS as f64;
    let tracing_report = || {
        report(
            "Validator::handle, every record traced",
            all_sampled,
            RECORDS,
        );
        report(
            "  the same, flushed per batch (Lambda)",
            all_sampled_lambda,
            RECORDS,
        );
        report(
            "Validator::handle, no headers, tracing off",
            off_unheaded,
            RECORDS,
        );
        report(
            "Validator::handle, no headers, tracing at rate 0",
            untraced_unheaded,
            RECORDS,
        );
        report(
            "Validator::handle, no headers, default sampling",
            default_sampled,
            RECORDS,
        );
        report(
            "  the same, flushed per batch (Lambda)",
            default_sampled_lambda,
            RECORDS,
        );
        let cost = |t: Timing, base: Timing| (per_record(t) / per_record(base) - 1.0) * 100.0;
        eprintln!(
            "  tracing cost: every record traced {:+.1} % ({:+.1} % on Lambda; target <= 10 %); \
             default sampling {:+.1} % ({:+.1} % on Lambda; target <= 2 %)",
            cost(all_sampled, handler),
            cost(all_sampled_lambda, handler),
            cost(default_sampled, off_unheaded),
            cost(default_sampled_lambda, off_unheaded),
        );
    };
    if std::env::args().any(|a| a == "handler-only") {
        report("Validator::handle (in-process ports)", handler, RECORDS);
        tracing_report();
        return;
    }

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let contracts = riffle_codec::rules::bundled().unwrap();
    let cache = SchemaCache::new(registered());
    let data: Vec<&[u8]> = event.records.iter().map(|r| &r.kinesis.data[..]).collect();
    let decoded: Vec<_> = data.iter().map(|d| codec.decode(d)).collect();
    let schemas = runtime.block_on(resolve_payload_schemas(&cache, &decoded));
    let envelopes: Vec<Envelope> = decoded.into_iter().flatten().collect();
    let plans = verdict::plans(&contracts, &schemas);

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
    let mut stamped = envelopes.clone();
    for e in &mut stamped {
        e.stage_times.insert("validator".into(), 1_767_225_600_000);
    }
    let encode_new = median(|| {
        timed(|| {
            for e in &stamped {
                black_box(codec.encode(black_box(e)).unwrap());
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
                        drop(black_box(contract.check_planned(
                            &plans[&schema.id()],
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
                let verdict = verdict::judge(
                    &codec,
                    &contracts,
                    &schemas,
                    &plans,
                    &[],
                    codec.decode(d),
                    now,
                );
                if let Verdict::Retry(why) = verdict {
                    panic!("retry: {why}");
                }
                black_box(verdict);
            }
        })
    });
    let clone = median(|| timed(|| drop(black_box(event.clone()))));
    // The steps of `judge` in its order, each run cumulatively (decode, then decode + lookups,
    // ...), so the differences show what each step adds in context.
    let steps = |upto: u8| {
        let now = verdict::now_ms();
        median(|| {
            timed(|| {
                for d in &data {
                    let Ok(mut e) = codec.decode(black_box(d)) else {
                        continue;
                    };
                    if upto < 1 {
                        black_box(&e);
                        continue;
                    }
                    let (Some(contract), Some(Ok(schema))) = (
                        contracts.get(&e.subject),
                        schemas.get(&(e.schema_id as u32)),
                    ) else {
                        continue;
                    };
                    if schema.full_name() != Some(e.subject.as_str()) || upto < 2 {
                        continue;
                    }
                    let Ok(record) = read_record(schema, &e.payload) else {
                        continue;
                    };
                    if upto < 3 {
                        black_box(&record);
                        continue;
                    }
                    let plan = &plans[&schema.id()];
                    if contract
                        .check_planned(plan, &record, e.event_time, e.ingest_time)
                        .is_err()
                        || upto < 4
                    {
                        continue;
                    }
                    e.stage_times.insert("validator".to_string(), now);
                    black_box(codec.encode(&e).unwrap());
                }
            })
        })
    };
    let step: Vec<Timing> = (0..5).map(steps).collect();

    eprintln!();
    let us = report("Validator::handle (in-process ports)", handler, RECORDS);
    tracing_report();
    report("  decode + judge per record (verdict)", judge, RECORDS);
    report("    envelope decode (frame + serde)", decode, RECORDS);
    report("    payload walk (read_record)", walk, RECORDS);
    report("    payload walk + contract check", walk_and_check, RECORDS);
    report(
        "    envelope encode (reused buffer)",
        encode,
        envelopes.len(),
    );
    report(
        "    envelope encode (new Vec, + stage time)",
        encode_new,
        envelopes.len(),
    );
    eprintln!("  judge's steps, cumulative:");
    let names = [
        "decode",
        "+ contract/schema lookup + full_name",
        "+ read_record",
        "+ contract check",
        "+ stage time + encode",
    ];
    for (name, time) in names.iter().zip(&step) {
        report(&format!("    {name}"), *time, RECORDS);
    }
    report("not in handle: event JSON parse (Lambda)", parse, RECORDS);
    report("not in handle: KinesisEvent clone (bench)", clone, RECORDS);
    eprintln!(
        "\nload {}; target {TARGET_US_PER_RECORD} µs/record (median): {}",
        load(),
        if us <= TARGET_US_PER_RECORD {
            "met"
        } else {
            "NOT met"
        }
    );
}
