//! The archiver's batch handler: decode, render payloads, drop copies by their origins'
//! marks, one Parquet object per partition group, then one write of the shard's marks
//! (ADR 0009 "Amendment: the archive", ADR 0010).
//!
//! Exactly once, in this order:
//! 1. **Marks** (`riffle_stage::marks`, stage `archiver`): a record not above its origin's
//!    mark is a copy of one whose row is durable (a producer retry, an upstream re-publish, a
//!    redelivery after the marks were written) and is dropped.
//! 2. **Recovery**: the shard's write intents ([`crate::intent`]) name the objects an
//!    earlier attempt was writing when it died or failed, before its marks were written. Each
//!    one that exists is read back and the records of this batch found in it are skipped (its
//!    footer lists the rows' sub-record indexes, so their positions are exact). One that never
//!    got written is forgotten. One compacted away since (named in a compacted object's
//!    `riffle.replaces`) is found in the compacted object, where this batch's records are
//!    matched by shard, sequence number and event id. An intent whose object exists stays
//!    until the shard has moved past its records, so every later cut is matched too.
//! 3. **Writes**: the rest are grouped by (partition, shard). The groups' intents are added
//!    to the shard's item before any object is written; the objects are put, the marks move
//!    over every record whose row is durable, and the intents the marks now cover are removed.
//!
//! A redelivery, cut however it is (bisection halves, a batch that grew, a restart at a
//! later record), therefore skips every event whose row is durable: covered by the marks, or
//! in an object an intent names. Object keys are made of the shard and the first and last
//! sequence numbers of the rows written; a key that names an existing object with other rows
//! (found during recovery) gets a tag, so no write ever replaces rows that are durable.
//! Nothing is ever reported as a batch item failure: a record no retry can fix is parked
//! (see `riffle_stage::dead_letter`), and any failure to write affects the whole batch, so
//! it fails the batch.
//!
//! This file: [`Archiver`], what a batch did ([`BatchReport`]) and its metrics, and
//! [`Archiver::process`], which runs the steps in that order. The steps are their own
//! modules: the rows (`rows.rs`), recovery (`recover.rs`), the objects' grouping and
//! encoding (`group.rs`) and their writes (`write.rs`).

use riffle_telemetry::names;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::streams::KinesisEventResponse;
use riffle_codec::source::SchemaSource;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_runtime::KinesisEvent;
use riffle_runtime::{HandlerError, KinesisHandler};
use riffle_stage::dead_letter::park;
use riffle_stage::decode::{DecodedBatch, decode_batch};
use riffle_stage::marks::{Gate, MarkStore, Marks};
use riffle_stage::trace::{BatchSpans, Outcome, Tracer};
use riffle_stage::{RejectMessage, Rejects};
use riffle_telemetry::Metrics;

use crate::ArchiverError;
use crate::group::groups;
use crate::intent::Intents;
use crate::recover::recover;
use crate::rows::{Candidate, Candidates, Fresh, candidates, distinct_shards, payload_schemas};
use crate::write::write_groups;
use riffle_archive::bucket::ArchiveBucket;

pub use crate::group::SUB_INDEXES_KEY;
pub use crate::rows::{ENRICHER_STAGE, VALIDATOR_STAGE};
pub use crate::write::MAX_CONCURRENT_PUTS;

/// The `Service` dimension of the archiver's metrics, and its stage name in the marks.
pub use riffle_stage::stages::ARCHIVER as SERVICE;

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Records sent to the dead-letter queue.
    pub parked: usize,
    /// Rows archived by this batch.
    pub rows: usize,
    /// Records dropped as copies: not above their origin's mark.
    pub duplicates: usize,
    /// Records skipped: found in an object of an earlier attempt that had not marked them.
    pub recovered: usize,
    /// Keys of the objects written, sorted.
    pub objects: Vec<String>,
    /// Bytes written.
    pub bytes: usize,
    /// Marks items written.
    pub mark_writes: usize,
}

/// The archiver: writes every `enriched` event to the S3 archive once.
///
/// The fields are the crate's so that the unit tests of each step can look into the
/// in-memory ports behind them.
pub struct Archiver<S, O, M, I, D> {
    pub(crate) codec: EnvelopeCodec,
    pub(crate) schemas: SchemaCache<S>,
    pub(crate) store: Arc<O>,
    pub(crate) marks: Marks<M>,
    pub(crate) intents: I,
    pub(crate) dead_letters: D,
    pub(crate) prefix: String,
    pub(crate) tracer: Tracer,
}

