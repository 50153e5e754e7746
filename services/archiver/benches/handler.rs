//! How long the archiver takes per record, without I/O: `Archiver::process` over a
//! 10,000-record Lambda Kinesis event of enriched envelopes (load generator payloads, enriched
//! as the enricher would from the bundled contracts and the generator's reference catalogue)
//! with the bucket in process memory, then the pure parts alone, to see where the time goes;
//! also the Parquet bytes per record and how long `read_rows` takes to read them back.
//!
//! `cargo bench -p riffle-archiver --bench handler`. Each figure is the median of [`RUNS`]
//! runs after [`WARM_UP`] runs, on one core (a current-thread runtime). Every run writes the
//! same object keys, so the bucket holds one run's objects at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle_archiver::{Archiver, ArchiverError, ObjectStore, read_rows, write_rows};
use riffle_codec::datum::{read_record, to_json};
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::{CompiledSchema, Enrichment, EnvelopeCodec, SchemaCache};
use riffle_loadtest::{Generator, GeneratorConfig, SchemaIds, reference_items};
use riffle_stage::SqsMessage;
use riffle_stage::decode::decode_batch;
use riffle_stage::testing::{MapSource, Sink, kinesis_event};

const RECORDS: usize = 10_000;
const WARM_UP: usize = 3;
const RUNS: usize = 20;
/// 2026-01-01T01:00:00Z, after every generated event (the rows' `archived_at`).
const NOW_MS: i64 = 1_767_229_200_000;

const ORDER_SCHEMA: &str = include_str!("../../../schemas/events/order_placed.avsc");
const PAGE_VIEW_SCHEMA: &str = include_str!("../../../schemas/events/page_view.avsc");
const SENSOR_SCHEMA: &str = include_str!("../../../schemas/events/sensor_reading.avsc");

/// The registry ids the map source serves the schemas under.
const IDS: SchemaIds = SchemaIds {
    envelope: 1,
    order: 2,
    page_view: 3,
    sensor: 4,
};

/// Median and fastest of `RUNS` timings of `run`, after `WARM_UP` untimed ones. The machine
/// is shared, so the fastest run (the least disturbed) is shown beside the median.
fn median(mut run: impl FnMut() -> Duration) -> Timing {
    for _ in 0..WARM_UP {
        run();
    }
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    Timing {
        median: times[RUNS / 2],
        min: times[0],
    }
}

