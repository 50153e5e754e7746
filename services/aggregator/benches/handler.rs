//! How long the aggregator takes per record, without I/O: `Aggregator::process` over a
//! 10,000-record Lambda Kinesis event of enriched envelopes (load generator payloads, enriched
//! as the enricher would from the bundled contracts and the generator's reference catalogue)
//! with the view and the event-id claims in process memory, then the pure parts alone, to see
//! where the time goes.
//!
//! `cargo bench -p riffle-aggregator --bench handler`. Each figure is the median of [`RUNS`]
//! runs after [`WARM_UP`] runs, on one core (a current-thread runtime). The view is emptied
//! before every run, so every run writes the same new items.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use riffle_aggregator::aggregate::{Point, ViewKey, ViewRow, apply, pre_aggregate};
use riffle_aggregator::store::Saved;
use riffle_aggregator::{Aggregator, AggregatorError, ViewStore, window_lengths};
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_loadtest::bench::{
    IDS, RUNS, WARM_UP, enriched_records, load, median, registered_schemas, report, timed,
};
use riffle_stage::SqsMessage;
use riffle_stage::decode::decode_batch;
use riffle_stage::dedup::Position;
use riffle_stage::marks::{DEFAULT_MARK_WINDOW, Marks, MemoryMarks};
use riffle_stage::testing::{MapSource, Sink, kinesis_event};

const RECORDS: usize = 10_000;
const TTL_DAYS: u32 = 30;
/// 2026-01-01T01:00:00Z, after every generated event.
const NOW_MS: i64 = 1_767_229_200_000;

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

    async fn publish_watermark(
        &self,
        _shard: &str,
        _time: i64,
        _lateness: &std::collections::BTreeMap<String, i64>,
        _now_ms: i64,
    ) -> Result<(), AggregatorError> {
        Ok(())
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = enriched_records(RECORDS, IDS);
    let event = kinesis_event(&records);
    let contracts = riffle_codec::rules::bundled().unwrap();
    let view = MemoryView::default();
    let dlq: Sink<SqsMessage> = Sink::new();
    let marks = MemoryMarks::default();
    let aggregator = Aggregator::new(
        EnvelopeCodec::new(IDS.envelope).unwrap(),
        SchemaCache::new(MapSource::with(registered_schemas(IDS), [])),
        view.clone(),
        // Marks are cleared before every run, so each run handles the batch as new.
        Marks::new(marks.clone(), DEFAULT_MARK_WINDOW),
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
        marks.clear();
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
    let cache = SchemaCache::new(MapSource::with(registered_schemas(IDS), []));
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
            let seq = &event.records[d.index].kinesis.sequence_number;
            Some(Point {
                agg_key: &e.agg_key,
                window_start: e.window_start,
                metric: e.metric,
                window_secs: windows[&*d.envelope.subject],
                shard: 0,
                position: Position::new(seq, 0)?,
                record: d.index as u32,
            })
        })
    };
    let pre = median(|| timed(|| drop(black_box(pre_aggregate(points())))));
    let contributions = pre_aggregate(points());
    let shards = vec!["shardId-000000000000".to_owned()];
    let merge = median(|| {
        timed(|| {
            for (key, contribution) in &contributions {
                black_box(apply(key, None, contribution, &shards, NOW_MS, TTL_DAYS));
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
