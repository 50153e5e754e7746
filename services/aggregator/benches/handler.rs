//! How long the aggregator takes per record, without I/O: `Aggregator::process` over a
//! 10,000-record Lambda Kinesis event of enriched envelopes (load generator payloads, enriched
//! as the enricher would from the bundled contracts and the generator's reference catalogue)
//! with the view in process memory, then the pure parts alone, to see where the time goes.
//!
//! `cargo bench -p riffle-aggregator --bench handler`. Each figure is the median of [`RUNS`]
//! runs after [`WARM_UP`] runs, on one core (a current-thread runtime). The view is emptied
//! before every run, so every run writes the same new items.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle_aggregator::aggregate::{Point, ViewKey, ViewRow, apply, pre_aggregate};
use riffle_aggregator::store::Saved;
use riffle_aggregator::{Aggregator, AggregatorError, ViewStore, window_lengths};
use riffle_codec::datum::read_record;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::{CompiledSchema, Enrichment, EnvelopeCodec, SchemaCache};
use riffle_loadtest::{Generator, GeneratorConfig, SchemaIds, reference_items};
use riffle_stage::SqsMessage;
use riffle_stage::decode::decode_batch;
use riffle_stage::testing::{MapSource, Sink, kinesis_event};

const RECORDS: usize = 10_000;
const WARM_UP: usize = 3;
const RUNS: usize = 20;
const TTL_DAYS: u32 = 30;
/// 2026-01-01T01:00:00Z, after every generated event.
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

/// The view in process memory, with DynamoDB's conditional-write rule. Clones share it.
#[derive(Clone, Default)]
struct MemoryView {
    items: Arc<Mutex<HashMap<ViewKey, ViewRow>>>,
}

impl MemoryView {
    fn clear(&self) -> usize {
        let mut items = self.items.lock().unwrap();
        let n = items.len();
        items.clear();
        n
    }
}

impl ViewStore for MemoryView {
    async fn load(&self, keys: &[ViewKey]) -> Result<HashMap<ViewKey, ViewRow>, AggregatorError> {
        let items = self.items.lock().unwrap();
        Ok(keys
            .iter()
            .filter_map(|k| items.get(k).map(|r| (k.clone(), r.clone())))
            .collect())
    }

    async fn save(&self, row: &ViewRow) -> Result<Saved, AggregatorError> {
        let mut items = self.items.lock().unwrap();
        let stored = items.get(&row.key).map_or(0, |r| r.version);
        if stored + 1 != row.version {
            return Ok(Saved::Conflict);
        }
        items.insert(row.key.clone(), row.clone());
        Ok(Saved::Written)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = enriched_records(RECORDS);
    let event = kinesis_event(&records);
    let contracts = riffle_codec::rules::bundled().unwrap();
    let view = MemoryView::default();
    let dlq: Sink<SqsMessage> = Sink::new();
    let aggregator = Aggregator::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(registered()),
        view.clone(),
        dlq.clone(),
        window_lengths(&contracts),
        TTL_DAYS,
    );
    eprintln!(
        "aggregator bench: {RECORDS} enriched records, {:.1} MB of envelopes, {RUNS} runs after {WARM_UP}, load {}",
        records.iter().map(Vec::len).sum::<usize>() as f64 / 1e6,
        load()
    );

    let mut items = 0;
    let handler = median(|| {
        let time = timed(|| {
            let report = runtime
                .block_on(aggregator.process(&event, NOW_MS))
                .unwrap();
            assert_eq!(report.parked, 0);
            assert_eq!(report.conflicts, 0);
            items = report.items_written;
        });
        assert_eq!(view.clear(), items);
        assert!(dlq.take().is_empty());
        time
    });

    // The parts, each over the whole batch.
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    let cache = SchemaCache::new(registered());
    let windows = window_lengths(&contracts);
    runtime
        .block_on(decode_batch("aggregator", &codec, &cache, &event.records))
        .unwrap();
    let decode = median(|| {
        timed(|| {
            let batch = runtime
                .block_on(decode_batch("aggregator", &codec, &cache, &event.records))
                .unwrap();
            black_box(batch);
        })
    });
    let decoded = runtime
        .block_on(decode_batch("aggregator", &codec, &cache, &event.records))
        .unwrap();
    let points = || {
        decoded.records.iter().filter_map(|d| {
            let e = d.envelope.enrichment.as_ref()?;
            Some(Point {
                agg_key: &e.agg_key,
                window_start: e.window_start,
                metric: e.metric,
                window_secs: windows[d.envelope.subject.as_str()],
            })
        })
    };
    let pre = median(|| timed(|| drop(black_box(pre_aggregate(points())))));
    let contributions = pre_aggregate(points());
    let merge = median(|| {
        timed(|| {
            for (key, contribution) in &contributions {
                black_box(apply(key, None, contribution, NOW_MS, TTL_DAYS));
            }
        })
    });
    let clone = median(|| timed(|| drop(black_box(event.clone()))));

    eprintln!();
    report("Aggregator::process (in-process view)", handler, RECORDS);
    report("  decode_batch (envelopes, warm cache)", decode, RECORDS);
    report("  pre_aggregate (points -> items)", pre, RECORDS);
    report("  apply (new rows; per item, not record)", merge, items);
    eprintln!(
        "  {items} view items per batch ({:.1} records per item)",
        RECORDS as f64 / items as f64
    );
    report("not in process: KinesisEvent clone (bench)", clone, RECORDS);
    eprintln!("\nload {}", load());
}
