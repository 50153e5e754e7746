//! The aggregator's batch handler: decode, park the unusable, drop copies by their origins'
//! marks, pre-aggregate, one conditional write per view item that skips what the item
//! already holds, then one write of the shard's marks (ADR 0009 A, ADR 0010).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::streams::KinesisEventResponse;
use riffle_codec::source::SchemaSource;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_runtime::KinesisEvent;
use riffle_runtime::{HandlerError, KinesisHandler};
use riffle_telemetry::Metrics;
use tokio::task::JoinSet;

use riffle_stage::Rejects;
use riffle_stage::dead_letter::{park, park_message};
use riffle_stage::decode::{DecodedBatch, decode_batch};

use crate::AggregatorError;
use riffle_stage::dedup::{Position, origin_of, record_positions, redriven_elsewhere};
use riffle_stage::marks::{MarkStore, Marks, Ticket};

use crate::aggregate::{Contribution, Point, ViewKey, ViewRow, apply, pre_aggregate};
use crate::store::{Saved, ViewStore};

/// The `Service` dimension of the aggregator's metrics.
pub const SERVICE: &str = "aggregator";
/// View items written at the same time; beyond this, more concurrency only buys throttling.
pub const MAX_CONCURRENT_WRITES: usize = 16;
/// Read-merge-write rounds per item before the batch gives up (and Lambda retries it).
pub const MAX_WRITE_ATTEMPTS: u32 = 8;

pub use riffle_view::{DEFAULT_WINDOW_SECS, window_lengths};

/// What one batch did, for tests and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Records sent to the dead-letter queue.
    pub parked: usize,
    /// Records dropped as copies: not above their origin's mark (a producer retry, an
    /// upstream re-publish, or a redelivery after the batch's marks were written).
    pub duplicates: usize,
    /// Records the view items already held (a redelivery of records applied before).
    pub replayed: usize,
    /// View items written.
    pub items_written: usize,
    /// Writes that lost a race and were redone.
    pub conflicts: u32,
    /// Marks items written (one per input shard whose marks moved).
    pub mark_writes: usize,
    /// Time from ingest to the view for the events this batch applied, at the 5th, 10th,
    /// ..., 100th percentile (empty when it applied none): a fixed number of samples per
    /// batch, so the metric costs the same whatever the batch size.
    pub ingest_to_view_ms: Vec<u64>,
}

/// Percentiles [`BatchReport::ingest_to_view_ms`] reports.
pub const LATENCY_QUANTILES: usize = 20;

/// A usable record of the batch, before its claim is known.
struct Candidate<'a> {
    agg_key: &'a str,
    window_start: i64,
    metric: f64,
    window_secs: u32,
    shard: u32,
    position: Position,
    ingest_time: i64,
}

/// What writing one item did.
struct ItemDone {
    conflicts: u32,
    written: bool,
    skipped: usize,
    /// Indexes (into the batch's admitted records) of the records the item now holds.
    records: Vec<u32>,
}

/// The aggregator: folds `enriched` events into the DynamoDB view.
pub struct Aggregator<S, V, M, D> {
    codec: EnvelopeCodec,
    schemas: SchemaCache<S>,
    store: Arc<V>,
    marks: Marks<M>,
    dead_letters: D,
    windows: HashMap<String, u32>,
    ttl_days: u32,
}

impl<S, V, M, D> std::fmt::Debug for Aggregator<S, V, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("envelope_id", &self.codec.id())
            .field("ttl_days", &self.ttl_days)
            .finish_non_exhaustive()
    }
}

impl<S: SchemaSource, V: ViewStore, M: MarkStore, D: Rejects> Aggregator<S, V, M, D> {
    /// An aggregator reading envelopes with `codec` (other envelope versions come from
    /// `schemas`), dropping copies by the origin marks in `marks`, writing items that
    /// expire `ttl_days` after their window.
    pub fn new(
        codec: EnvelopeCodec,
        schemas: SchemaCache<S>,
        store: V,
        marks: Marks<M>,
        dead_letters: D,
        windows: HashMap<String, u32>,
        ttl_days: u32,
    ) -> Self {
        Self {
            codec,
            schemas,
            store: Arc::new(store),
            marks,
            dead_letters,
            windows,
            ttl_days,
        }
    }

