//! The aggregator's batch handler: decode, park the unusable, pre-aggregate, one
//! conditional write per view item.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use riffle_codec::rules::Contract;
use riffle_codec::source::SchemaSource;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_runtime::{HandlerError, KinesisHandler};
use riffle_telemetry::Metrics;
use tokio::task::JoinSet;

use riffle_stage::Rejects;
use riffle_stage::dead_letter::{park, park_message};
use riffle_stage::decode::{DecodedBatch, decode_batch};

use crate::AggregatorError;
use crate::aggregate::{Contribution, Point, ViewKey, ViewRow, apply, pre_aggregate};
use crate::store::{Saved, ViewStore};

/// The `Service` dimension of the aggregator's metrics.
pub const SERVICE: &str = "aggregator";
/// View items written at the same time; beyond this, more concurrency only buys throttling.
pub const MAX_CONCURRENT_WRITES: usize = 16;
/// Read-merge-write rounds per item before the batch gives up (and Lambda retries it).
pub const MAX_WRITE_ATTEMPTS: u32 = 8;
/// Window length for a subject without a bundled contract. The envelope does not carry the
/// window length, and the enricher only enriches subjects it has a contract for, so this is
/// a fallback that should never be used.
pub const DEFAULT_WINDOW_SECS: u32 = 60;

/// Window length per subject, from the bundled subject contracts.
pub fn window_lengths(contracts: &HashMap<String, Contract>) -> HashMap<String, u32> {
    contracts
        .iter()
        .filter_map(|(subject, c)| c.enrich.as_ref().map(|e| (subject.clone(), e.window_secs)))
        .collect()
}

/// What one batch did, for tests and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Records sent to the dead-letter queue.
    pub parked: usize,
    /// View items written.
    pub items_written: usize,
    /// Writes that lost a race and were redone.
    pub conflicts: u32,
}

/// The aggregator: folds `enriched` events into the DynamoDB view.
pub struct Aggregator<S, V, D> {
    codec: EnvelopeCodec,
    schemas: SchemaCache<S>,
    store: Arc<V>,
    dead_letters: D,
    windows: HashMap<String, u32>,
    ttl_days: u32,
}

impl<S, V, D> std::fmt::Debug for Aggregator<S, V, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("envelope_id", &self.codec.id())
            .field("ttl_days", &self.ttl_days)
            .finish_non_exhaustive()
    }
}

impl<S: SchemaSource, V: ViewStore, D: Rejects> Aggregator<S, V, D> {
    /// An aggregator reading envelopes with `codec` (other envelope versions come from
    /// `schemas`), writing items that expire `ttl_days` after their window.
    pub fn new(
        codec: EnvelopeCodec,
        schemas: SchemaCache<S>,
        store: V,
        dead_letters: D,
        windows: HashMap<String, u32>,
        ttl_days: u32,
    ) -> Self {
        Self {
            codec,
            schemas,
            store: Arc::new(store),
            dead_letters,
            windows,
            ttl_days,
        }
    }

    /// Handles one Lambda batch: `Ok` with no item failures once every record is in the
    /// view or parked; `Err` (the whole batch is retried) when the view or the queue could
    /// not be written.
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
                metrics.count("ViewItemsWritten", report.items_written as u64);
                metrics.count("ViewWriteConflicts", u64::from(report.conflicts));
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

        let mut points = Vec::with_capacity(records.len());
        for decoded in &records {
            let Some(enrichment) = decoded.envelope.enrichment.as_ref() else {
                continue;
            };
            if !enrichment.metric.is_finite() {
                // DynamoDB numbers have no NaN or infinity, and one would poison the sum.
                if let Some(record) = event.records.get(decoded.index) {
                    let message = park_message(
                        SERVICE,
                        record,
                        "non_finite_metric",
                        format!(
                            "event {} has metric {}",
                            decoded.envelope.event_id, enrichment.metric
                        ),
                    );
                    parked.push(message.with_envelope(&decoded.envelope));
                }
                continue;
            }
            let subject = decoded.envelope.subject.as_str();
            let window_secs = self.windows.get(subject).copied().unwrap_or_else(|| {
                tracing::warn!(subject, "no contract for subject, using the default window");
                DEFAULT_WINDOW_SECS
            });
            points.push(Point {
                agg_key: &enrichment.agg_key,
                window_start: enrichment.window_start,
                metric: enrichment.metric,
                window_secs,
            });
        }