#[derive(Clone, Copy)]
struct Timing {
    median: Duration,
    min: Duration,
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// One result line: µs per record (median, fastest) and records per second (median).
fn report(what: &str, time: Timing, records: usize) {
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    let us = per_record(time.median);
    eprintln!(
        "{what:<44} {us:>7.3} µs/record (min {:>6.3}) {:>9.0} records/s",
        per_record(time.min),
        1e6 / us,
    );
}

/// The load average, to judge how much other work disturbed the figures.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The envelope and the three event schemas under [`IDS`], as the registry serves them.
fn registered() -> MapSource {
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

/// `n` records of the `enriched` stream: valid generated events (1% naming a reference item
/// the catalogue lacks) stamped by the validator and the enricher, with the enrichment the
/// enricher derives from the bundled contracts and the generator's catalogue.
fn enriched_records(n: usize) -> Vec<Vec<u8>> {
    let config = GeneratorConfig {
        seed: 42,
        invalid_ratio: 0.0,
        missing_reference_ratio: 0.01,
        ..GeneratorConfig::default()
    };
    let events = Generator::new(config, IDS).unwrap().batch(n).unwrap();
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let contracts = riffle_codec::rules::bundled().unwrap();
    let schemas: HashMap<u32, CompiledSchema> = [
        (IDS.order, ORDER_SCHEMA),
        (IDS.page_view, PAGE_VIEW_SCHEMA),
        (IDS.sensor, SENSOR_SCHEMA),
    ]
    .into_iter()
    .map(|(id, text)| (id, CompiledSchema::parse(id, text).unwrap()))
    .collect();
    let catalogue: HashMap<String, HashMap<String, String>> = reference_items()
        .into_iter()
        .map(|item| (item.pk, item.attributes.into_iter().collect()))
        .collect();
    let none = HashMap::new();
    events
        .iter()
        .map(|e| {
            let mut envelope = codec.decode(&e.record).unwrap();
            let schema = &schemas[&(envelope.schema_id as u32)];
            let record = read_record(schema, &envelope.payload).unwrap();
            let spec = contracts[&envelope.subject].enrich.as_ref().unwrap();
            let reference = spec.lookup_key(&record).and_then(|k| catalogue.get(&k));
            let attributes = reference.unwrap_or(&none);
            let enrichment = Enrichment {
                agg_key: spec.agg_key(&record, attributes),
                metric: spec.metric(&record).unwrap_or(0.0),
                window_start: spec.window_start(envelope.event_time),
                reference_found: spec.lookup.is_none() || reference.is_some(),
                attributes: attributes.clone(),
            };
            envelope.enrichment = Some(enrichment);
            envelope
                .stage_times
                .insert("validator".into(), e.ingest_time + 40);
            envelope
                .stage_times
                .insert("enricher".into(), e.ingest_time + 80);
            codec.encode(&envelope).unwrap()
        })
        .collect()
}

/// The bucket in process memory: keeps every object's bytes by key. Clones share it.
#[derive(Clone, Default)]
struct MemoryBucket {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryBucket {
    fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().unwrap().clone()
    }
}

impl ObjectStore for MemoryBucket {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), ArchiverError> {
        self.objects.lock().unwrap().insert(key.to_owned(), body);
        Ok(())
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = enriched_records(RECORDS);
    let envelope_bytes: usize = records.iter().map(Vec::len).sum();
    let event = kinesis_event(&records);
    let bucket = MemoryBucket::default();
    let dlq: Sink<SqsMessage> = Sink::new();
    let archiver = Archiver::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(registered()),
        bucket.clone(),
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
        timed(|| {
            let report = runtime.block_on(archiver.process(&event, NOW_MS)).unwrap();
            assert_eq!((report.parked, report.rows), (0, RECORDS));
            written = (report.objects.len(), report.bytes);
        })
    });
    assert!(dlq.take().is_empty());
    let objects = bucket.objects();
    let (object_count, parquet_bytes) = written;
    assert_eq!(objects.len(), object_count);
    assert_eq!(objects.values().map(Vec::len).sum::<usize>(), parquet_bytes);

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let cache = SchemaCache::new(registered());
    runtime
        .block_on(decode_batch("archiver", &codec, &cache, &event.records))
        .unwrap();
    let decode = median(|| {
        timed(|| {
            let batch = runtime
                .block_on(decode_batch("archiver", &codec, &cache, &event.records))
                .unwrap();
            black_box(batch);
        })
    });
    let decoded = runtime
        .block_on(decode_batch("archiver", &codec, &cache, &event.records))
        .unwrap();
    let schemas: HashMap<u32, CompiledSchema> = [
        (IDS.order, ORDER_SCHEMA),
        (IDS.page_view, PAGE_VIEW_SCHEMA),
        (IDS.sensor, SENSOR_SCHEMA),
    ]
    .into_iter()
    .map(|(id, text)| (id, CompiledSchema::parse(id, text).unwrap()))
    .collect();
    let render = median(|| {
        let mut json = String::with_capacity(1024);
        timed(|| {
            for d in &decoded.records {
                json.clear();
                let schema = &schemas[&(d.envelope.schema_id as u32)];
                to_json(schema, &d.envelope.payload, &mut json).unwrap();
                black_box(&json);
            }
        })
    });
    let groups: Vec<_> = objects.values().map(|o| read_rows(o).unwrap()).collect();
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), RECORDS);
    let write = median(|| {
        timed(|| {
            for rows in &groups {
                black_box(write_rows(rows).unwrap());
            }
        })
    });
    let read = median(|| {
        timed(|| {
            for object in objects.values() {
                black_box(read_rows(object).unwrap());
            }
        })
    });
    let clone = median(|| timed(|| drop(black_box(event.clone()))));

    eprintln!();
    report("Archiver::process (in-process bucket)", handler, RECORDS);
    report("  decode_batch (envelopes, warm cache)", decode, RECORDS);
    report("  payload to_json", render, RECORDS);
    report("  write_rows (Parquet, snappy)", write, RECORDS);
    report("not in process: read_rows (Parquet back)", read, RECORDS);
    report("not in process: KinesisEvent clone (bench)", clone, RECORDS);
    eprintln!(
        "\n{object_count} objects, {parquet_bytes} Parquet bytes: {:.1} bytes/record \
         (envelopes {:.1} bytes/record)",
        parquet_bytes as f64 / RECORDS as f64,
        envelope_bytes as f64 / RECORDS as f64,
    );
    eprintln!("load {}", load());
}