    /// Handles one Lambda batch: `Ok` with no item failures once every record is in the
    /// view, parked or dropped as a copy; `Err` (the whole batch is retried) when the
    /// view, the marks or the queue could not be written.
    ///
    /// # Errors
    /// See [`AggregatorError::retryable`].
    pub async fn handle_batch(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, AggregatorError> {
        let started = Instant::now();
        let mut metrics = Metrics::new(SERVICE);
        let result = self
            .process(&event, chrono::Utc::now().timestamp_millis())
            .await;
        match &result {
            Ok(report) => {
                metrics.count("RecordsIn", report.records as u64);
                metrics.count("RecordsParked", report.parked as u64);
                metrics.count("DuplicatesDropped", report.duplicates as u64);
                metrics.count("RecordsReplayed", report.replayed as u64);
                metrics.count("ViewItemsWritten", report.items_written as u64);
                metrics.count("ViewWriteConflicts", u64::from(report.conflicts));
                metrics.count("MarkWrites", report.mark_writes as u64);
                for ms in &report.ingest_to_view_ms {
                    metrics.millis("IngestToViewMs", *ms as f64);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retryable = e.retryable(), records = event.records.len(), "batch failed");
                metrics.count("BatchesFailed", 1);
            }
        }
        metrics.millis("BatchMs", started.elapsed().as_secs_f64() * 1000.0);
        metrics.flush();
        result.map(|_| KinesisEventResponse::default())
    }

    /// [`Aggregator::handle_batch`] at a given time, reporting what it did.
    ///
    /// # Errors
    /// As [`Aggregator::handle_batch`].
    pub async fn process(
        &self,
        event: &KinesisEvent,
        now_ms: i64,
    ) -> Result<BatchReport, AggregatorError> {
        let DecodedBatch {
            records,
            mut parked,
        } = decode_batch(SERVICE, &self.codec, &self.schemas, &event.records).await?;
        let positions = record_positions(&event.records);

        // A batch comes from one shard, so this list nearly always has one entry.
        let mut shards: Vec<String> = Vec::new();
        let mut candidates = Vec::with_capacity(records.len());
        let mut origins = Vec::with_capacity(records.len());
        let mut elsewhere = 0;
        for decoded in &records {
            if redriven_elsewhere(&decoded.envelope, SERVICE) {
                elsewhere += 1;
                continue;
            }
            let Some(enrichment) = decoded.envelope.enrichment.as_ref() else {
                continue;
            };
            let Some(record) = event.records.get(decoded.index) else {
                continue;
            };
            let problem = if !enrichment.metric.is_finite() {
                // DynamoDB numbers have no NaN or infinity, and one would poison the sum.
                Some((
                    "non_finite_metric",
                    format!(
                        "event {} has metric {}",
                        decoded.envelope.event_id, enrichment.metric
                    ),
                ))
            } else {
                None
            };
            let located = positions
                .get(decoded.index)
                .and_then(|(s, p)| Some((*s, (*p)?)));
            let (shard, position) = match (problem, located) {
                (None, Some(located)) => located,
                (problem, _) => {
                    // Without a position the record could be applied twice; Lambda never
                    // sends one, so it is parked rather than guessed at.
                    let (code, detail) = problem.unwrap_or_else(|| {
                        (
                            "no_position",
                            format!(
                                "sequence number {:?} is not a Kinesis one",
                                record.kinesis.sequence_number
                            ),
                        )
                    });
                    parked.push(
                        park_message(SERVICE, record, code, detail)
                            .with_envelope(&decoded.envelope),
                    );
                    continue;
                }
            };
            let shard_index = match shards.iter().position(|s| s == shard) {
                Some(i) => i,
                None => {
                    shards.push(shard.to_owned());
                    shards.len() - 1
                }
            };
            let subject = decoded.envelope.subject.as_str();
            let window_secs = self.windows.get(subject).copied().unwrap_or_else(|| {
                tracing::warn!(subject, "no contract for subject, using the default window");
                DEFAULT_WINDOW_SECS
            });
            origins.push(origin_of(&decoded.envelope, position));
            candidates.push(Candidate {
                agg_key: &enrichment.agg_key,
                window_start: enrichment.window_start,
                metric: enrichment.metric,
                window_secs,
                shard: u32::try_from(shard_index).unwrap_or(u32::MAX),
                position,
                ingest_time: decoded.envelope.ingest_time,
            });
        }

        // Parked first: if the queue fails, nothing has been applied yet, so the retry of
        // this batch does not count anything twice.
        let not_parked = park(&self.dead_letters, &parked).await?;
        if not_parked > 0 {
            return Err(AggregatorError::NotParked { count: not_parked });
        }

        let mut report = BatchReport {
            records: event.records.len(),
            parked: parked.len(),
            duplicates: elsewhere,
            ..BatchReport::default()
        };
        let shard_names: Vec<&str> = shards.iter().map(String::as_str).collect();
        let mut gate = self
            .marks
            .open(SERVICE, &shard_names)
            .await
            .map_err(AggregatorError::Marks)?;
        let mut tickets: Vec<Ticket> = Vec::with_capacity(candidates.len());
        let mut ingested: Vec<i64> = Vec::with_capacity(candidates.len());
        let mut points = Vec::with_capacity(candidates.len());
        for (c, (origin, seq)) in candidates.iter().zip(&origins) {
            let shard = shards.get(c.shard as usize).map_or("", String::as_str);
            let Some(ticket) = gate.admit(shard, origin, *seq) else {
                report.duplicates += 1;
                continue;
            };
            points.push(Point {
                agg_key: c.agg_key,
                window_start: c.window_start,
                metric: c.metric,
                window_secs: c.window_secs,
                shard: c.shard,
                position: c.position,
                record: u32::try_from(tickets.len()).unwrap_or(u32::MAX),
            });
            tickets.push(ticket);
            ingested.push(c.ingest_time);
        }
        if report.duplicates > 0 {
            tracing::info!(
                duplicates = report.duplicates,
                "copies not above their origin's mark dropped"
            );
        }

        let contributions = pre_aggregate(points);
        let keys: Vec<ViewKey> = contributions.keys().cloned().collect();
        let mut current = self.store.load(&keys).await?;
        let shards: Arc<[String]> = shards.into();

        let mut tasks = JoinSet::new();
        let mut done: Vec<u32> = Vec::with_capacity(candidates.len());
        let mut failed: Option<AggregatorError> = None;
        for (key, contribution) in contributions {
            while tasks.len() >= MAX_CONCURRENT_WRITES && failed.is_none() {
                record_done(tasks.join_next().await, &mut report, &mut done, &mut failed);
            }
            if failed.is_some() {
                break;
            }
            let stored = current.remove(&key);
            let store = Arc::clone(&self.store);
            let shards = Arc::clone(&shards);
            let ttl_days = self.ttl_days;
            tasks.spawn(async move {
                write_item(
                    &*store,
                    key,
                    stored,
                    contribution,
                    &shards,
                    now_ms,
                    ttl_days,
                )
                .await
            });
        }
        // On a failure the writes in flight still finish; the marks are not written, so the
        // retry admits the batch again and the items' position guards skip what landed.
        while let Some(joined) = tasks.join_next().await {
            record_done(Some(joined), &mut report, &mut done, &mut failed);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for i in done {
            if let Some(ticket) = tickets.get(i as usize) {
                gate.done(*ticket);
            }
        }
        let committed = self
            .marks
            .commit(SERVICE, &mut gate, now_ms.div_euclid(1000))
            .await
            .map_err(AggregatorError::Marks)?;
        report.mark_writes = committed.writes;
        report.ingest_to_view_ms = quantiles(
            chrono::Utc::now().timestamp_millis(),
            &mut ingested,
            LATENCY_QUANTILES,
        );
        if committed.evicted > 0 {
            tracing::warn!(
                evicted = committed.evicted,
                "origin marks dropped past the per-shard cap"
            );
        }
        Ok(report)
    }
}

impl<S, V, M, D> KinesisHandler for Aggregator<S, V, M, D>
where
    S: SchemaSource + 'static,
    V: ViewStore,
    M: MarkStore,
    D: Rejects + 'static,
{
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        self.handle_batch(event).await.map_err(Into::into)
    }
}

/// Ages at `now_ms` of the times in `times` at `n` evenly spaced percentiles (the last is
/// the oldest); empty for no times.
fn quantiles(now_ms: i64, times: &mut [i64], n: usize) -> Vec<u64> {
    if times.is_empty() {
        return Vec::new();
    }
    // Newest first: the youngest age first, the oldest last.
    times.sort_unstable_by(|a, b| b.cmp(a));
    (1..=n)
        .map(|q| {
            let rank = (q * times.len()).div_ceil(n).saturating_sub(1);
            let at = times
                .get(rank.min(times.len() - 1))
                .copied()
                .unwrap_or(now_ms);
            u64::try_from(now_ms.saturating_sub(at)).unwrap_or(0)
        })
        .collect()
}

fn record_done(
    joined: Option<Result<Result<ItemDone, AggregatorError>, tokio::task::JoinError>>,
    report: &mut BatchReport,
    done: &mut Vec<u32>,
    failed: &mut Option<AggregatorError>,
) {
    let outcome = match joined {
        None => return,
        Some(Ok(outcome)) => outcome,
        Some(Err(e)) => Err(AggregatorError::Task(e.to_string())),
    };
    match outcome {
        Ok(item) => {
            report.conflicts += item.conflicts;
            report.replayed += item.skipped;
            if item.written {
                report.items_written += 1;
            }
            done.extend(item.records);
        }
        Err(e) => {
            if failed.is_none() {
                *failed = Some(e);
            }
        }
    }
}

/// Merges what `contribution` adds to the item and writes it over the version read,
/// re-reading after each lost race; writes nothing when the item already holds it all.
async fn write_item<V: ViewStore>(
    store: &V,
    key: ViewKey,
    mut stored: Option<ViewRow>,
    contribution: Contribution,
    shards: &[String],
    now_ms: i64,
    ttl_days: u32,
) -> Result<ItemDone, AggregatorError> {
    let records = || contribution.samples.iter().map(|s| s.record).collect();
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let merge = apply(
            &key,
            stored.as_ref(),
            &contribution,
            shards,
            now_ms,
            ttl_days,
        );
        let Some(row) = merge.row else {
            return Ok(ItemDone {
                conflicts: attempt,
                written: false,
                skipped: merge.skipped,
                records: records(),
            });
        };
        match store.save(&row).await? {
            Saved::Written => {
                return Ok(ItemDone {
                    conflicts: attempt,
                    written: true,
                    skipped: merge.skipped,
                    records: records(),
                });
            }
            Saved::Conflict => {
                stored = store.load(std::slice::from_ref(&key)).await?.remove(&key);
            }
        }
    }
    Err(AggregatorError::Contended {
        agg_key: key.agg_key,
        window_start: key.window_start,
        attempts: MAX_WRITE_ATTEMPTS,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use riffle_aws::AwsError;

    use riffle_stage::SqsMessage;
    use riffle_stage::marks::{DEFAULT_MARK_WINDOW, MemoryMarks};
    use riffle_stage::testing::{
        MapSource, Sink, enriched_envelope as envelope, kinesis_event, reject_messages,
    };

    use super::*;
    use crate::aggregate::Aggregate;

    /// The view port in memory, with a rival writer that bumps an item behind our back.
    #[derive(Default)]
    struct MemoryStore {
        items: Mutex<HashMap<ViewKey, ViewRow>>,
        rival_bumps: Mutex<u32>,
        fail_saves: bool,
    }

    impl ViewStore for MemoryStore {
        async fn load(
            &self,
            keys: &[ViewKey],
        ) -> Result<HashMap<ViewKey, ViewRow>, AggregatorError> {
            let items = self.items.lock().unwrap();
            Ok(keys
                .iter()
                .filter_map(|k| items.get(k).map(|r| (k.clone(), r.clone())))
                .collect())
        }

        async fn save(&self, row: &ViewRow) -> Result<Saved, AggregatorError> {
            if self.fail_saves {
                return Err(AggregatorError::View(AwsError::Call {
                    operation: "PutItem",
                    code: "ProvisionedThroughputExceededException".into(),
                    message: String::new(),
                    retryable: true,
                }));
            }
            let mut items = self.items.lock().unwrap();
            let mut bumps = self.rival_bumps.lock().unwrap();
            if *bumps > 0 {
                *bumps -= 1;
                // A rival on another shard adds one value of 100 to the item first.
                let rival = pre_aggregate([Point {
                    agg_key: &row.key.agg_key,
                    window_start: row.key.window_start,
                    metric: 100.0,
                    window_secs: 60,
                    shard: 0,
                    // Later rival writes sit later on the rival's shard.
                    position: Position::new(&(u32::MAX - *bumps).to_string(), 0).unwrap(),
                    record: 0,
                }]);
                let merge = apply(
                    &row.key,
                    items.get(&row.key),
                    &rival[&row.key],
                    &["shardId-rival".to_owned()],
                    0,
                    30,
                );
                items.insert(row.key.clone(), merge.row.unwrap());
            }
            let stored_version = items.get(&row.key).map_or(0, |r| r.version);
            if stored_version + 1 != row.version {
                return Ok(Saved::Conflict);
            }
            items.insert(row.key.clone(), row.clone());
            Ok(Saved::Written)
        }
    }

    type TestAggregator = Aggregator<MapSource, MemoryStore, MemoryMarks, Sink<SqsMessage>>;

    fn aggregator(store: MemoryStore, letters: Sink<SqsMessage>) -> TestAggregator {
        let windows = window_lengths(&riffle_codec::rules::bundled().unwrap());
        Aggregator::new(
            EnvelopeCodec::new(7).unwrap(),
            SchemaCache::new(MapSource::default()),
            store,
            Marks::new(MemoryMarks::default(), DEFAULT_MARK_WINDOW),
            letters,
            windows,
            30,
        )
    }

    /// One record per blob on shard 0, sequence numbers from `first_seq`.
    fn event_at(datas: &[Vec<u8>], first_seq: u64) -> KinesisEvent {
        let mut ev = kinesis_event(datas);
        for (i, r) in ev.records.iter_mut().enumerate() {
            let seq = (first_seq + i as u64).to_string();
            r.kinesis.sequence_number = seq;
        }
        ev
    }

    fn event(datas: &[Vec<u8>]) -> KinesisEvent {
        event_at(datas, 100)
    }

    fn blobs(codec: &EnvelopeCodec, values: &[(&str, f64)]) -> Vec<Vec<u8>> {
        values
            .iter()
            .map(|(k, v)| codec.encode(&envelope(k, *v, 0)).unwrap())
            .collect()
    }

    fn item(agg: &TestAggregator, agg_key: &str, window_start: i64) -> ViewRow {
        agg.store.items.lock().unwrap()[&ViewKey {
            agg_key: agg_key.into(),
            window_start,
        }]
            .clone()
    }

    #[tokio::test]
    async fn batches_add_up_in_the_view() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let first = event_at(
            &[
                codec.encode(&envelope("a", 2.0, 0)).unwrap(),
                codec.encode(&envelope("a", 5.0, 0)).unwrap(),
                codec.encode(&envelope("b", 1.0, 60_000)).unwrap(),
            ],
            100,
        );
        let report = agg.process(&first, 1_000).await.unwrap();
        assert_eq!(report.items_written, 2);
        assert_eq!(report.parked, 0);
        let second = event_at(&blobs(&codec, &[("a", -3.0), ("a", 1.0)]), 200);
        agg.process(&second, 2_000).await.unwrap();

        let a = item(&agg, "a", 0);
        assert_eq!(
            a.aggregate,
            Aggregate {
                count: 4,
                sum: 5.0,
                min: -3.0,
                max: 5.0
            }
        );
        assert_eq!(a.version, 2);
        assert_eq!(a.window_secs, 60);
        assert_eq!(a.updated_at, 2_000);
        assert_eq!(a.expires_at, 60 + 30 * 86_400);
        assert_eq!(item(&agg, "b", 60_000).aggregate.count, 1);
    }

    #[tokio::test]
    async fn lost_races_are_merged_again() {
        let store = MemoryStore {
            rival_bumps: Mutex::new(2),
            ..MemoryStore::default()
        };
        let agg = aggregator(store, Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[codec.encode(&envelope("a", 2.0, 0)).unwrap()]);
        let report = agg.process(&ev, 1).await.unwrap();
        assert_eq!(report.conflicts, 2);
        let a = item(&agg, "a", 0);
        assert_eq!(
            a.aggregate,
            Aggregate {
                count: 3,
                sum: 202.0,
                min: 2.0,
                max: 100.0
            }
        );
    }

    #[tokio::test]
    async fn endless_contention_fails_the_batch_retryably() {
        let store = MemoryStore {
            rival_bumps: Mutex::new(u32::MAX),
            ..MemoryStore::default()
        };
        let agg = aggregator(store, Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[codec.encode(&envelope("a", 2.0, 0)).unwrap()]);
        let err = agg.process(&ev, 1).await.unwrap_err();
        assert!(matches!(
            err,
            AggregatorError::Contended {
                attempts: MAX_WRITE_ATTEMPTS,
                ..
            }
        ));
        assert!(err.retryable());
    }

    #[tokio::test]
    async fn unusable_records_are_parked_and_the_rest_counted() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut plain = envelope("a", 1.0, 0);
        plain.enrichment = None;
        let ev = event(&[
            codec.encode(&envelope("a", 1.0, 0)).unwrap(),
            b"not avro".to_vec(),
            codec.encode(&plain).unwrap(),
            codec.encode(&envelope("a", f64::NAN, 0)).unwrap(),
        ]);
        let report = agg.process(&ev, 1).await.unwrap();
        assert_eq!(report.parked, 3);
        let reasons: Vec<_> = reject_messages(&agg.dead_letters.take())
            .iter()
            .map(|l| l.code.clone())
            .collect();
        assert_eq!(
            reasons,
            vec!["bad_magic", "no_enrichment", "non_finite_metric"]
        );
        assert_eq!(item(&agg, "a", 0).aggregate.count, 1);
    }

