//! Recovery: finding the rows an earlier attempt of a batch wrote before it could write its
//! marks, by the write intents it left ([`crate::intent`]), so that a redelivery, cut however
//! it is, never writes them again.
//!
//! Each intent of a shard the batch touches is settled one of three ways:
//! - its object exists: the object's rows are durable, and the intent stays until the shard
//!   has moved past its records, so every later cut of the same records finds it too;
//! - a compacted object replaces it (named in its `riffle.replaces`): the rows of the
//!   intent's shard and range in that object are durable, and the intent stays likewise;
//! - neither, or the shard is past it: nothing of it can come back, so it is forgotten.

use std::collections::{HashMap, HashSet};

use riffle_runtime::KinesisEvent;
use riffle_stage::batch::shard_id;
use riffle_stage::marks::Gate;

use crate::ArchiverError;
use crate::intent::{Intent, Intents};
use crate::rows::{Fresh, distinct_shards};
use riffle_archive::bucket::ArchiveBucket;
use riffle_archive::key::cmp_sequence;
use riffle_archive::scan::{is_compacted, replaces};
use riffle_archive::table::{ArchivedRow, read_rows};

/// A row as recovery matches it against the batch's records: (shard, sequence number,
/// event id), what both carry.
type RowId = (String, String, String);

/// What recovery learned about one shard's intents.
#[derive(Default)]
pub(crate) struct Recovery {
    /// (shard, sequence number, event id) of rows found durable in the bucket.
    pub(crate) durable: HashSet<RowId>,
    /// Object keys seen in the partitions looked at.
    pub(crate) existing: HashSet<String>,
}

impl Recovery {
    /// Takes out of `fresh` the records whose rows were found durable and marks them done, so
    /// the marks move over them although this batch writes nothing for them; returns how
    /// many were taken out.
    pub(crate) fn skip_durable(&self, fresh: &mut Vec<Fresh>, gate: &mut Gate) -> usize {
        // Nothing found durable (every batch but one after a crash): no per-record lookup.
        if self.durable.is_empty() {
            return 0;
        }
        let before = fresh.len();
        fresh.retain(|c| {
            let durable = self.durable.contains(&(
                c.row.kinesis_shard_id.clone(),
                c.row.kinesis_sequence_number.clone(),
                c.row.event_id.clone(),
            ));
            if durable {
                gate.done(c.ticket);
            }
            !durable
        });
        before - fresh.len()
    }
}

/// Settles the intents of the shards of `fresh`: says which of `fresh` an earlier attempt
/// wrote, and forgets the intents no record can come back for.
///
/// # Errors
/// The intents could not be read or removed, or the bucket could not be listed or read.
pub(crate) async fn recover<O: ArchiveBucket, I: Intents>(
    store: &O,
    intents: &I,
    event: &KinesisEvent,
    fresh: &[Fresh],
) -> Result<Recovery, ArchiverError> {
    let mut search = Search {
        store,
        listed: HashMap::new(),
        recovery: Recovery::default(),
    };
    for shard in distinct_shards(fresh.iter().map(|c| &c.row)) {
        let pending = intents.pending(shard).await?;
        if pending.is_empty() {
            continue;
        }
        let start = batch_start(event, shard);
        let mut settled = Vec::new();
        for intent in pending {
            if !search.look_for(&intent, shard, start).await? {
                settled.push(intent);
            }
        }
        intents.remove(shard, &settled).await?;
    }
    Ok(search.recovery)
}

/// Where the batch starts on `shard`: its first record there is the shard's first not yet
/// done, so nothing before it comes again.
fn batch_start<'a>(event: &'a KinesisEvent, shard: &str) -> &'a str {
    event
        .records
        .iter()
        .filter(|r| shard_id(r) == shard)
        .map(|r| r.kinesis.sequence_number.as_str())
        .min_by(|a, b| cmp_sequence(a, b))
        .unwrap_or_default()
}

/// One batch's search of the bucket for its shards' intents.
struct Search<'a, O> {
    store: &'a O,
    /// Keys listed per partition directory: each directory is listed once per batch,
    /// however many intents point into it.
    listed: HashMap<String, Vec<String>>,
    recovery: Recovery,
}

