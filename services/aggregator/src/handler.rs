//! The aggregator's batch handler: decode, park the unusable, drop copies by their origins'
//! marks, pre-aggregate, one conditional write per view item that skips what the item
//! already holds, then one write of the shard's marks (ADR 0009 A, ADR 0010).
//!
//! This file: [`Aggregator`], what a batch did ([`BatchReport`]) and its metrics, and
//! [`Aggregator::process`], which runs those steps in that order. Which records count is
//! `admit.rs`; the pre-aggregation and merge are [`crate::aggregate`]; the item writes with
//! their retries are `write.rs`.

use riffle_telemetry::names;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::streams::KinesisEventResponse;
use riffle_codec::source::SchemaSource;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_runtime::KinesisEvent;
use riffle_runtime::{HandlerError, KinesisHandler};
use riffle_telemetry::Metrics;
use riffle_view::watermark;

use riffle_stage::dead_letter::park;
use riffle_stage::decode::{Decoded, DecodedBatch, decode_batch};
use riffle_stage::trace::{BatchSpans, Outcome, Tracer};
use riffle_stage::{RejectMessage, Rejects};

use crate::AggregatorError;
use riffle_stage::marks::{Committed, Gate, MarkStore, Marks, Ticket};

use crate::admit::{Admitted, Usable, Windows, admit, usable};
use crate::aggregate::pre_aggregate;
use crate::store::ViewStore;
use crate::write::write_view;

pub use crate::write::{MAX_CONCURRENT_WRITES, MAX_WRITE_ATTEMPTS};

/// The `Service` dimension of the aggregator's metrics.
pub use riffle_stage::stages::AGGREGATOR as SERVICE;

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
    /// Events the enricher flagged late: left out of the view, whose window was final.
    pub late: usize,
    /// Watermark entries published (one per input shard whose marks moved).
    pub watermark_writes: usize,
    /// Time from ingest to the view for the events this batch applied, at the 5th, 10th,
    /// ..., 100th percentile (empty when it applied none): a fixed number of samples per
    /// batch, so the metric costs the same whatever the batch size.
    pub ingest_to_view_ms: Vec<u64>,
}

/// Percentiles [`BatchReport::ingest_to_view_ms`] reports.
pub const LATENCY_QUANTILES: usize = 20;

