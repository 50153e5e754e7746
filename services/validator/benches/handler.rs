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
use riffle_codec::kpl;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_loadtest::bench::{Interleaved, RUNS, Timing, WARM_UP, load, median, report, timed};
use riffle_loadtest::{Generator, GeneratorConfig};
use riffle_stage::KinesisEvent;
use riffle_stage::aggregate::{ShardMap, pack};
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
    // What the validator puts, for the figures of packing it (below).
    marks.clear();
    runtime.block_on(validator.handle(event.clone())).unwrap();
    let published = output.take();
    rejects.take();

    // The same with tracing on, spans exported to an X-Ray daemon over UDP: every record
    // traced, and the default (5 % of the records without a producer's header; here none has
    // one); exported in the background (the local runtime), and with the flush that ends
    // each batch on Lambda (which waits for the export). The variants run in turns, so the
    // shared machine's drift hits them alike (see `Interleaved`).
    //
    // Two daemons: the local one (it parses and files every document, on the same two cores
    // as the handler), and a socket that drops what it receives, so the handler's and the
    // export thread's figures are theirs and not the daemon's.
    let dir = std::env::temp_dir().join(format!("riffle-validator-bench-{}", std::process::id()));
    let collector = riffle_trace::Collector::start(&dir).unwrap();
    let null_daemon = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let null_address = null_daemon.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while null_daemon.recv(&mut buf).is_ok() {}
    });
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
    // (what, daemon, sample rate (negative: tracing off), flushed per batch, event)
    let variants = [
        (
            "Validator::handle, tracing off",
            null_address,
            -1.0,
            false,
            &event,
        ),
        (
            "Validator::handle, every record traced",
            null_address,
            1.0,
            false,
            &event,
        ),
        (
            "  the same, flushed per batch (Lambda)",
            null_address,
            1.0,
            true,
            &event,
        ),
        (
            "  the same, to the local daemon (riffle-dev)",
            collector.address(),
            1.0,
            false,
            &event,
        ),
        (
            "Validator::handle, no headers, tracing off",
            null_address,
            -1.0,
            false,
            &unheaded,
        ),
        (
            "Validator::handle, no headers, default sampling",
            null_address,
            DEFAULT_SAMPLE_RATE,
            false,
            &unheaded,
        ),
        (
            "  the same, flushed per batch (Lambda)",
            null_address,
            DEFAULT_SAMPLE_RATE,
            true,
            &unheaded,
        ),
    ];
    let tracers: Vec<Tracer> = variants
        .iter()
        .map(|&(_, daemon, rate, lambda, _)| {
            if rate < 0.0 {
                Tracer::off()
            } else {
                Tracer::to_daemon("riffle-validator", daemon, rate)
                    .unwrap()
                    .flushing_each_batch(lambda)
            }
        })
        .collect();
    let validators: Vec<_> = tracers
        .iter()
        .map(|t| {
            validator_with_marks(registered(), output.clone(), rejects.clone(), marks.clone())
                .with_tracer(t.clone())
        })
        .collect();
    let mut runs: Vec<Box<dyn FnMut() -> std::time::Duration + '_>> = variants
        .iter()
        .zip(&validators)
        .zip(&tracers)
        .map(|((&(.., event), validator), tracer)| {
            let (runtime, marks, output, rejects) = (&runtime, &marks, &output, &rejects);
            Box::new(move || {
                marks.clear();
                let batch = event.clone();
                let time = timed(|| {
                    runtime.block_on(validator.handle(batch)).unwrap();
                });
                output.take();
                rejects.take();
                // The run's spans leave before the next run starts: the handler's figure is
                // its own, the export thread's is shown apart.
                tracer.force_flush();
                time
            }) as Box<dyn FnMut() -> std::time::Duration>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> std::time::Duration> =
        runs.iter_mut().map(|r| &mut **r as _).collect();
    let traced = Interleaved::run(&mut refs);
    drop(refs);
    drop(runs);
    let export_lines: Vec<String> = variants
        .iter()
        .zip(&tracers)
        .filter_map(|(&(what, ..), tracer)| {
            let stats = tracer.export_stats()?;
            (stats.exported() > 0).then(|| {
                format!(
                    "    {}: export thread {:.2} µs per span ({} spans, {} dropped)",
                    what.trim(),
                    stats.busy().as_secs_f64() * 1e6 / stats.exported() as f64,
                    stats.exported(),
                    stats.dropped(),
                )
            })
        })
        .collect();
    drop(validators);
    drop(tracers);
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);

    // `cargo bench ... -- handler-only` stops here, for profiling the handler alone.
    let tracing_report = || {
        for (i, &(what, ..)) in variants.iter().enumerate() {
            report(what, traced.timing(i), RECORDS);
        }
        eprintln!(
            "  tracing cost (median of per-round ratios): every record traced {:+.1} % \
             ({:+.1} % on Lambda, {:+.1} % to the local daemon; target <= 10 %); default \
             sampling {:+.1} % ({:+.1} % on Lambda; target <= 2 %)",
            traced.cost(1, 0),
            traced.cost(2, 0),
            traced.cost(3, 0),
            traced.cost(5, 4),
            traced.cost(6, 4),
        );
        for line in &export_lines {
            eprintln!("{line}");
        }
    };
    if std::env::args().any(|a| a == "handler-only") {
        report("Validator::handle (in-process ports)", handler, RECORDS);
        tracing_report();
        return;
    }

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let cache = SchemaCache::new(registered());
    let data: Vec<&[u8]> = event.records.iter().map(|r| &r.kinesis.data[..]).collect();
    let decoded: Vec<_> = data.iter().map(|d| codec.decode(d)).collect();
    let schemas = runtime.block_on(resolve_payload_schemas(&cache, &decoded));
    let envelopes: Vec<Envelope> = decoded.into_iter().flatten().collect();
    let plans = verdict::plans(&schemas);

    let parse = median(|| timed(|| drop(black_box(KinesisEvent::from_json(&json)))));
    let parse_serde =
        median(|| timed(|| drop(black_box(serde_json::from_str::<KinesisEvent>(&json)))));
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
                    if check && let Some(contract) = schema.contract() {
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
                let verdict = verdict::judge(&codec, &schemas, &plans, &[], codec.decode(d), now);
                if let Verdict::Retry(why) = verdict {
                    panic!("retry: {why}");
                }
                black_box(verdict);
            }
        })
    });
    let clone = median(|| timed(|| drop(black_box(event.clone()))));
    // Packing the output into aggregates for one shard, plain and compressed (ADR 0022), and
    // the next stage's unpacking of them: not in `handle` (the ports are in memory here).
    let one_shard = ShardMap::new(vec![0]);
    let pack_with = |compress: bool| {
        median(|| timed(|| drop(black_box(pack(&one_shard, &published, compress)))))
    };
    let (packed_plain, packed_compressed) = (pack_with(false), pack_with(true));
    let unpack_with = |compress: bool| {
        let aggregates: Vec<Vec<u8>> = pack(&one_shard, &published, compress)
            .into_iter()
            .map(|(a, _)| a.data)
            .collect();
        let bytes: usize = aggregates.iter().map(Vec::len).sum();
        let time = median(|| {
            timed(|| {
                for a in &aggregates {
                    let opened = kpl::open(a);
                    black_box(kpl::records_of(&opened).unwrap().len());
                }
            })
        });
        (time, bytes)
    };
    let ((unpacked_plain, plain_bytes), (unpacked_compressed, compressed_bytes)) =
        (unpack_with(false), unpack_with(true));
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
                    let Some(Ok(schema)) = schemas.get(&(e.schema_id as u32)) else {
                        continue;
                    };
                    let Some(contract) = schema.contract() else {
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
    let parse_us = report("not in handle: event JSON parse (Lambda)", parse, RECORDS);
    report("  the same through serde alone", parse_serde, RECORDS);
    eprintln!(
        "  event parse + Validator::handle: {:.3} µs/record (target 1.7)",
        parse_us + us
    );
    report("not in handle: KinesisEvent clone (bench)", clone, RECORDS);
    let out = published.len();
    report(
        "not in handle: pack the output, plain KPL",
        packed_plain,
        out,
    );
    report("  the same, compressed (ADR 0022)", packed_compressed, out);
    report("next stage: open + deaggregate, plain", unpacked_plain, out);
    report("  the same, compressed", unpacked_compressed, out);
    eprintln!(
        "  aggregates: {plain_bytes} bytes plain, {compressed_bytes} compressed ({:.2}x), {:.1} -> {:.1} bytes per record",
        plain_bytes as f64 / compressed_bytes.max(1) as f64,
        plain_bytes as f64 / out.max(1) as f64,
        compressed_bytes as f64 / out.max(1) as f64,
    );
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
