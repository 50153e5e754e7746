//! The coordinator of one instance: which shards it holds leases on, a reader task for
//! each, and the renewal of each lease beside its reader.

use riffle_telemetry::names;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use aws_sdk_kinesis::types::Shard;
use riffle_aws::AwsError;
use riffle_telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Ctx;
use super::reader::{ShardEnd, ShardReader};
use super::shard::LeaseState;
use crate::lease::{self, LeaseView, now_ms};
use crate::{KinesisHandler, RuntimeError};

/// What a reader task returns: its shard and how it ended.
type ReaderResult = (String, Result<ShardEnd, RuntimeError>);

/// A shard whose lease this instance holds, and its reader.
struct Held {
    stop: watch::Sender<bool>,
    /// Being handed back to give another instance its share.
    shedding: bool,
}

/// One instance's share of the stream: the leases it holds and a reader task for each.
pub(super) struct Coordinator<H> {
    ctx: Arc<Ctx<H>>,
    readers: JoinSet<ReaderResult>,
    tasks: HashMap<tokio::task::Id, String>,
    held: BTreeMap<String, Held>,
    shards: Vec<Shard>,
    reported_held: Option<usize>,
}

impl<H: KinesisHandler> Coordinator<H> {
    pub(super) fn new(ctx: Arc<Ctx<H>>) -> Self {
        Self {
            ctx,
            readers: JoinSet::new(),
            tasks: HashMap::new(),
            held: BTreeMap::new(),
            shards: Vec::new(),
            reported_held: None,
        }
    }

