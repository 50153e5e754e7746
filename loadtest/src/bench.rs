//! What the stages' handler benchmarks share: the timing loop (warm-up, then the median and
//! the fastest of [`RUNS`] runs), the result line, the load average, the registry ids and
//! schema texts they register, and the `enriched` stream's records built from generated events.
//!
//! Benchmarks only: a bench that cannot build its fixtures has failed, so the helpers panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use riffle_codec::datum::read_record;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::{CompiledSchema, Enrichment, EnvelopeCodec};

use crate::{Generator, GeneratorConfig, SchemaIds, reference_items};

/// Untimed runs before the timed ones, to fill caches and let allocations settle.
pub const WARM_UP: usize = 3;
/// Timed runs per figure.
pub const RUNS: usize = 20;

/// The event schemas, as the registry serves them.
pub const ORDER_SCHEMA: &str = include_str!("../../schemas/events/order_placed.avsc");
/// See [`ORDER_SCHEMA`].
pub const PAGE_VIEW_SCHEMA: &str = include_str!("../../schemas/events/page_view.avsc");
/// See [`ORDER_SCHEMA`].
pub const SENSOR_SCHEMA: &str = include_str!("../../schemas/events/sensor_reading.avsc");

/// The registry ids the benches serve the schemas under.
pub const IDS: SchemaIds = SchemaIds {
    envelope: 1,
    order: 2,
    page_view: 3,
    sensor: 4,
};

/// The envelope and the three event schemas under `ids`, as `(id, text)` for a map source.
pub fn registered_schemas(ids: SchemaIds) -> [(u32, &'static str); 4] {
    [
        (ids.envelope, ENVELOPE_SCHEMA),
        (ids.order, ORDER_SCHEMA),
        (ids.page_view, PAGE_VIEW_SCHEMA),
        (ids.sensor, SENSOR_SCHEMA),
    ]
}

/// The three event schemas under `ids`, compiled.
pub fn event_schemas(ids: SchemaIds) -> HashMap<u32, CompiledSchema> {
    [
        (ids.order, ORDER_SCHEMA),
        (ids.page_view, PAGE_VIEW_SCHEMA),
        (ids.sensor, SENSOR_SCHEMA),
    ]
    .into_iter()
    .map(|(id, text)| (id, CompiledSchema::parse(id, text).unwrap()))
    .collect()
}

/// The median and the fastest of [`RUNS`] timings.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The median run.
    pub median: Duration,
    /// The fastest run.
    pub min: Duration,
}

/// Median and fastest of [`RUNS`] timings of `run`, after [`WARM_UP`] untimed ones; `run`
/// returns the time of the part it wants measured. The machine is shared, so the fastest run
/// (the least disturbed) is shown beside the median.
pub fn median(mut run: impl FnMut() -> Duration) -> Timing {
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

/// Timings of several variants of one job, run in turns (each round runs every variant
/// once, after [`WARM_UP`] untimed rounds), so a change in the machine's load hits them all
/// alike; with [`Interleaved::cost`], each variant's extra time over another's as the median
/// of the per-round ratios, which a noisy neighbour moves far less than a ratio of medians.
pub struct Interleaved {
    rounds: Vec<Vec<Duration>>,
}

impl Interleaved {
    /// Runs `variants` in turns for [`RUNS`] rounds.
    pub fn run(variants: &mut [&mut dyn FnMut() -> Duration]) -> Self {
        for _ in 0..WARM_UP {
            for v in variants.iter_mut() {
                v();
            }
        }
        let rounds = (0..RUNS)
            .map(|_| variants.iter_mut().map(|v| v()).collect())
            .collect();
        Interleaved { rounds }
    }

    /// Median and fastest of variant `i`.
    pub fn timing(&self, i: usize) -> Timing {
        let mut times: Vec<Duration> = self.rounds.iter().map(|r| r[i]).collect();
        times.sort();
        Timing {
            median: times[times.len() / 2],
            min: times[0],
        }
    }

    /// Variant `i`'s extra time over variant `base`, in per cent: the median of the rounds'
    /// ratios.
    pub fn cost(&self, i: usize, base: usize) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| r[i].as_secs_f64() / r[base].as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        (ratios[ratios.len() / 2] - 1.0) * 100.0
    }

    /// Variant `i`'s time over the sum of `parts`' times: the median of the rounds' ratios
    /// (a whole against the steps it is made of).
    pub fn ratio_to_sum(&self, i: usize, parts: &[usize]) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| {
                let sum: f64 = parts.iter().map(|&p| r[p].as_secs_f64()).sum();
                r[i].as_secs_f64() / sum
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    }
}

/// How long `f` took.
pub fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// One result line on stderr: µs per record (median, fastest) and records per second
/// (median). Returns the median µs per record, for benches that compare it with a target.
pub fn report(what: &str, time: Timing, records: usize) -> f64 {
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    let us = per_record(time.median);
    eprintln!(
        "{what:<44} {us:>7.3} µs/record (min {:>6.3}) {:>9.0} records/s",
        per_record(time.min),
        1e6 / us,
    );
    us
}

/// The load average, to judge how much other work disturbed the figures.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `n` records of the `enriched` stream (envelope version `ids.envelope`): valid generated
/// events (1% naming a reference item the catalogue lacks) stamped by the validator and the
/// enricher, with the enrichment the enricher derives from the bundled contracts and the
/// generator's catalogue.
pub fn enriched_records(n: usize, ids: SchemaIds) -> Vec<Vec<u8>> {
    let config = GeneratorConfig {
        seed: 42,
        invalid_ratio: 0.0,
        missing_reference_ratio: 0.01,
        ..GeneratorConfig::default()
    };
    let events = Generator::new(config, ids).unwrap().batch(n).unwrap();
    let codec = EnvelopeCodec::new(ids.envelope).unwrap();
    let contracts = riffle_codec::rules::bundled().unwrap();
    let schemas = event_schemas(ids);
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
                late: false,
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
