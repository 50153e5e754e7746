//! One shard's reader: fetches records, spreads them over lanes by partition key, starts
//! a lane's batch when it is ready, and ends when the shard is read out, the lease is gone
//! or shutdown comes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use riffle_aws::AwsError;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::delivery::{Interrupted, deliver};
use super::shard::{LeaseState, Progress, ShardShared};
use super::{Ctx, EMPTY_POLL_INTERVAL, GET_RECORDS_MAX_LIMIT, call_backoff, pause};
use crate::checkpoint::{Checkpoint, SHARD_END};
use crate::config::StartingPosition;
use crate::event::{INVOCATION_PAYLOAD_MAX_BYTES, Pending, cut_batch};
use crate::record::Source;
use crate::{KinesisHandler, RuntimeError};

/// How a reader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShardEnd {
    /// The shard is closed and read to its end.
    Finished,
    /// Shutdown, or the lease handed back.
    Stopped,
    /// The lease ran out or another instance took it.
    Lost,
}

/// The lane of a partition key: FNV-1a, stable across processes and runs, so a key's
/// records always go to the same lane of a shard.
pub fn lane_of(partition_key: &str, lanes: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in partition_key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(hash % lanes.max(1) as u64).unwrap_or(0)
}

/// One lane: its buffered records, when its batching window closes, whether a batch of
/// it is running.
#[derive(Default)]
struct Lane {
    buffer: VecDeque<Pending>,
    deadline: Option<Instant>,
    busy: bool,
}

/// Reads one shard for as long as this instance holds its lease.
pub(super) struct ShardReader<H> {
    shared: Arc<ShardShared<H>>,
    stop: watch::Receiver<bool>,
    iterator: Option<String>,
    /// Where reading began in this run, for a new iterator when nothing was fetched yet.
    start: Checkpoint,
    last_fetched: Option<String>,
    closed: bool,
    lanes: Vec<Lane>,
    inflight: JoinSet<(usize, Result<(), Interrupted>)>,
    interrupted: bool,
}

