//! How long the archiver takes per record, without I/O: `Archiver::process` over a
//! 10,000-record Lambda Kinesis event of enriched envelopes (load generator payloads, enriched
//! as the enricher would from the bundled contracts and the generator's reference catalogue)
//! with the bucket in process memory, then the pure parts alone, to see where the time goes;
//! also the Parquet bytes per record and how long `read_rows` takes to read them back.
//!
//! `cargo bench -p riffle-archiver --bench handler`. Each figure is the median of [`RUNS`]
//! runs after [`WARM_UP`] runs, on one core (a current-thread runtime). Every run writes the
//! same object keys, so the bucket holds one run's objects at a time. The event-id claims and
//! write intents are in process memory too, and emptied before every run, so each run
//! archives every record (the first-delivery path); a redelivery of the whole batch is timed
//! on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use riffle_archive::testing::MemoryBucket;
use riffle_archive::{read_rows, write_rows};
use riffle_archiver::{Archiver, MemoryIntents};
use riffle_codec::datum::to_json;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_loadtest::bench::{
    IDS, Interleaved, RUNS, WARM_UP, enriched_records, event_schemas, load, median,
    registered_schemas, report, timed,
};
use riffle_stage::SqsMessage;
use riffle_stage::decode::decode_batch;
use riffle_stage::marks::{DEFAULT_MARK_WINDOW, Marks, MemoryMarks};
use riffle_stage::testing::{MapSource, Sink, kinesis_event};

const RECORDS: usize = 10_000;
/// How much more than its decode, JSON and Parquet steps together the handler may take.
const TARGET_RATIO: f64 = 1.5;
/// 2026-01-01T01:00:00Z, after every generated event (the rows' `archived_at`).
const NOW_MS: i64 = 1_767_229_200_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = enriched_records(RECORDS, IDS);
    let envelope_bytes: usize = records.iter().map(Vec::len).sum();
    let event = kinesis_event(&records);
    let bucket = MemoryBucket::default();
    let dlq: Sink<SqsMessage> = Sink::new();
    let marks = MemoryMarks::default();
    let archiver = Archiver::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(MapSource::with(registered_schemas(IDS), [])),
        bucket.clone(),
        Marks::new(marks.clone(), DEFAULT_MARK_WINDOW),
        MemoryIntents::default(),
        dlq.clone(),
        "events",
    );
    eprintln!(
        "archiver bench: {RECORDS} enriched records, {:.1} MB of envelopes, {RUNS} runs after {WARM_UP}, load {}",
        envelope_bytes as f64 / 1e6,
        load()
    );

    let mut written = (0, 0);
    let handler = median(|| {
        marks.clear();
        timed(|| {
            let report = runtime.block_on(archiver.process(&event, NOW_MS)).unwrap();
            assert_eq!((report.parked, report.rows), (0, RECORDS));
            written = (report.objects.len(), report.bytes);
        })
    });
    let redelivery = median(|| {
        timed(|| {
            let report = runtime.block_on(archiver.process(&event, NOW_MS)).unwrap();
            assert_eq!((report.rows, report.duplicates), (0, RECORDS));
        })
    });
    assert!(dlq.take().is_empty());
    let objects = bucket.objects();
    let (object_count, parquet_bytes) = written;
    assert_eq!(objects.len(), object_count);
    assert_eq!(objects.values().map(Vec::len).sum::<usize>(), parquet_bytes);

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let cache = SchemaCache::new(MapSource::with(registered_schemas(IDS), []));
    runtime
        .block_on(decode_batch("archiver", &codec, &cache, &event.records))
        .unwrap();
    let mut decode_step = || {
        timed(|| {
            let batch = runtime
                .block_on(decode_batch("archiver", &codec, &cache, &event.records))
                .unwrap();
            black_box(batch);
        })
    };
    let decode = median(&mut decode_step);
    let decoded = runtime
        .block_on(decode_batch("archiver", &codec, &cache, &event.records))
        .unwrap();
    let schemas = event_schemas(IDS);
    let mut json = String::with_capacity(1024);
    let mut render_step = || {
        timed(|| {
            for d in &decoded.records {
                json.clear();
                let schema = &schemas[&(d.envelope.schema_id as u32)];
                to_json(schema, &d.envelope.payload, &mut json).unwrap();
                black_box(&json);
            }
        })
    };
    let render = median(&mut render_step);
    let groups: Vec<_> = objects.values().map(|o| read_rows(o).unwrap()).collect();
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), RECORDS);
    let mut write_step = || {
        timed(|| {
            for rows in &groups {
                black_box(write_rows(rows).unwrap());
            }
        })
    };
    let write = median(&mut write_step);
    let read = median(|| {
        timed(|| {
            for object in objects.values() {
                black_box(read_rows(object).unwrap());
            }
        })
    });
    let clone = median(|| timed(|| drop(black_box(event.clone()))));

    // The handler against its steps, in turns: the machine's speed drifts over the seconds
    // between the figures above, which moved their ratio by a third from one run to the next.
    let steps = {
        let mut process = || {
            marks.clear();
            timed(|| {
                black_box(runtime.block_on(archiver.process(&event, NOW_MS)).unwrap());
            })
        };
        Interleaved::run(&mut [
            &mut process,
            &mut decode_step,
            &mut render_step,
            &mut write_step,
        ])
    };
    assert!(dlq.take().is_empty());

    eprintln!();
    report(
        "Archiver::process (in-process bucket, marks)",
        handler,
        RECORDS,
    );
    report(
        "  the same batch again (every claim applied)",
        redelivery,
        RECORDS,
    );
    report("  decode_batch (envelopes, warm cache)", decode, RECORDS);
    report("  payload to_json", render, RECORDS);
    report("  write_rows (Parquet, snappy)", write, RECORDS);
    report("not in process: read_rows (Parquet back)", read, RECORDS);
    report("not in process: KinesisEvent clone (bench)", clone, RECORDS);
    let ratio = steps.ratio_to_sum(0, &[1, 2, 3]);
    eprintln!(
        "in turns: Archiver::process {:.3} µs/record, its steps {:.3} + {:.3} + {:.3}: {ratio:.2}x their sum (median of the rounds' ratios; target <= {TARGET_RATIO})",
        per_record(steps.timing(0).median),
        per_record(steps.timing(1).median),
        per_record(steps.timing(2).median),
        per_record(steps.timing(3).median),
    );
    eprintln!(
        "\n{object_count} objects, {parquet_bytes} Parquet bytes: {:.1} bytes/record \
         (envelopes {:.1} bytes/record)",
        parquet_bytes as f64 / RECORDS as f64,
        envelope_bytes as f64 / RECORDS as f64,
    );
    eprintln!("load {}", load());
}

fn per_record(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6 / RECORDS as f64
}