    #[tokio::test]
    async fn a_dead_letter_outage_fails_before_any_write() {
        let letters = Sink::new();
        letters.set_refuse(true);
        let agg = aggregator(MemoryStore::default(), letters);
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[codec.encode(&envelope("a", 1.0, 0)).unwrap(), vec![9]]);
        let err = agg.handle_batch(ev).await.unwrap_err();
        assert!(matches!(err, AggregatorError::DeadLetter(_)));
        assert!(err.retryable());
        assert!(agg.store.items.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failing_view_fails_the_batch() {
        let store = MemoryStore {
            fail_saves: true,
            ..MemoryStore::default()
        };
        let agg = aggregator(store, Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let datas: Vec<_> = (0..40)
            .map(|i| codec.encode(&envelope(&format!("k{i}"), 1.0, 0)).unwrap())
            .collect();
        let err = agg.handle_batch(event(&datas)).await.unwrap_err();
        assert!(matches!(err, AggregatorError::View(_)));
        assert!(err.retryable());
    }

    #[tokio::test]
    async fn a_redelivered_batch_changes_nothing() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event_at(&blobs(&codec, &[("a", 1.0), ("a", 2.0), ("b", 4.0)]), 10);
        agg.process(&ev, 1_000).await.unwrap();
        let before = item(&agg, "a", 0);
        let report = agg.process(&ev, 2_000).await.unwrap();
        // The batch's marks were written: every record is a copy now.
        assert_eq!(
            (report.items_written, report.replayed, report.duplicates),
            (0, 0, 3)
        );
        assert_eq!(item(&agg, "a", 0), before);
        // Its second half (bisection), then a range overlapping it and going further.
        agg.process(
            &event_at(&blobs(&codec, &[("a", 2.0), ("b", 4.0)]), 11),
            3_000,
        )
        .await
        .unwrap();
        let overlap = event_at(&blobs(&codec, &[("b", 4.0), ("a", 8.0), ("b", 16.0)]), 12);
        let report = agg.process(&overlap, 4_000).await.unwrap();
        assert_eq!((report.duplicates, report.items_written), (1, 2));
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 11.0);
        assert_eq!(item(&agg, "b", 0).aggregate.sum, 20.0);
        assert_eq!(item(&agg, "a", 0).aggregate.count, 3);
    }