impl<H: KinesisHandler> ShardReader<H> {
    pub(super) async fn run(
        ctx: Arc<Ctx<H>>,
        shard_id: String,
        mut stop: watch::Receiver<bool>,
        lease: Arc<LeaseState>,
    ) -> Result<ShardEnd, RuntimeError> {
        let mut failures = 0;
        let start = loop {
            match ctx.checkpoints.load(&shard_id).await {
                Ok(c) => break c,
                Err(e) if e.retryable() => {
                    tracing::warn!(shard = %shard_id, error = %e, "reading checkpoint failed");
                    if pause(&mut stop, call_backoff(&mut failures)).await {
                        return Ok(ShardEnd::Stopped);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if start == Checkpoint::ShardEnd {
            return Ok(ShardEnd::Finished);
        }
        let source = Arc::new(Source {
            aws_region: ctx.region.clone(),
            event_source_arn: ctx.stream_arn.clone(),
            invoke_identity_arn: ctx.invoke_identity_arn.clone(),
            shard_id,
        });
        let lanes = ctx.config.parallelization_factor.max(1) as usize;
        let shared = Arc::new(ShardShared {
            ctx,
            source,
            stop: stop.clone(),
            lease,
            progress: tokio::sync::Mutex::new(Progress::default()),
            millis_behind: AtomicI64::new(0),
        });
        let mut reader = ShardReader {
            shared,
            stop,
            iterator: None,
            start,
            last_fetched: None,
            closed: false,
            lanes: (0..lanes).map(|_| Lane::default()).collect(),
            inflight: JoinSet::new(),
            interrupted: false,
        };
        reader.read().await
    }

    fn shard_id(&self) -> &str {
        self.shared.shard_id()
    }

    /// The reader's loop. Each round first settles what may end or pause it (finished
    /// lanes, shutdown, the lease, the shard read out), then starts ready lanes, and only
    /// then fetches: so a stop or a lost lease is seen before any new work starts.
    async fn read(&mut self) -> Result<ShardEnd, RuntimeError> {
        let config = self.shared.ctx.config.clone();
        let batch_size = config.batch_size as usize;
        let window = Duration::from_secs(u64::from(config.maximum_batching_window_secs));
        // Enough buffered for every lane to cut a full batch.
        let cap = batch_size.saturating_mul(self.lanes.len()).max(1);
        let mut failures: u32 = 0;
        let mut paused_since: Option<Instant> = None;
        loop {
            while let Some(joined) = self.inflight.try_join_next() {
                self.lane_ended(joined);
            }
            if let Some(end) = self.stopped().await {
                return Ok(end);
            }
            if self
                .paused_for_lease(&mut paused_since, config.lease_duration())
                .await
            {
                continue;
            }
            if let Some(end) = self.read_out().await {
                return Ok(end);
            }
            self.start_ready_lanes(batch_size);
            if self.closed {
                self.wait(self.next_deadline()).await;
                continue;
            }
            if self.iterator.is_none() {
                self.renew_iterator(&mut failures).await?;
                continue;
            }
            self.fetch_more(cap, window, &mut failures).await?;
        }
    }

    /// When told to stop (shutdown, the lease handed back or lost, a lane interrupted):
    /// lets the running batches finish, then says how the reader ended.
    async fn stopped(&mut self) -> Option<ShardEnd> {
        let lease = self.shared.lease.clone();
        if !(self.interrupted || *self.stop.borrow() || lease.lost()) {
            return None;
        }
        self.drain().await;
        Some(if lease.lost() || lease.expired() {
            ShardEnd::Lost
        } else {
            ShardEnd::Stopped
        })
    }

    /// Whether the round must start over because the lease ran out unrenewed; logs when
    /// such a pause begins and ends.
    async fn paused_for_lease(
        &mut self,
        paused_since: &mut Option<Instant>,
        lease_duration: Duration,
    ) -> bool {
        if self.shared.lease.expired() {
            // A renewal is late (a slow table): start nothing until it comes, or the
            // lease turns out to be another instance's. Not for ever: a pause that
            // outlasts a whole lease duration ends the reader, so the coordinator sees
            // it and takes the shard again from its checkpoint.
            let since = *paused_since.get_or_insert_with(|| {
                tracing::warn!(shard = %self.shard_id(), "lease renewal late; reader paused");
                Instant::now()
            });
            if since.elapsed() >= lease_duration {
                tracing::warn!(shard = %self.shard_id(), "lease not renewed for a whole lease duration; giving the shard up");
                self.interrupted = true;
                return true;
            }
            self.wait(EMPTY_POLL_INTERVAL).await;
            return true;
        }
        if paused_since.take().is_some() {
            tracing::info!(shard = %self.shard_id(), "lease renewed; reader resumed");
        }
        false
    }

    /// A closed shard whose every record is finished: checkpointed as `SHARD_END`, so its
    /// children may start.
    async fn read_out(&mut self) -> Option<ShardEnd> {
        if !(self.closed
            && self.inflight.is_empty()
            && self.lanes.iter().all(|l| l.buffer.is_empty()))
        {
            return None;
        }
        self.shared.save_checkpoint(SHARD_END).await;
        Some(if self.shared.lease.lost() {
            ShardEnd::Lost
        } else {
            ShardEnd::Finished
        })
    }

    /// Gets a shard iterator, backing off on a retryable failure; any other failure ends
    /// the reader once its running batches are done.
    async fn renew_iterator(&mut self, failures: &mut u32) -> Result<(), RuntimeError> {
        match self.new_iterator().await {
            Ok(()) => *failures = 0,
            Err(e) if e.retryable() => {
                tracing::warn!(shard = %self.shard_id(), error = %e, "GetShardIterator failed");
                self.wait(call_backoff(failures)).await;
            }
            Err(e) => return Err(self.stop(e).await),
        }
        Ok(())
    }

    /// Fetches as much as the lanes have room for (`cap` buffered in all), or waits for
    /// room. A lost iterator is replaced at the next round, a retryable failure backed
    /// off; any other failure ends the reader once its running batches are done.
    async fn fetch_more(
        &mut self,
        cap: usize,
        window: Duration,
        failures: &mut u32,
    ) -> Result<(), RuntimeError> {
        let buffered: usize = self.lanes.iter().map(|l| l.buffer.len()).sum();
        if buffered >= cap {
            self.wait(self.next_deadline()).await;
            return Ok(());
        }
        let limit = (cap - buffered).clamp(1, GET_RECORDS_MAX_LIMIT);
        match self.fetch(limit, window).await {
            Ok(0) => {
                *failures = 0;
                if !self.closed {
                    self.wait(self.next_deadline()).await;
                }
            }
            Ok(_) => *failures = 0,
            Err(e)
                if matches!(
                    e.code(),
                    Some("ExpiredIteratorException" | "InvalidArgumentException")
                ) =>
            {
                // Resume right after what was fetched; the lanes keep what they have.
                tracing::info!(shard = %self.shard_id(), code = ?e.code(), "iterator lost; getting a new one");
                self.iterator = None;
            }
            Err(e) if e.retryable() => {
                tracing::warn!(shard = %self.shard_id(), error = %e, "GetRecords failed; backing off");
                self.wait(call_backoff(failures)).await;
            }
            Err(e) => return Err(self.stop(e).await),
        }
        Ok(())
    }

    /// Ends the reader on a failure no retry fixes, once its running batches are done.
    async fn stop(&mut self, e: riffle_aws::AwsError) -> RuntimeError {
        self.interrupted = true;
        self.drain().await;
        RuntimeError::Aws(e)
    }

    async fn drain(&mut self) {
        while let Some(joined) = self.inflight.join_next().await {
            self.lane_ended(joined);
        }
    }

    fn lane_ended(
        &mut self,
        joined: Result<(usize, Result<(), Interrupted>), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((lane, result)) => {
                if let Some(l) = self.lanes.get_mut(lane) {
                    l.busy = false;
                }
                if result.is_err() {
                    self.interrupted = true;
                }
            }
            // `deliver` does not panic (the handler runs in a task of its own); if it did,
            // its lane's records are unfinished, so the reader stops before the checkpoint
            // could pass them.
            Err(e) => {
                tracing::error!(shard = %self.shard_id(), error = %e, "lane task died");
                self.interrupted = true;
            }
        }
    }

    /// Starts a batch on every idle lane that has one ready: full by count or payload,
    /// its window closed, or the shard read to its end.
    fn start_ready_lanes(&mut self, batch_size: usize) {
        let now = Instant::now();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if lane.busy || lane.buffer.is_empty() {
                continue;
            }
            let bytes: usize = lane.buffer.iter().map(|p| p.size).sum();
            let ready = self.closed
                || lane.buffer.len() >= batch_size
                || bytes >= INVOCATION_PAYLOAD_MAX_BYTES
                || lane.deadline.is_none_or(|d| now >= d);
            if !ready {
                continue;
            }
            let batch = cut_batch(&mut lane.buffer, batch_size);
            lane.busy = true;
            // Records left behind have waited already; a new window starts with the next
            // record into an empty lane.
            if lane.buffer.is_empty() {
                lane.deadline = None;
            }
            let shared = self.shared.clone();
            self.inflight
                .spawn(async move { (i, deliver(shared, batch).await) });
        }
    }

    /// How long to wait for something to do: the nearest window of an idle lane, at most
    /// the empty-poll pause.
    fn next_deadline(&self) -> Duration {
        let now = Instant::now();
        self.lanes
            .iter()
            .filter(|l| !l.busy && !l.buffer.is_empty())
            .filter_map(|l| l.deadline)
            .map(|d| d.saturating_duration_since(now))
            .fold(EMPTY_POLL_INTERVAL, Duration::min)
    }

    /// Waits `d`, or less if a lane finishes or shutdown comes.
    async fn wait(&mut self, d: Duration) {
        if *self.stop.borrow() {
            return;
        }
        tokio::select! {
            Some(joined) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                self.lane_ended(joined);
            }
            changed = self.stop.changed() => {
                if changed.is_err() {
                    // The coordinator is gone: nothing renews the lease any more.
                    self.interrupted = true;
                }
            }
            () = tokio::time::sleep(d) => {}
        }
    }

    async fn new_iterator(&mut self) -> Result<(), AwsError> {
        let config = &self.shared.ctx.config;
        let mut request = self
            .shared
            .ctx
            .kinesis
            .get_shard_iterator()
            .stream_name(&config.stream_name)
            .shard_id(self.shard_id());
        let after = self.last_fetched.clone().or(match &self.start {
            Checkpoint::After(seq) => Some(seq.clone()),
            _ => None,
        });
        request = match after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => match config.starting_position {
                StartingPosition::TrimHorizon => {
                    request.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                StartingPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
                StartingPosition::AtTimestamp => request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(
                        config.starting_position_timestamp.unwrap_or(0.0),
                    )),
            },
        };
        let out = request
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetShardIterator", e))?;
        match out.shard_iterator() {
            Some(it) => self.iterator = Some(it.to_owned()),
            // No iterator: the shard is closed and has nothing after this position.
            None => self.closed = true,
        }
        Ok(())
    }