impl<O: ArchiveBucket> Search<'_, O> {
    /// Looks for the rows of `intent` (of `shard`, whose batch starts at `start`) and adds
    /// what it finds to the recovery. `false` when the intent is settled: its records are
    /// behind the batch, or its object never got written.
    async fn look_for(
        &mut self,
        intent: &Intent,
        shard: &str,
        start: &str,
    ) -> Result<bool, ArchiverError> {
        if intent.is_behind(start) {
            return Ok(false);
        }
        let Some(dir) = intent.key.rsplit_once('/').map(|(d, _)| format!("{d}/")) else {
            return Ok(false);
        };
        self.list(&dir).await?;
        let keys = self.listed.get(&dir).map(Vec::as_slice).unwrap_or_default();
        // An object found (or compacted) keeps its intent until the shard has moved past it:
        // a later cut of the same records (the other bisection half) must find it too.
        if keys.contains(&intent.key) {
            let bytes = self.store.get(&intent.key).await?;
            let rows = read_rows(&bytes).map_err(|e| bad_archive(&intent.key, e))?;
            self.recovery.durable.extend(rows.into_iter().map(row_id));
            return Ok(true);
        }
        match compacted_rows(self.store, keys, intent, shard).await? {
            Some(rows) => {
                self.recovery.durable.extend(rows);
                Ok(true)
            }
            // Never written: nothing of it to find.
            None => Ok(false),
        }
    }

    /// Lists `dir` unless this batch already did; every key seen is remembered as taken, so
    /// no object of this batch is written over it.
    async fn list(&mut self, dir: &str) -> Result<(), ArchiverError> {
        if self.listed.contains_key(dir) {
            return Ok(());
        }
        let keys: Vec<String> = self
            .store
            .list(dir)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        self.recovery.existing.extend(keys.iter().cloned());
        self.listed.insert(dir.to_owned(), keys);
        Ok(())
    }
}

/// The rows of `shard` within `intent`'s range in the compacted object (of the listed
/// `keys`) that replaces the intent's object; `None` when none does.
async fn compacted_rows<O: ArchiveBucket>(
    store: &O,
    keys: &[String],
    intent: &Intent,
    shard: &str,
) -> Result<Option<Vec<RowId>>, ArchiverError> {
    let name = intent.key.rsplit('/').next().unwrap_or(&intent.key);
    for key in keys.iter().filter(|k| is_compacted(k)) {
        if !replaces(store, key).await?.iter().any(|n| n == name) {
            continue;
        }
        let bytes = store.get(key).await?;
        let rows = read_rows(&bytes).map_err(|e| bad_archive(key, e))?;
        // A compacted object merges many objects, of other shards and ranges too: only the
        // intent's own rows say anything about this batch.
        return Ok(Some(
            rows.into_iter()
                .filter(|r| {
                    r.kinesis_shard_id == shard && intent.covers(&r.kinesis_sequence_number)
                })
                .map(row_id)
                .collect(),
        ));
    }
    Ok(None)
}

/// How recovery matches `row` against the batch's records.
fn row_id(row: ArchivedRow) -> RowId {
    (
        row.kinesis_shard_id,
        row.kinesis_sequence_number,
        row.event_id,
    )
}