        // Parked first: if the queue fails, nothing has been applied yet, so the retry of
        // this batch does not count anything twice.
        let not_parked = park(&self.dead_letters, &parked).await?;
        if not_parked > 0 {
            return Err(AggregatorError::NotParked { count: not_parked });
        }

        let contributions = pre_aggregate(points);
        let keys: Vec<ViewKey> = contributions.keys().cloned().collect();
        let mut current = self.store.load(&keys).await?;

        // IDEMPOTENCE (later): Lambda delivers a batch at least once, so a retried batch
        // is applied again. The fix goes here: each item keeps, per shard, the highest
        // sequence number applied to it (`applied.<shardId>`), written in the same
        // conditional put; a contribution whose batch's last sequence number is not above
        // it is skipped. Records of one shard arrive in order, so one number per shard
        // suffices.
        let mut tasks = JoinSet::new();
        let mut report = BatchReport {
            records: event.records.len(),
            parked: parked.len(),
            ..BatchReport::default()
        };
        for (key, contribution) in contributions {
            if tasks.len() >= MAX_CONCURRENT_WRITES {
                report.conflicts += joined(tasks.join_next().await)?;
                report.items_written += 1;
            }
            let stored = current.remove(&key);
            let store = Arc::clone(&self.store);
            let ttl_days = self.ttl_days;
            tasks.spawn(async move {
                write_item(&*store, key, stored, contribution, now_ms, ttl_days).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            report.conflicts += joined(Some(done))?;
            report.items_written += 1;
        }
        Ok(report)
    }
}

impl<S, V, D> KinesisHandler for Aggregator<S, V, D>
where
    S: SchemaSource + 'static,
    V: ViewStore,
    D: Rejects + 'static,
{
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        self.handle_batch(event).await.map_err(Into::into)
    }
}

fn joined(
    done: Option<Result<Result<u32, AggregatorError>, tokio::task::JoinError>>,
) -> Result<u32, AggregatorError> {
    match done {
        None => Ok(0),
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(AggregatorError::Task(e.to_string())),
    }
}

/// Merges `contribution` into the item and writes it over the version read, re-reading
/// after each lost race. Returns the number of lost races.
async fn write_item<V: ViewStore>(
    store: &V,
    key: ViewKey,
    mut stored: Option<ViewRow>,
    contribution: Contribution,
    now_ms: i64,
    ttl_days: u32,
) -> Result<u32, AggregatorError> {
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let row = apply(&key, stored.as_ref(), &contribution, now_ms, ttl_days);
        match store.save(&row).await? {
            Saved::Written => return Ok(attempt),
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
    use riffle_stage::testing::{
        MapSource, Sink, enriched_envelope as envelope, kinesis_event as event, reject_messages,
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
                // A rival adds one value of 100 to the item first.
                let contribution = Contribution {
                    aggregate: Aggregate::of(100.0),
                    window_secs: 60,
                };
                let rival = apply(&row.key, items.get(&row.key), &contribution, 0, 30);
                items.insert(row.key.clone(), rival);
            }
            let stored_version = items.get(&row.key).map_or(0, |r| r.version);
            if stored_version + 1 != row.version {
                return Ok(Saved::Conflict);
            }
            items.insert(row.key.clone(), row.clone());
            Ok(Saved::Written)
        }
    }

    type TestAggregator = Aggregator<MapSource, MemoryStore, Sink<SqsMessage>>;

    fn aggregator(store: MemoryStore, letters: Sink<SqsMessage>) -> TestAggregator {
        let windows = window_lengths(&riffle_codec::rules::bundled().unwrap());
        Aggregator::new(
            EnvelopeCodec::new(7).unwrap(),
            SchemaCache::new(MapSource::default()),
            store,
            letters,
            windows,
            30,
        )
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
        let first = event(&[
            codec.encode(&envelope("a", 2.0, 0)).unwrap(),
            codec.encode(&envelope("a", 5.0, 0)).unwrap(),
            codec.encode(&envelope("b", 1.0, 60_000)).unwrap(),
        ]);
        let report = agg.process(&first, 1_000).await.unwrap();
        assert_eq!(report.items_written, 2);
        assert_eq!(report.parked, 0);
        let second = event(&[
            codec.encode(&envelope("a", -3.0, 0)).unwrap(),
            codec.encode(&envelope("a", 1.0, 0)).unwrap(),
        ]);
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
}
