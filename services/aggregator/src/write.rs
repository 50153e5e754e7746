//! Writing a batch's contributions to the view: the items read in one go, then per item a
//! merge and a conditional write over the version read, re-read and merged again after each
//! lost race, a bounded number of items at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::{JoinError, JoinSet};

use crate::AggregatorError;
use crate::aggregate::{Contribution, ViewKey, ViewRow, apply};
use crate::handler::BatchReport;
use crate::store::{Saved, ViewStore};

/// View items written at the same time; beyond this, more concurrency only buys throttling.
pub const MAX_CONCURRENT_WRITES: usize = 16;
/// Read-merge-write rounds per item before the batch gives up (and Lambda retries it).
pub const MAX_WRITE_ATTEMPTS: u32 = 8;

/// What writing one item did.
struct ItemDone {
    conflicts: u32,
    written: bool,
    skipped: usize,
    /// Indexes (into the batch's admitted records) of the records the item now holds.
    records: Vec<u32>,
}

/// Merges each of `contributions` into its stored item and writes it, counting in `report`
/// the items written, the records they already held and the races lost. Returns the
/// indexes of the admitted records the view now holds (`shards` names the batch's shards by
/// index, for the items' position guards).
///
/// # Errors
/// The view could not be read or written, or an item stayed contended.
pub(crate) async fn write_view<V: ViewStore>(
    store: &Arc<V>,
    contributions: BTreeMap<ViewKey, Contribution>,
    shards: Arc<[String]>,
    now_ms: i64,
    ttl_days: u32,
    report: &mut BatchReport,
) -> Result<Vec<u32>, AggregatorError> {
    let keys: Vec<ViewKey> = contributions.keys().cloned().collect();
    let mut current = store.load(&keys).await?;
    let records = contributions.values().map(|c| c.samples.len()).sum();

    let mut tasks = JoinSet::new();
    let mut done: Vec<u32> = Vec::with_capacity(records);
    let mut failed: Option<AggregatorError> = None;
    for (key, contribution) in contributions {
        while tasks.len() >= MAX_CONCURRENT_WRITES && failed.is_none() {
            record_done(tasks.join_next().await, report, &mut done, &mut failed);
        }
        if failed.is_some() {
            break;
        }
        let stored = current.remove(&key);
        let store = Arc::clone(store);
        let shards = Arc::clone(&shards);
        // The calls go into the batch's log, for its records' trace spans.
        tasks.spawn(riffle_aws::calls::carried(async move {
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
        }));
    }
    // On a failure the writes in flight still finish; the marks are not written, so the
    // retry admits the batch again and the items' position guards skip what landed.
    while let Some(joined) = tasks.join_next().await {
        record_done(Some(joined), report, &mut done, &mut failed);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Adds what a joined item task did to `report` and `done`, or files its error under
/// `failed` (the first one wins: it is the one the batch fails with).
fn record_done(
    joined: Option<Result<Result<ItemDone, AggregatorError>, JoinError>>,
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

    use riffle_codec::EnvelopeCodec;
    use riffle_stage::marks::{DEFAULT_MARK_WINDOW, Marks, MemoryMarks};
    use riffle_stage::testing::{Sink, enriched_envelope as envelope};

    use super::*;
    use crate::Aggregator;
    use crate::aggregate::Aggregate;
    use crate::fixtures::{MemoryStore, aggregator, blobs, event, event_at, item};

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
}