    /// One GetRecords into the lanes; the number of records fetched.
    async fn fetch(&mut self, limit: usize, window: Duration) -> Result<usize, AwsError> {
        let Some(iterator) = self.iterator.clone() else {
            return Ok(0);
        };
        let out = self
            .shared
            .ctx
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetRecords", e))?;
        let records = out.records();
        if !records.is_empty() {
            let mut progress = self.shared.progress.lock().await;
            let now = Instant::now();
            let lanes = self.lanes.len();
            for r in records {
                let pending = Pending::new(self.shared.source.record(r));
                progress.track(pending.seq());
                if let Some(lane) = self.lanes.get_mut(lane_of(r.partition_key(), lanes)) {
                    if lane.buffer.is_empty() {
                        lane.deadline = Some(now + window);
                    }
                    lane.buffer.push_back(pending);
                }
            }
        }
        if let Some(last) = records.last() {
            self.last_fetched = Some(last.sequence_number().to_owned());
        }
        self.shared
            .millis_behind
            .store(out.millis_behind_latest().unwrap_or(0), Ordering::SeqCst);
        self.iterator = out.next_shard_iterator().map(str::to_owned);
        if self.iterator.is_none() {
            self.closed = true;
        }
        Ok(records.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_key_always_goes_to_one_lane_and_keys_spread() {
        assert_eq!(lane_of("k1", 4), lane_of("k1", 4));
        assert_eq!(lane_of("anything", 1), 0);
        let mut used = HashSet::new();
        for i in 0..100 {
            let lane = lane_of(&format!("k{i}"), 4);
            assert!(lane < 4);
            used.insert(lane);
        }
        assert_eq!(used.len(), 4);
    }
}