    /// Ticks every lease renewal interval until `shutdown` completes, and notes every
    /// reader that ends meanwhile at once, so its shard can be taken again at the next
    /// tick; then shuts the readers down.
    pub(super) async fn run(mut self, mut shutdown: impl Future<Output = ()> + Unpin) {
        loop {
            self.tick().await;
            let pause = self.ctx.config.lease_renewal();
            tokio::select! {
                () = &mut shutdown => break,
                Some(joined) = self.readers.join_next_with_id(), if !self.readers.is_empty() => {
                    self.reader_ended(joined).await;
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.shutdown().await;
    }

    /// Renews, lists, reads the lease table, and takes or sheds leases.
    async fn tick(&mut self) {
        let leases = &self.ctx.leases;
        if let Err(e) = leases.heartbeat(now_ms()).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        match list_shards(&self.ctx.kinesis, &self.ctx.config.stream_name).await {
            Ok(shards) => self.shards = shards,
            Err(e) => tracing::warn!(error = %e, "ListShards failed; will try again"),
        }
        let now = now_ms();
        let view = match self.ctx.leases.read(now).await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(error = %e, "reading leases failed; will try again");
                return;
            }
        };
        let open = workable(&self.shards, &view);
        let held: BTreeSet<String> = self
            .held
            .iter()
            .filter(|(_, h)| !h.shedding)
            .map(|(s, _)| s.clone())
            .collect();
        let plan = lease::plan(&open, &view, &held, self.ctx.leases.owner(), now);
        for shard in plan.shed {
            if let Some(h) = self.held.get_mut(&shard) {
                tracing::info!(shard = %shard, "handing the lease back: above the fair share");
                h.shedding = true;
                let _ = h.stop.send(true);
            }
        }
        let mut takeovers = 0;
        for (shard, seen) in plan.take {
            let now = now_ms();
            match self.ctx.leases.acquire(&shard, seen, now).await {
                Ok(Some(_)) => {
                    let previous = view.shards.get(&shard).and_then(|r| r.owner.clone());
                    if previous.is_some() {
                        takeovers += 1;
                        tracing::info!(shard = %shard, from = ?previous, "took over an expired lease");
                    }
                    self.spawn_reader(shard, now + self.ctx.config.lease_duration_ms as i64);
                }
                Ok(None) => {
                    tracing::debug!(shard = %shard, "another instance took the lease first")
                }
                Err(e) => tracing::warn!(shard = %shard, error = %e, "taking a lease failed"),
            }
        }
        let mut metrics = Metrics::new(self.ctx.config.function_name.clone());
        if takeovers > 0 {
            metrics.count(names::LEASE_TAKEOVERS, takeovers);
        }
        if self.reported_held != Some(self.held.len()) {
            self.reported_held = Some(self.held.len());
            metrics.count(names::LEASES_HELD, self.held.len() as u64);
        }
        metrics.flush();
    }

    fn spawn_reader(&mut self, shard: String, valid_until_ms: i64) {
        let (stop, stop_rx) = watch::channel(false);
        let lease = Arc::new(LeaseState {
            valid_until_ms: AtomicI64::new(valid_until_ms),
            lost: AtomicBool::new(false),
        });
        let ctx = self.ctx.clone();
        let shard_id = shard.clone();
        let handle = self.readers.spawn(async move {
            let result = tokio::select! {
                r = ShardReader::run(ctx.clone(), shard_id.clone(), stop_rx, lease.clone()) => r,
                () = keep_lease(&ctx, &shard_id, &lease) => unreachable_end(),
            };
            if !lease.lost() {
                // Conditional on still being the owner, so a lease taken meanwhile is
                // untouched.
                if let Err(e) = ctx.leases.release(&shard_id).await {
                    tracing::warn!(shard = %shard_id, error = %e, "releasing a lease failed; it will expire");
                }
            }
            (shard_id, result)
        });
        self.tasks.insert(handle.id(), shard.clone());
        self.held.insert(
            shard,
            Held {
                stop,
                shedding: false,
            },
        );
    }

    async fn reader_ended(
        &mut self,
        joined: Result<(tokio::task::Id, ReaderResult), tokio::task::JoinError>,
    ) {
        let (shard, result) = match joined {
            Ok((id, (shard, result))) => {
                self.tasks.remove(&id);
                (shard, Ok(result))
            }
            Err(e) => match self.tasks.remove(&e.id()) {
                Some(shard) => (shard, Err(e)),
                None => {
                    tracing::error!(error = %e, "reader task of an unknown shard died");
                    return;
                }
            },
        };
        self.held.remove(&shard);
        match result {
            Ok(Ok(ShardEnd::Finished)) => tracing::info!(shard = %shard, "shard finished"),
            Ok(Ok(ShardEnd::Stopped)) => {}
            Ok(Ok(ShardEnd::Lost)) => {
                tracing::warn!(shard = %shard, "shard given up: lease lost");
            }
            // Taken again at a later tick.
            Ok(Err(e)) => {
                tracing::warn!(shard = %shard, error = %e, "shard reader failed; taking it again from its checkpoint")
            }
            // The lease expires and is taken again.
            Err(e) => tracing::error!(shard = %shard, error = %e, "shard reader task died"),
        }
    }

    async fn shutdown(mut self) {
        tracing::info!("shutting down: finishing in-flight batches");
        for h in self.held.values() {
            let _ = h.stop.send(true);
        }
        // Each reader task keeps its lease until its batches are done, then releases it.
        while let Some(joined) = self.readers.join_next_with_id().await {
            self.reader_ended(joined).await;
        }
        if let Err(e) = self.ctx.leases.leave().await {
            tracing::warn!(error = %e, "removing the heartbeat failed; it will expire");
        }
        let mut metrics = Metrics::new(self.ctx.config.function_name.clone());
        metrics.count(names::LEASES_HELD, 0);
        metrics.flush();
    }
}

/// Renews a shard's lease every renewal interval, for as long as its reader runs (the
/// reader task drops this future when the reader ends). Beside the reader rather than
/// in the coordinator's round, so slow listing or table reads never delay a renewal.
async fn keep_lease<H>(ctx: &Ctx<H>, shard_id: &str, lease: &LeaseState) {
    loop {
        tokio::time::sleep(ctx.config.lease_renewal()).await;
        let now = now_ms();
        match ctx.leases.renew(shard_id, now).await {
            Ok(true) => {
                lease
                    .valid_until_ms
                    .fetch_max(now + ctx.config.lease_duration_ms as i64, Ordering::SeqCst);
            }
            Ok(false) => {
                tracing::warn!(shard = %shard_id, "lease lost to another instance");
                lease.lost.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            // The reader pauses once the lease runs out unrenewed.
            Err(e) => tracing::warn!(shard = %shard_id, error = %e, "renewing a lease failed"),
        }
    }
}

/// [`keep_lease`] never ends; this keeps the reader's result type in the `select!`.
fn unreachable_end() -> Result<ShardEnd, RuntimeError> {
    Ok(ShardEnd::Stopped)
}

/// Shards open for reading now, in listing order: not finished, and each parent either
/// finished (by any instance: its checkpoint is `SHARD_END`) or gone from the listing
/// (trimmed away). Children wait for parents so a key's records in the parent are handled
/// before its records in the child.
fn workable(shards: &[Shard], view: &LeaseView) -> Vec<String> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
    let done = |p: Option<&str>| p.is_none_or(|p| view.finished(p) || !listed.contains(p));
    shards
        .iter()
        .filter(|s| !view.finished(s.shard_id()))
        .filter(|s| done(s.parent_shard_id()) && done(s.adjacent_parent_shard_id()))
        .map(|s| s.shard_id().to_owned())
        .collect()
}

async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Shard>, AwsError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // With a token, ListShards forbids the stream name.
        let request = match token.take() {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = request
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListShards", e))?;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(shards),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::lease::ShardRow;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> Shard {
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_owned))
            .set_adjacent_parent_shard_id(adjacent.map(str::to_owned))
            .hash_key_range(
                aws_sdk_kinesis::types::HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key("1")
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                aws_sdk_kinesis::types::SequenceNumberRange::builder()
                    .starting_sequence_number("0")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn finished(ids: &[&str]) -> LeaseView {
        let mut view = LeaseView::default();
        for id in ids {
            view.shards.insert(
                (*id).to_owned(),
                ShardRow {
                    checkpoint: Checkpoint::ShardEnd,
                    owner: None,
                    expires_ms: 0,
                    counter: None,
                },
            );
        }
        view
    }

    #[test]
    fn children_wait_for_their_parents() {
        let shards = vec![
            shard("s0", None, None),
            shard("s1", None, None),
            shard("s2", Some("s0"), Some("s1")),
            shard("s3", Some("gone"), None),
        ];
        assert_eq!(workable(&shards, &finished(&[])), ["s0", "s1", "s3"]);
        assert_eq!(workable(&shards, &finished(&["s0"])), ["s1", "s3"]);
        assert_eq!(workable(&shards, &finished(&["s0", "s1"])), ["s2", "s3"]);
    }
}
