//! Writing a batch's objects in waves: each wave's intents added to their shards' items
//! before any of its objects is put, the objects put a few at a time, the marks moved over
//! every record whose row is durable, and the intents the marks now cover removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use riffle_stage::marks::{Gate, MarkStore, Marks, Ticket};
use tokio::task::{JoinError, JoinSet};

use crate::ArchiverError;
use crate::group::Group;
use crate::handler::{BatchReport, SERVICE};
use crate::intent::{Intent, Intents, MAX_INTENTS_PER_WAVE};
use riffle_archive::bucket::ArchiveBucket;

/// Objects written at the same time.
pub const MAX_CONCURRENT_PUTS: usize = 8;

/// Writes `groups` in waves: intents added, objects put, the marks moved over every record
/// whose row is durable, and the intents the marks now cover removed. On a failure the writes
/// in flight finish and the batch fails with its intents in place, so the retry finds what
/// reached the bucket.
///
/// # Errors
/// The intents, the bucket or the marks failed.
pub(crate) async fn write_groups<O: ArchiveBucket, M: MarkStore, I: Intents>(
    store: &Arc<O>,
    marks: &Marks<M>,
    intents: &I,
    mut groups: Vec<Group>,
    gate: &mut Gate,
    now_secs: i64,
    report: &mut BatchReport,
) -> Result<(), ArchiverError> {
    while !groups.is_empty() {
        // An intent item holds only so many intents (see MAX_INTENTS_PER_WAVE).
        let rest = groups.split_off(groups.len().min(MAX_INTENTS_PER_WAVE));
        let wave = std::mem::replace(&mut groups, rest);
        add_intents(intents, &wave, now_secs).await?;
        let done = put_objects(store, wave).await?;
        for w in &done {
            report.rows += w.rows;
            report.bytes += w.bytes;
            report.objects.push(w.intent.key.clone());
            for t in &w.tickets {
                gate.done(*t);
            }
        }
        report.mark_writes += marks
            .commit(SERVICE, gate, now_secs)
            .await
            .map_err(ArchiverError::Marks)?
            .writes;
        remove_covered(intents, gate, done).await;
    }
    Ok(())
}

/// Adds the intents of `wave`'s objects to their shards' items, one call per shard: before
/// any object is put, so a crash after a put always leaves the intent that finds it.
async fn add_intents<I: Intents>(
    intents: &I,
    wave: &[Group],
    now_secs: i64,
) -> Result<(), ArchiverError> {
    let mut by_shard: BTreeMap<String, Vec<Intent>> = BTreeMap::new();
    for g in wave {
        by_shard
            .entry(g.shard.clone())
            .or_default()
            .push(g.intent.clone());
    }
    for (shard, pending) in &by_shard {
        intents.add(shard, pending, now_secs).await?;
    }
    Ok(())
}

/// Puts the objects of `wave`, at most [`MAX_CONCURRENT_PUTS`] at a time. After the first
/// failure no new put starts, but those in flight finish before the error is returned: the
/// bucket then holds all the batch will have written, for the retry to find.
async fn put_objects<O: ArchiveBucket>(
    store: &Arc<O>,
    wave: Vec<Group>,
) -> Result<Vec<Written>, ArchiverError> {
    let mut tasks = JoinSet::new();
    let mut done: Vec<Written> = Vec::new();
    let mut failed: Option<ArchiverError> = None;
    for group in wave {
        while tasks.len() >= MAX_CONCURRENT_PUTS && failed.is_none() {
            settle(tasks.join_next().await, &mut done, &mut failed);
        }
        if failed.is_some() {
            break;
        }
        let store = Arc::clone(store);
        // The calls go into the batch's log, for its records' trace spans.
        tasks.spawn(riffle_aws::calls::carried(async move {
            write_group(&*store, group).await
        }));
    }
    while let Some(joined) = tasks.join_next().await {
        settle(Some(joined), &mut done, &mut failed);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Removes the intents of the objects in `done` whose records the marks now all cover: no
/// redelivery needs them any more.
async fn remove_covered<I: Intents>(intents: &I, gate: &Gate, done: Vec<Written>) {
    let mut covered: BTreeMap<String, Vec<Intent>> = BTreeMap::new();
    for w in done {
        if w.tickets.iter().all(|t| gate.covered(*t)) {
            covered.entry(w.shard).or_default().push(w.intent);
        }
    }
    for (shard, covered) in &covered {
        if let Err(e) = intents.remove(shard, covered).await {
            // Harmless: the next batch finds the objects and drops the intents once
            // the shard is past them.
            tracing::warn!(error = %e, shard, "write intents of covered objects not removed");
        }
    }
}

/// What a finished write task tells.
struct Written {
    shard: String,
    intent: Intent,
    rows: usize,
    bytes: usize,
    tickets: Vec<Ticket>,
}

/// Puts one object.
async fn write_group<O: ArchiveBucket>(store: &O, group: Group) -> Result<Written, ArchiverError> {
    let bytes = group.body.len();
    store.put(&group.intent.key, group.body).await?;
    Ok(Written {
        shard: group.shard,
        intent: group.intent,
        rows: group.rows,
        bytes,
        tickets: group.tickets,
    })
}

/// Files a joined write task under `done`, or its error under `failed` (the first one wins:
/// it is the one the batch fails with).
fn settle(
    joined: Option<Result<Result<Written, ArchiverError>, JoinError>>,
    done: &mut Vec<Written>,
    failed: &mut Option<ArchiverError>,
) {
    match joined {
        None => {}
        Some(Ok(Ok(w))) => done.push(w),
        Some(Ok(Err(e))) => {
            failed.get_or_insert(e);
        }
        Some(Err(e)) => {
            failed.get_or_insert(ArchiverError::Task(e.to_string()));
        }
    }
}