    /// Envelopes of `values` from producer channel `origin`, sequences from `first`.
    fn from_origin(
        codec: &EnvelopeCodec,
        origin: &str,
        first: u64,
        values: &[(&str, f64)],
    ) -> Vec<Vec<u8>> {
        values
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let mut e = envelope(k, *v, 0);
                e.origin = Some(riffle_codec::Origin {
                    id: origin.into(),
                    seq: (first + i as u64).to_string(),
                    sub: 0,
                });
                codec.encode(&e).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_event_again_at_a_new_position_is_dropped() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let first = from_origin(&codec, "p/0", 1, &[("a", 1.0)]);
        let report = agg.process(&event_at(&first, 10), 1_000).await.unwrap();
        assert_eq!(report.mark_writes, 1);
        // The producer retried: the same origin sequence later on the stream, then a new one,
        // and the new one again in the same batch.
        let second = from_origin(&codec, "p/0", 2, &[("a", 2.0)]);
        let retry = [first.clone(), second.clone(), second].concat();
        let report = agg.process(&event_at(&retry, 20), 2_000).await.unwrap();
        assert_eq!((report.duplicates, report.items_written), (2, 1));
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 3.0);
        // Another channel of the same producer has marks of its own.
        let other = from_origin(&codec, "p/1", 1, &[("a", 4.0)]);
        agg.process(&event_at(&other, 30), 3_000).await.unwrap();
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 7.0);
        assert_eq!(agg.marks.store().writes(), 3);
    }

    #[tokio::test]
    async fn a_redelivery_after_a_crash_before_the_marks_is_skipped_by_the_items() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event_at(&blobs(&codec, &[("a", 1.0), ("a", 2.0), ("b", 4.0)]), 10);
        agg.process(&ev, 1_000).await.unwrap();
        // The same view, marks that never got written (the process died before them).
        let crashed = Aggregator {
            marks: Marks::new(MemoryMarks::default(), DEFAULT_MARK_WINDOW),
            ..agg
        };
        let report = crashed.process(&ev, 2_000).await.unwrap();
        assert_eq!(
            (report.items_written, report.replayed, report.duplicates),
            (0, 3, 0)
        );
        assert_eq!(item(&crashed, "a", 0).aggregate.sum, 3.0);
    }

    #[test]
    fn quantiles_are_ages_at_even_percentiles() {
        let mut times: Vec<i64> = (1..=100).collect();
        let q = quantiles(100, &mut times, 4);
        assert_eq!(q, vec![24, 49, 74, 99]);
        assert_eq!(quantiles(5, &mut [5], 3), vec![0, 0, 0]);
        assert!(quantiles(5, &mut [], 3).is_empty());
    }

    #[tokio::test]
    async fn a_failed_view_write_moves_no_mark() {
        let store = MemoryStore {
            fail_saves: true,
            ..MemoryStore::default()
        };
        let agg = aggregator(store, Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event_at(&from_origin(&codec, "p/0", 1, &[("a", 1.0)]), 10);
        agg.process(&ev, 1).await.unwrap_err();
        assert_eq!(agg.marks.store().writes(), 0);
    }

    #[tokio::test]
    async fn kpl_user_records_of_one_sequence_number_count_apart() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        // Three user records of one aggregate share its sequence number.
        let mut ev = event_at(&blobs(&codec, &[("a", 1.0), ("a", 2.0), ("a", 4.0)]), 10);
        for r in &mut ev.records {
            r.kinesis.sequence_number = "10".into();
        }
        agg.process(&ev, 1).await.unwrap();
        agg.process(&ev, 2).await.unwrap();
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 7.0);
    }

    #[tokio::test]
    async fn a_record_without_a_kinesis_position_is_parked() {
        let agg = aggregator(MemoryStore::default(), Sink::new());
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut ev = event(&blobs(&codec, &[("a", 1.0), ("a", 2.0)]));
        ev.records[1].kinesis.sequence_number = "not-a-number".into();
        let report = agg.process(&ev, 1).await.unwrap();
        assert_eq!(report.parked, 1);
        let codes: Vec<_> = reject_messages(&agg.dead_letters.take())
            .iter()
            .map(|m| m.code.clone())
            .collect();
        assert_eq!(codes, vec!["no_position"]);
        assert_eq!(item(&agg, "a", 0).aggregate.sum, 1.0);
    }
}