/// An object that should hold archive rows and does not, named by its key.
fn bad_archive(key: &str, e: riffle_archive::ArchiveError) -> ArchiverError {
    riffle_archive::ArchiveError::BadArchive(format!("{key}: {e}")).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use riffle_codec::EnvelopeCodec;
    use riffle_stage::testing::kinesis_event as event;

    use crate::fixtures::{H16, NOW, archiver, batch, once_each, order, slice};
    use crate::{Archiver, ArchiverError};
    use riffle_archive::bucket::ArchiveBucket;
    use riffle_archive::scan::REPLACES_KEY;
    use riffle_archive::store::ObjectStore;
    use riffle_archive::table::read_rows;
    use riffle_archive::testing::MemoryBucket;

    #[tokio::test]
    async fn a_crash_between_write_and_marks_is_finished_by_any_redelivery() {
        let ev = batch(12);
        // Bisection halves, a restart at a later record, a batch that grew: each cut
        // differently from the crashed attempt, so its object keys differ too.
        let cuts: [&[(usize, usize)]; 3] = [&[(0, 6), (6, 12)], &[(4, 12), (0, 12)], &[(0, 12)]];
        for (crashed, redeliveries) in [(0..9, cuts[0]), (0..12, cuts[1]), (2..9, cuts[2])] {
            let arch = archiver(MemoryBucket::default(), false);
            arch.marks.store().fail.store(1, Ordering::SeqCst);
            let err = arch.process(&slice(&ev, crashed.clone()), NOW).await;
            assert!(matches!(err, Err(ArchiverError::Marks(_))), "{err:?}");
            assert!(!arch.intents.is_empty(), "intents stay for the retry");
            arch.marks.store().fail.store(0, Ordering::SeqCst);
            let mut recovered = 0;
            for (from, to) in redeliveries {
                let r = arch
                    .process(&slice(&ev, *from..*to), NOW + 1)
                    .await
                    .unwrap();
                recovered += r.recovered;
            }
            assert!(recovered > 0, "{crashed:?}");
            once_each(&arch, 12);
            // The found objects' intents wait until the shard is past their records.
            assert!(!arch.intents.is_empty());
            let codec = EnvelopeCodec::new(7).unwrap();
            let mut next = event(&vec![codec.encode(&order(H16, 99)).unwrap(); 13]);
            next.records.drain(..12);
            arch.process(&next, NOW + 2).await.unwrap();
            assert!(arch.intents.is_empty());
        }
    }

    #[tokio::test]
    async fn an_object_compacted_away_before_the_redelivery_still_counts() {
        let arch = archiver(MemoryBucket::default(), false);
        let ev = batch(6);
        arch.marks.store().fail.store(1, Ordering::SeqCst);
        arch.process(&ev, NOW).await.unwrap_err();
        arch.marks.store().fail.store(0, Ordering::SeqCst);
        // Compaction merges the hour-16 object (with a neighbour) and deletes its inputs.
        let (key, bytes) = {
            let objects = arch.store.objects.lock().unwrap();
            let (k, v) = objects.iter().find(|(k, _)| k.contains("hour=16")).unwrap();
            (k.clone(), v.clone())
        };
        let dir = &key[..key.rfind('/').unwrap() + 1];
        let name = &key[dir.len()..];
        let merged = riffle_archive::table::write_rows_with_metadata(
            &read_rows(&bytes).unwrap(),
            vec![(REPLACES_KEY.to_owned(), format!("{name}\nother.parquet"))],
        )
        .unwrap();
        arch.store
            .put(&format!("{dir}compacted-x.parquet"), merged)
            .await
            .unwrap();
        arch.store.delete(std::slice::from_ref(&key)).await.unwrap();

        let r = arch.process(&slice(&ev, 0..4), NOW + 1).await.unwrap();
        assert_eq!(r.recovered, 4);
        let r = arch.process(&slice(&ev, 4..6), NOW + 1).await.unwrap();
        assert_eq!(r.recovered, 2);
        once_each(&arch, 6);
        // The compacted object's intent waits until the shard is past its records.
        assert_eq!(arch.intents.len(), 1);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut next = event(&vec![codec.encode(&order(H16, 99)).unwrap(); 7]);
        next.records.drain(..6);
        arch.process(&next, NOW + 2).await.unwrap();
        assert!(arch.intents.is_empty());
    }

    #[tokio::test]
    async fn an_intent_whose_object_never_landed_is_forgotten() {
        let arch = archiver(MemoryBucket::down(), false);
        let ev = batch(3);
        let err = arch.process(&ev, NOW).await.unwrap_err();
        assert!(err.retryable());
        assert_eq!(arch.intents.len(), 2);
        let arch = Archiver {
            store: Arc::new(MemoryBucket::default()),
            ..arch
        };
        let r = arch.process(&ev, NOW + 1).await.unwrap();
        assert_eq!((r.rows, r.recovered), (3, 0));
        assert!(arch.intents.is_empty());
        once_each(&arch, 3);
    }
}