/// The aggregator: folds `enriched` events into the DynamoDB view.
///
/// The fields are the crate's so that the unit tests of each step can look into the
/// in-memory ports behind them.
pub struct Aggregator<S, V, M, D> {
    pub(crate) codec: EnvelopeCodec,
    pub(crate) schemas: SchemaCache<S>,
    pub(crate) store: Arc<V>,
    pub(crate) marks: Marks<M>,
    pub(crate) dead_letters: D,
    pub(crate) windows: HashMap<String, u32>,
    pub(crate) ttl_days: u32,
    pub(crate) tracer: Tracer,
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
            tracer: Tracer::off(),
        }
    }

    /// The window length of each payload schema id in the batch, from the `enrich` section of
    /// the contract registered with it (ADR 0020), fetched once per id by the cache; ids
    /// without one fall back to the configured length of their subject.
    ///
    /// # Errors
    /// The registry could not be asked (the batch is retried).
    async fn windows_of(&self, records: &[Decoded<'_>]) -> Result<Windows<'_>, AggregatorError> {
        let mut by_schema = HashMap::new();
        let mut asked = HashSet::new();
        for decoded in records {
            let id = decoded.envelope.schema_id;
            if !asked.insert(id) {
                continue;
            }
            let Ok(registry_id) = u32::try_from(id) else {
                continue;
            };
            match self.schemas.get(registry_id).await {
                Ok(schema) => {
                    if let Some(spec) = schema.contract().and_then(|c| c.enrich.as_ref()) {
                        by_schema.insert(id, (spec.window_secs, spec.allowed_lateness_ms()));
                    }
                }
                Err(e) if e.retryable() => return Err(AggregatorError::Registry(e)),
                // An id the registry does not know: the enricher derived this record, so
                // the default window is the one it used.
                Err(_) => {}
            }
        }
        Ok(Windows {
            configured: &self.windows,
            by_schema,
        })
    }

    /// Traces the records through `tracer` (X-Ray; only records whose envelope says sampled).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
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
                metrics.count(names::RECORDS_IN, report.records as u64);
                metrics.count(names::RECORDS_PARKED, report.parked as u64);
                metrics.count(names::DUPLICATES_DROPPED, report.duplicates as u64);
                metrics.count(names::RECORDS_REPLAYED, report.replayed as u64);
                metrics.count(names::VIEW_ITEMS_WRITTEN, report.items_written as u64);
                metrics.count(names::VIEW_WRITE_CONFLICTS, u64::from(report.conflicts));
                metrics.count(names::MARK_WRITES, report.mark_writes as u64);
                metrics.count(names::LATE_EVENTS, report.late as u64);
                for ms in &report.ingest_to_view_ms {
                    metrics.millis(names::INGEST_TO_VIEW_MS, *ms as f64);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retryable = e.retryable(), records = event.records.len(), "batch failed");
                metrics.count(names::BATCHES_FAILED, 1);
            }
        }
        metrics.millis(names::BATCH_MS, started.elapsed().as_secs_f64() * 1000.0);
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
        let mut spans = BatchSpans::new(SERVICE, &self.tracer);
        let DecodedBatch {
            records,
            mut parked,
        } = decode_batch(SERVICE, &self.codec, &self.schemas, &event.records).await?;
        let windows = self.windows_of(&records).await?;
        let Usable {
            shards,
            candidates,
            elsewhere,
        } = usable(event, &records, &windows, &mut parked);
        self.park(&parked).await?;

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
        let Admitted {
            points,
            tickets,
            mut ingested,
            decoded,
            lateness,
        } = admit(&mut gate, &shards, candidates, &mut report);
        if report.late > 0 {
            tracing::info!(
                late = report.late,
                "events later than their window's allowed lateness left out of the view"
            );
        }
        if report.duplicates > 0 {
            tracing::info!(
                duplicates = report.duplicates,
                "copies not above their origin's mark dropped"
            );
        }

        let contributions = pre_aggregate(points);
        let batch_shards: Arc<[String]> = shards.into();
        let done = write_view(
            &self.store,
            contributions,
            Arc::clone(&batch_shards),
            now_ms,
            self.ttl_days,
            &mut report,
        )
        .await?;
        if self.tracer.is_on() {
            self.trace_records(&mut spans, &records, &decoded, &done);
        }
        let committed = self.move_marks(&mut gate, &tickets, done, now_ms).await?;
        report.mark_writes = committed.writes;
        if committed.writes > 0 {
            // The batch's effects and marks are durable: a failed publish only leaves the
            // view's watermark behind until the next batch, which is no reason to redo this one.
            match self
                .publish_watermarks(&gate, &batch_shards, &lateness, now_ms)
                .await
            {
                Ok(writes) => report.watermark_writes = writes,
                Err(e) => tracing::warn!(error = %e, "view watermark not published"),
            }
        }
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

    /// Closes the spans of the admitted records (`decoded` indexes `records`): counted into
    /// their view item when `done` holds them (the view item key is the span's `where`, so
    /// X-Ray finds every trace that contributed to an item), left for the retry otherwise.
    fn trace_records(
        &self,
        spans: &mut BatchSpans,
        records: &[Decoded<'_>],
        decoded: &[usize],
        done: &[u32],
    ) {
        let mut landed = vec![false; decoded.len()];
        for i in done {
            if let Some(l) = landed.get_mut(*i as usize) {
                *l = true;
            }
        }
        for (admitted, &d) in decoded.iter().enumerate() {
            let Some(record) = records.get(d) else {
                continue;
            };
            // Only a traced record pays for an owned copy of its header.
            let mut header = record.envelope.trace_header.as_deref().map(str::to_owned);
            spans.open_header(record.index, &mut header, &record.envelope.event_id, None);
            let outcome = match &record.envelope.enrichment {
                Some(e) if landed[admitted] => {
                    Outcome::Viewed(format!("{}@{}", e.agg_key, e.window_start))
                }
                _ => Outcome::Retried("its view item was not written".into()),
            };
            spans.close(record.index, outcome);
        }
        spans.flush();
    }

    /// Sends the records no retry can fix to the dead-letter queue. Parked first: if the
    /// queue fails, nothing has been applied yet, so the retry of this batch does not count
    /// anything twice.
    async fn park(&self, parked: &[RejectMessage]) -> Result<(), AggregatorError> {
        let not_parked = park(&self.dead_letters, parked).await?;
        if not_parked > 0 {
            return Err(AggregatorError::NotParked { count: not_parked });
        }
        Ok(())
    }

    /// Marks done the admitted records (by index into `tickets`) the view now holds, and
    /// writes the marks that moved: only once the items are written, so a crash before
    /// leaves the records to the items' position guards.
    async fn move_marks(
        &self,
        gate: &mut Gate,
        tickets: &[Ticket],
        done: Vec<u32>,
        now_ms: i64,
    ) -> Result<Committed, AggregatorError> {
        for i in done {
            if let Some(ticket) = tickets.get(i as usize) {
                gate.done(*ticket);
            }
        }
        self.marks
            .commit(SERVICE, gate, now_ms.div_euclid(1000))
            .await
            .map_err(AggregatorError::Marks)
    }

    /// Publishes, per input shard, how far the enricher shards feeding it have come: the
    /// earliest of their latest event times, kept with their origins' marks (ADR 0021).
    /// Enricher shards silent here for [`watermark::IDLE_MS`] are left out, so one that a
    /// reshard closed stops holding the view's watermark back. After the marks: a time
    /// published covers only records whose effects landed.
    async fn publish_watermarks(
        &self,
        gate: &Gate,
        shards: &[String],
        lateness: &BTreeMap<String, i64>,
        now_ms: i64,
    ) -> Result<usize, AggregatorError> {
        let fresh_from = now_ms.saturating_sub(watermark::IDLE_MS).div_euclid(1000);
        let mut writes = 0;
        for shard in shards {
            let slowest = gate.stored(shard).and_then(|m| {
                m.marks
                    .values()
                    .filter(|mark| mark.at >= fresh_from)
                    .filter_map(|mark| mark.time)
                    .min()
            });
            if let Some(time) = slowest {
                self.store
                    .publish_watermark(shard, time, lateness, now_ms)
                    .await?;
                writes += 1;
            }
        }
        Ok(writes)
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
        BatchSpans::scope(&self.tracer, SERVICE, event, |event| {
            self.handle_batch(event)
        })
        .await
        .map_err(Into::into)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use riffle_stage::testing::{Sink, enriched_envelope as envelope};

    use super::*;
    use crate::aggregate::Aggregate;
    use crate::fixtures::{MemoryStore, aggregator, blobs, event, event_at, from_origin, item};

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
}