impl<S, O, M, I, D> std::fmt::Debug for Archiver<S, O, M, I, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("envelope_id", &self.codec.id())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<S, O, M, I, D> Archiver<S, O, M, I, D>
where
    S: SchemaSource,
    O: ArchiveBucket,
    M: MarkStore,
    I: Intents,
    D: Rejects,
{
    /// An archiver reading envelopes with `codec`, payload (and other envelope) schemas from
    /// `schemas`, writing objects under `prefix`, each event once by the origin marks in
    /// `marks` (stage [`SERVICE`]) and the write intents in `intents`.
    pub fn new(
        codec: EnvelopeCodec,
        schemas: SchemaCache<S>,
        store: O,
        marks: Marks<M>,
        intents: I,
        dead_letters: D,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            codec,
            schemas,
            store: Arc::new(store),
            marks,
            intents,
            dead_letters,
            prefix: prefix.into(),
            tracer: Tracer::off(),
        }
    }

    /// Traces the records through `tracer` (X-Ray; only records whose envelope says sampled).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Handles one Lambda batch: `Ok` with no item failures once every record is archived,
    /// parked or dropped as a copy; `Err` (the whole batch is retried) when the bucket,
    /// the marks, the registry or the queue failed.
    ///
    /// # Errors
    /// See [`ArchiverError::retryable`].
    pub async fn handle_batch(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, ArchiverError> {
        let started = Instant::now();
        let mut metrics = Metrics::new(SERVICE);
        let result = self
            .process(&event, chrono::Utc::now().timestamp_millis())
            .await;
        match &result {
            Ok(report) => {
                metrics.count(names::RECORDS_IN, report.records as u64);
                metrics.count(names::RECORDS_PARKED, report.parked as u64);
                metrics.count(names::ROWS_ARCHIVED, report.rows as u64);
                metrics.count(names::DUPLICATES_DROPPED, report.duplicates as u64);
                metrics.count(names::RECORDS_REPLAYED, report.recovered as u64);
                metrics.count(names::RECORDS_RECOVERED, report.recovered as u64);
                metrics.count(names::OBJECTS_WRITTEN, report.objects.len() as u64);
                metrics.count(names::BYTES_WRITTEN, report.bytes as u64);
                metrics.count(names::MARK_WRITES, report.mark_writes as u64);
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

    /// [`Archiver::handle_batch`] at a given time (`archived_at`, and the marks' clock),
    /// reporting what it did.
    ///
    /// # Errors
    /// As [`Archiver::handle_batch`].
    pub async fn process(
        &self,
        event: &KinesisEvent,
        now_ms: i64,
    ) -> Result<BatchReport, ArchiverError> {
        let mut spans = BatchSpans::new(SERVICE, &self.tracer);
        let DecodedBatch {
            records,
            mut parked,
        } = decode_batch(SERVICE, &self.codec, &self.schemas, &event.records).await?;
        let schemas = payload_schemas(&self.schemas, &records).await?;
        let Candidates { rows, elsewhere } =
            candidates(event, records, &schemas, now_ms, &mut parked);
        self.park(&parked).await?;
        let mut report = BatchReport {
            records: event.records.len(),
            parked: parked.len(),
            duplicates: elsewhere,
            ..BatchReport::default()
        };

        let now_secs = now_ms.div_euclid(1000);
        let (mut gate, mut fresh) = self.admit(rows, &mut report).await?;
        if fresh.is_empty() {
            return Ok(report);
        }

        let recovery = recover(&*self.store, &self.intents, event, &fresh).await?;
        report.recovered = recovery.skip_durable(&mut fresh, &mut gate);
        if report.recovered > 0 {
            tracing::warn!(
                recovered = report.recovered,
                "records found in objects of an earlier attempt whose marks were not written"
            );
        }

        // Each row's span names the partition it lands in; the archived row keeps the header
        // naming the archiver's span, so a row leads back to its trace.
        let mut partitions = Vec::new();
        if self.tracer.is_on() {
            for (i, f) in fresh.iter_mut().enumerate() {
                spans.open_header(i, &mut f.row.trace_header, &f.row.event_id, None);
                let p = &f.partition;
                partitions.push(format!("subject={}/dt={}/hour={}", p.subject, p.dt, p.hour));
            }
        }
        let groups = groups(&self.prefix, fresh, &recovery.existing)?;
        write_groups(
            &self.store,
            &self.marks,
            &self.intents,
            groups,
            &mut gate,
            now_secs,
            &mut report,
        )
        .await?;
        for (i, partition) in partitions.into_iter().enumerate() {
            spans.close(i, Outcome::Archived(partition));
        }
        spans.flush();
        // Records found durable with no group left to write still move the marks.
        report.mark_writes += self.commit_marks(&mut gate, now_secs).await?;
        report.objects.sort();
        Ok(report)
    }

    /// Sends the records no retry can fix to the dead-letter queue. Parked first, so that a
    /// queue failure fails the batch before anything is written.
    async fn park(&self, parked: &[RejectMessage]) -> Result<(), ArchiverError> {
        let not_parked = park(&self.dead_letters, parked).await?;
        if not_parked > 0 {
            return Err(ArchiverError::NotParked { count: not_parked });
        }
        Ok(())
    }

    /// Reads the marks of the candidates' shards and lets through the records above their
    /// origin's mark; the others are copies of rows already durable, counted in `report` as
    /// duplicates. Returns the gate, which moves the marks once the rows are written.
    async fn admit(
        &self,
        candidates: Vec<Candidate>,
        report: &mut BatchReport,
    ) -> Result<(Gate, Vec<Fresh>), ArchiverError> {
        let shards = distinct_shards(candidates.iter().map(|c| &c.row));
        let mut gate = self
            .marks
            .open(SERVICE, &shards)
            .await
            .map_err(ArchiverError::Marks)?;
        let mut fresh = Vec::with_capacity(candidates.len());
        for c in candidates {
            let (origin, seq) = &c.origin;
            match gate.admit(&c.row.kinesis_shard_id, origin, *seq) {
                None => report.duplicates += 1,
                Some(ticket) => fresh.push(Fresh {
                    partition: c.partition,
                    row: c.row,
                    sub: c.sub,
                    ticket,
                }),
            }
        }
        if report.duplicates > 0 {
            tracing::info!(
                duplicates = report.duplicates,
                "copies not above their origin's mark dropped"
            );
        }
        Ok((gate, fresh))
    }

    /// Writes the marks that moved since the last commit; returns how many items it wrote.
    async fn commit_marks(&self, gate: &mut Gate, now_secs: i64) -> Result<usize, ArchiverError> {
        Ok(self
            .marks
            .commit(SERVICE, gate, now_secs)
            .await
            .map_err(ArchiverError::Marks)?
            .writes)
    }
}

impl<S, O, M, I, D> KinesisHandler for Archiver<S, O, M, I, D>
where
    S: SchemaSource + 'static,
    O: ArchiveBucket,
    M: MarkStore,
    I: Intents,
    D: Rejects + 'static,
{
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        riffle_stage::trace::BatchSpans::scope(&self.tracer, SERVICE, event, |event| {
            self.handle_batch(event)
        })
        .await
        .map_err(Into::into)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use riffle_stage::testing::kinesis_event as event;

    use super::*;
    use crate::fixtures::{H16, NOW, archiver, batch, once_each, order, slice};
    use riffle_archive::ArchiveError;
    use riffle_archive::testing::MemoryBucket;

    #[tokio::test]
    async fn a_batch_again_or_cut_in_halves_writes_nothing_more() {
        let arch = archiver(MemoryBucket::default(), false);
        let ev = batch(12);
        let first = arch.process(&ev, NOW).await.unwrap();
        assert_eq!(first.rows, 12);
        let again = arch.process(&ev, NOW + 1).await.unwrap();
        assert_eq!((again.rows, again.duplicates), (0, 12));
        assert!(again.objects.is_empty());
        for half in [slice(&ev, 0..6), slice(&ev, 6..12), slice(&ev, 3..12)] {
            let r = arch.process(&half, NOW + 2).await.unwrap();
            assert_eq!(r.rows, 0);
            assert_eq!(r.duplicates, half.records.len());
        }
        once_each(&arch, 12);
    }

    #[tokio::test]
    async fn a_duplicate_event_at_a_new_position_is_dropped() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let from = |q: i32, seq: &str| {
            let mut e = order(H16, q);
            e.origin = Some(riffle_codec::Origin {
                id: "producer-1/0".into(),
                seq: seq.into(),
                sub: 0,
            });
            codec.encode(&e).unwrap()
        };
        let blobs = vec![
            from(1, "1"),
            from(2, "2"),
            // A producer retry: the first event again, at a new sequence number.
            from(1, "1"),
        ];
        let report = arch.process(&event(&blobs), NOW).await.unwrap();
        assert_eq!((report.rows, report.duplicates), (2, 1));
        // And in a later batch (here: its own position is 49590000, the copy's 49590002).
        let later = arch
            .process(&slice(&event(&blobs), 2..3), NOW)
            .await
            .unwrap();
        assert_eq!((later.rows, later.duplicates), (0, 1));
        once_each(&arch, 2);
    }

    #[tokio::test]
    async fn events_without_an_origin_or_id_are_deduplicated_by_position() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut a = order(H16, 1);
        a.event_id = String::new();
        let mut b = order(H16, 2);
        b.event_id = String::new();
        let ev = event(&[codec.encode(&a).unwrap(), codec.encode(&b).unwrap()]);
        assert_eq!(arch.process(&ev, NOW).await.unwrap().rows, 2);
        let again = arch.process(&slice(&ev, 1..2), NOW).await.unwrap();
        assert_eq!((again.rows, again.duplicates), (0, 1));
        assert_eq!(
            arch.store.rows_per_event(),
            BTreeMap::from([(String::new(), 2)])
        );
    }

    #[tokio::test]
    async fn outages_fail_the_batch_retryably() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[codec.encode(&order(H16, 1)).unwrap()]);

        let arch = archiver(MemoryBucket::default(), true);
        let err = arch.handle_batch(ev.clone()).await.unwrap_err();
        assert!(matches!(err, ArchiverError::Registry(_)));
        assert!(err.retryable());

        let arch = archiver(MemoryBucket::down(), false);
        let err = arch.handle_batch(ev).await.unwrap_err();
        assert!(matches!(
            err,
            ArchiverError::Archive(ArchiveError::Store(_))
        ));
        assert!(err.retryable());
    }
}
