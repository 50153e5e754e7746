//! The local event source mapping: reads a Kinesis stream shard by shard and invokes the
//! handler in-process with Lambda's semantics, checkpointing in DynamoDB.
//!
//! Shape: [`run_local`] is the coordinator. Every lease renewal interval it renews the
//! shard leases it holds, lists the shards, reads the lease table, and takes or hands back
//! leases by the fair-share [`lease::plan`]; it starts one reader task per shard it holds
//! (children only once their parents are finished, by whichever instance), and on
//! shutdown waits for every reader to finish its batches, then releases its leases.
//!
//! A reader ([`ShardReader`]) fetches records and spreads them over
//! `parallelization_factor` lanes by a hash of the partition key, so one key's records
//! stay in order in one lane. Each lane cuts batches from its own buffer (batch size,
//! window, payload limit) and runs one batch at a time to completion ([`deliver`]):
//! retries, bisection, partial failures, record age, the on-failure destination. A
//! failing lane holds only itself. Lanes report finished records to the shard's
//! [`Progress`], and the checkpoint moves to the end of the longest finished prefix of
//! the shard: never past a record some lane has not finished.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use chrono::{DateTime, Utc};
use riffle_aws::{AwsError, SqsMessage, SqsSender, backoff};
use riffle_telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::checkpoint::{Checkpoint, CheckpointStore, SHARD_END};
use crate::config::{EsmConfig, StartingPosition};
use crate::destination::{Condition, FailureContext, failure_message};
use crate::event::{
    INVOCATION_PAYLOAD_MAX_BYTES, Pending, Verdict, bisect, cut_batch, event_of, split_expired,
    verdict,
};
use crate::lease::{self, LeaseStore, LeaseView, now_ms};
use crate::record::Source;
use crate::{KinesisHandler, RuntimeError};

/// Kinesis limit: records per GetRecords call.
pub const GET_RECORDS_MAX_LIMIT: usize = 10_000;
/// Pause after an empty GetRecords. Lambda polls a shard about once a second; a shorter
/// pause keeps local latency low, and is well inside the 5 reads/s a shard allows.
pub const EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// First pause before retrying a failed batch; doubles per retry.
pub const RETRY_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest pause between retries of a failed batch.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First pause after a throttled or failed AWS call; doubles per failure.
pub const CALL_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest pause after a throttled or failed AWS call.
pub const CALL_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Attempts to write a checkpoint before going on without it (the next batch writes a
/// later one; until then a restart re-delivers, which at-least-once allows).
pub const CHECKPOINT_MAX_ATTEMPTS: u32 = 5;

/// The time that records' ages are measured against.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How a local mapping runs, beyond the mapping's own settings.
#[derive(Clone)]
pub struct LocalOptions {
    /// Measures record ages (`maximum_record_age_secs`, `IteratorAgeMs`, the on-failure
    /// timestamp); the system clock by default. Leases always use the system clock, which
    /// all instances share.
    pub clock: Clock,
    /// This instance's lease owner id; by default the process id and a random number.
    pub instance_id: Option<String>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(Utc::now),
            instance_id: None,
        }
    }
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// Runs the mapping until `shutdown` completes; then every reader finishes the batches it
/// is on, checkpoints, the leases are released, and this returns.
///
/// # Errors
/// A setting out of Lambda's limits, or a stream that cannot be described.
pub async fn run_local<H: KinesisHandler>(
    handler: Arc<H>,
    config: EsmConfig,
    sdk: &aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RuntimeError> {
    run_local_with(handler, config, sdk, shutdown, LocalOptions::default()).await
}

/// [`run_local`] with [`LocalOptions`].
///
/// # Errors
/// A setting out of Lambda's limits, or a stream that cannot be described.
pub async fn run_local_with<H: KinesisHandler>(
    handler: Arc<H>,
    config: EsmConfig,
    sdk: &aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send,
    options: LocalOptions,
) -> Result<(), RuntimeError> {
    config.validate()?;
    let kinesis = riffle_aws::kinesis_client(sdk);
    tokio::pin!(shutdown);

    let summary = tokio::select! {
        s = kinesis.describe_stream_summary().stream_name(&config.stream_name).send() => s,
        () = &mut shutdown => return Ok(()),
    };
    let summary =
        summary.map_err(|e| RuntimeError::Aws(AwsError::from_sdk("DescribeStreamSummary", e)))?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .ok_or_else(|| RuntimeError::Stream("DescribeStreamSummary gave no ARN".to_owned()))?;
    let (region, account) = arn_region_account(&stream_arn)
        .ok_or_else(|| RuntimeError::Stream(format!("unexpected stream ARN {stream_arn}")))?;
    let owner = options
        .instance_id
        .unwrap_or_else(|| format!("{}-{:016x}", std::process::id(), rand::random::<u64>()));
    let dynamo = riffle_aws::dynamodb_client(sdk);
    let ctx = Arc::new(Ctx {
        function_arn: format!(
            "arn:aws:lambda:{region}:{account}:function:{}",
            config.function_name
        ),
        invoke_identity_arn: format!("arn:aws:iam::{account}:role/{}", config.function_name),
        region,
        stream_arn,
        checkpoints: CheckpointStore::new(
            dynamo.clone(),
            config.checkpoint_table.clone(),
            &config.function_name,
            &config.stream_name,
        ),
        leases: LeaseStore::new(
            dynamo,
            config.checkpoint_table.clone(),
            &config.function_name,
            &config.stream_name,
            owner,
            config.lease_duration(),
        ),
        sqs: SqsSender::new(riffle_aws::sqs_client(sdk)),
        kinesis,
        handler,
        config,
        clock: options.clock,
        faults: crate::fault::Faults::from_env()?,
    });
    tracing::info!(
        stream = %ctx.config.stream_name, function = %ctx.config.function_name,
        instance = %ctx.leases.owner(), lanes = ctx.config.parallelization_factor,
        "local event source mapping started"
    );
    let mut coordinator = Coordinator {
        ctx,
        readers: JoinSet::new(),
        tasks: HashMap::new(),
        held: BTreeMap::new(),
        shards: Vec::new(),
        reported_held: None,
    };
    loop {
        coordinator.tick().await;
        let pause = coordinator.ctx.config.lease_renewal();
        tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = coordinator.readers.join_next_with_id(), if !coordinator.readers.is_empty() => {
                coordinator.reader_ended(joined).await;
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
    coordinator.shutdown().await;
    Ok(())
}

/// What a reader task returns: its shard and how it ended.
type ReaderResult = (String, Result<ShardEnd, RuntimeError>);

/// A shard whose lease this instance holds, and its reader.
struct Held {
    stop: watch::Sender<bool>,
    /// Being handed back to give another instance its share.
    shedding: bool,
}

/// The lease of one shard as its reader sees it, kept up by [`keep_lease`].
#[derive(Debug)]
struct LeaseState {
    /// Until when the reader may start work (epoch ms): one lease duration after the
    /// last successful take or renewal was sent.
    valid_until_ms: AtomicI64,
    /// Another instance holds it now.
    lost: AtomicBool,
}

impl LeaseState {
    fn expired(&self) -> bool {
        now_ms() >= self.valid_until_ms.load(Ordering::SeqCst)
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

struct Coordinator<H> {
    ctx: Arc<Ctx<H>>,
    readers: JoinSet<ReaderResult>,
    tasks: HashMap<tokio::task::Id, String>,
    held: BTreeMap<String, Held>,
    shards: Vec<Shard>,
    reported_held: Option<usize>,
}

impl<H: KinesisHandler> Coordinator<H> {
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
            metrics.count("LeaseTakeovers", takeovers);
        }
        if self.reported_held != Some(self.held.len()) {
            self.reported_held = Some(self.held.len());
            metrics.count("LeasesHeld", self.held.len() as u64);
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
        metrics.count("LeasesHeld", 0);
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

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` -> (REGION, ACCOUNT).
fn arn_region_account(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.split(':');
    let region = parts.nth(3)?;
    let account = parts.next()?;
    Some((region.to_owned(), account.to_owned()))
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

struct Ctx<H> {
    handler: Arc<H>,
    config: EsmConfig,
    kinesis: aws_sdk_kinesis::Client,
    checkpoints: CheckpointStore,
    leases: LeaseStore,
    sqs: SqsSender,
    stream_arn: String,
    region: String,
    function_arn: String,
    invoke_identity_arn: String,
    clock: Clock,
    /// Fault tests only: transient handler errors (`RIFFLE_FAULT_HANDLER_ERROR_RATE`).
    faults: Option<crate::fault::Faults>,
}

/// How a reader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardEnd {
    /// The shard is closed and read to its end.
    Finished,
    /// Shutdown, or the lease handed back.
    Stopped,
    /// The lease ran out or another instance took it.
    Lost,
}

/// A batch was cut short by shutdown: its unfinished records stay after the checkpoint.
struct Interrupted;

/// One batch segment on its way: the records and the retries spent on them.
struct Segment {
    records: Vec<Pending>,
    attempts: u32,
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

/// Sequence numbers are decimal strings of up to 128 digits: ordered by length, then
/// digit by digit.
fn seq_key(seq: &str) -> (usize, String) {
    (seq.len(), seq.to_owned())
}

/// The records of a shard fetched and not yet behind the checkpoint, and which of them
/// are finished. The checkpoint may move to the end of the finished prefix.
#[derive(Debug, Default)]
struct Progress {
    open: BTreeMap<(usize, String), bool>,
}

impl Progress {
    fn track(&mut self, seq: &str) {
        self.open.insert(seq_key(seq), false);
    }

    fn finish(&mut self, seq: &str) {
        if let Some(done) = self.open.get_mut(&seq_key(seq)) {
            *done = true;
        }
    }

    /// Drops the finished prefix; its last sequence number, if it was not empty.
    fn advance(&mut self) -> Option<String> {
        let mut last = None;
        while let Some(entry) = self.open.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(entry.remove_entry().0.1);
        }
        last
    }
}

/// What a shard's lanes share.
struct ShardShared<H> {
    ctx: Arc<Ctx<H>>,
    source: Arc<Source>,
    stop: watch::Receiver<bool>,
    lease: Arc<LeaseState>,
    progress: tokio::sync::Mutex<Progress>,
    millis_behind: AtomicI64,
}

impl<H: KinesisHandler> ShardShared<H> {
    fn shard_id(&self) -> &str {
        &self.source.shard_id
    }

    /// No new work: shutdown, the lease handed back, lost or run out.
    fn halted(&self) -> bool {
        *self.stop.borrow() || self.lease.lost() || self.lease.expired()
    }

    /// Marks records finished and moves the checkpoint as far as the shard allows.
    /// The lock is held across the write so checkpoints are written in order.
    async fn finish(&self, records: &[Pending]) {
        let mut progress = self.progress.lock().await;
        for r in records {
            progress.finish(r.seq());
        }
        if let Some(seq) = progress.advance() {
            self.save_checkpoint(&seq).await;
        }
    }

    async fn save_checkpoint(&self, seq: &str) {
        let mut failures = 0;
        loop {
            let saved = self
                .ctx
                .checkpoints
                .save_as(self.shard_id(), seq, Some(self.ctx.leases.owner()))
                .await;
            match saved {
                Ok(()) => return,
                Err(RuntimeError::LeaseLost(_)) => {
                    tracing::warn!(shard = %self.shard_id(), "checkpoint refused: the lease is another instance's");
                    self.lease.lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(shard = %self.shard_id(), error = %e, "checkpoint write failed");
                    if failures >= CHECKPOINT_MAX_ATTEMPTS || !e.retryable() {
                        return;
                    }
                    let wait =
                        backoff::full_jitter(failures - 1, CALL_BACKOFF_BASE, CALL_BACKOFF_MAX);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// One lane: its buffered records, when its batching window closes, whether a batch of
/// it is running.
#[derive(Default)]
struct Lane {
    buffer: VecDeque<Pending>,
    deadline: Option<Instant>,
    busy: bool,
}

struct ShardReader<H> {
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
    async fn run(
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
            let lease = self.shared.lease.clone();
            if self.interrupted || *self.stop.borrow() || lease.lost() {
                self.drain().await;
                return Ok(if lease.lost() || lease.expired() {
                    ShardEnd::Lost
                } else {
                    ShardEnd::Stopped
                });
            }
            if lease.expired() {
                // A renewal is late (a slow table): start nothing until it comes, or the
                // lease turns out to be another instance's. Not for ever: a pause that
                // outlasts a whole lease duration ends the reader, so the coordinator sees
                // it and takes the shard again from its checkpoint.
                let since = *paused_since.get_or_insert_with(|| {
                    tracing::warn!(shard = %self.shard_id(), "lease renewal late; reader paused");
                    Instant::now()
                });
                if since.elapsed() >= config.lease_duration() {
                    tracing::warn!(shard = %self.shard_id(), "lease not renewed for a whole lease duration; giving the shard up");
                    self.interrupted = true;
                    continue;
                }
                self.wait(EMPTY_POLL_INTERVAL).await;
                continue;
            }
            if paused_since.take().is_some() {
                tracing::info!(shard = %self.shard_id(), "lease renewed; reader resumed");
            }
            if self.closed
                && self.inflight.is_empty()
                && self.lanes.iter().all(|l| l.buffer.is_empty())
            {
                self.shared.save_checkpoint(SHARD_END).await;
                return Ok(if self.shared.lease.lost() {
                    ShardEnd::Lost
                } else {
                    ShardEnd::Finished
                });
            }
            self.start_ready_lanes(batch_size);
            if self.closed {
                self.wait(self.next_deadline()).await;
                continue;
            }
            if self.iterator.is_none() {
                match self.new_iterator().await {
                    Ok(()) => failures = 0,
                    Err(e) if e.retryable() => {
                        tracing::warn!(shard = %self.shard_id(), error = %e, "GetShardIterator failed");
                        self.wait(call_backoff(&mut failures)).await;
                    }
                    Err(e) => {
                        self.interrupted = true;
                        self.drain().await;
                        return Err(RuntimeError::Aws(e));
                    }
                }
                continue;
            }
            let buffered: usize = self.lanes.iter().map(|l| l.buffer.len()).sum();
            if buffered >= cap {
                self.wait(self.next_deadline()).await;
                continue;
            }
            let limit = (cap - buffered).clamp(1, GET_RECORDS_MAX_LIMIT);
            match self.fetch(limit, window).await {
                Ok(0) => {
                    failures = 0;
                    if !self.closed {
                        self.wait(self.next_deadline()).await;
                    }
                }
                Ok(_) => failures = 0,
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
                    self.wait(call_backoff(&mut failures)).await;
                }
                Err(e) => {
                    self.interrupted = true;
                    self.drain().await;
                    return Err(RuntimeError::Aws(e));
                }
            }
        }
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

/// Runs one batch of one lane to its end with Lambda's semantics. Segments are handled
/// front to back; every record finished (processed, or handed to the destination) is
/// reported to the shard's progress as soon as it is.
async fn deliver<H: KinesisHandler>(
    shared: Arc<ShardShared<H>>,
    batch: Vec<Pending>,
) -> Result<(), Interrupted> {
    let config = &shared.ctx.config;
    let mut metrics = Metrics::new(config.function_name.clone());
    if let Some(last) = batch.last() {
        let age = ((shared.ctx.clock)() - last.arrival())
            .num_milliseconds()
            .max(0);
        let behind = shared.millis_behind.load(Ordering::SeqCst);
        metrics.millis("IteratorAgeMs", age.max(behind) as f64);
    }
    let mut segments = VecDeque::from([Segment {
        records: batch,
        attempts: 0,
    }]);
    let result = deliver_segments(&shared, &mut segments, &mut metrics).await;
    metrics.flush();
    result
}

async fn deliver_segments<H: KinesisHandler>(
    shared: &ShardShared<H>,
    segments: &mut VecDeque<Segment>,
    metrics: &mut Metrics,
) -> Result<(), Interrupted> {
    let config = &shared.ctx.config;
    let mut stop = shared.stop.clone();
    while let Some(mut segment) = segments.pop_front() {
        let (expired, fresh) = split_expired(
            std::mem::take(&mut segment.records),
            config.max_record_age(),
            (shared.ctx.clock)(),
        );
        if !expired.is_empty() {
            give_up(
                shared,
                &expired,
                Condition::RecordAgeExceeded,
                segment.attempts,
                metrics,
            )
            .await?;
            shared.finish(&expired).await;
        }
        segment.records = fresh;
        if segment.records.is_empty() {
            continue;
        }
        if segment.attempts > 0 && shared.halted() {
            // Stop retrying at shutdown or without a lease; these records are delivered
            // after a restart, or by the instance that holds the shard next.
            return Err(Interrupted);
        }
        metrics.count("Batches", 1);
        metrics.count("Records", segment.records.len() as u64);
        let started = Instant::now();
        let handler = shared.ctx.handler.clone();
        let event = crate::deaggregate::expand(event_of(&segment.records));
        let fault = shared
            .ctx
            .faults
            .as_ref()
            .and_then(crate::fault::Faults::draw);
        if fault.is_some() {
            metrics.count("FaultsInjected", 1);
        }
        // Its own task, so a panicking handler fails the batch like a crashed function.
        let outcome = crate::fault::apply(fault, async move {
            tokio::spawn(async move { handler.handle(event).await }).await
        })
        .await;
        metrics.millis("HandlerMs", started.elapsed().as_secs_f64() * 1000.0);
        crate::report_usage(&config.function_name);
        let failed_from = match outcome {
            Ok(Ok(response)) => match verdict(
                &segment.records,
                &response,
                config.report_batch_item_failures,
            ) {
                Verdict::Success => None,
                Verdict::FailedFrom(i) => Some(i),
                Verdict::WholeBatchFailed => {
                    tracing::warn!(shard = %shared.shard_id(), "batch item failures name no record of the batch");
                    Some(0)
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(shard = %shared.shard_id(), error = %e, records = segment.records.len(), "handler failed");
                metrics.count("BatchErrors", 1);
                if config.bisect_batch_on_function_error && segment.records.len() > 1 {
                    // A split costs no retry: retries count per segment, so a poison
                    // record cannot drag good neighbours into the destination.
                    metrics.count("Bisections", 1);
                    let (first, second) = bisect(segment.records);
                    segments.push_front(Segment {
                        records: second,
                        attempts: 0,
                    });
                    segments.push_front(Segment {
                        records: first,
                        attempts: 0,
                    });
                    continue;
                }
                Some(0)
            }
            Err(join) => {
                tracing::error!(shard = %shared.shard_id(), error = %join, "handler panicked");
                metrics.count("BatchErrors", 1);
                Some(0)
            }
        };
        let Some(i) = failed_from else {
            shared.finish(&segment.records).await;
            continue;
        };
        if i > 0 {
            let done: Vec<Pending> = segment.records.drain(..i).collect();
            shared.finish(&done).await;
        }
        segment.attempts += 1;
        if config.retries_exhausted(segment.attempts) {
            give_up(
                shared,
                &segment.records,
                Condition::RetryAttemptsExhausted,
                segment.attempts,
                metrics,
            )
            .await?;
            shared.finish(&segment.records).await;
            continue;
        }
        metrics.count("Retries", 1);
        let wait =
            backoff::full_jitter(segment.attempts - 1, RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX);
        segments.push_front(segment);
        if pause(&mut stop, wait).await {
            return Err(Interrupted);
        }
    }
    Ok(())
}

/// Sends records given up on to the on-failure destination, retrying until it takes them
/// (losing them is worse than waiting); without a destination they are logged and
/// dropped, as Lambda does.
async fn give_up<H: KinesisHandler>(
    shared: &ShardShared<H>,
    records: &[Pending],
    condition: Condition,
    attempts: u32,
    metrics: &mut Metrics,
) -> Result<(), Interrupted> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    metrics.count("RecordsToDestination", records.len() as u64);
    let Some(queue_url) = shared.ctx.config.on_failure_queue_url.clone() else {
        tracing::error!(
            shard = %shared.shard_id(), condition = condition.as_str(),
            start = first.seq(), end = last.seq(), count = records.len(),
            "dropping records: no on-failure destination"
        );
        return Ok(());
    };
    let ctx = FailureContext {
        function_arn: &shared.ctx.function_arn,
        stream_arn: &shared.ctx.stream_arn,
        shard_id: shared.shard_id(),
        condition,
        invoke_count: attempts,
        now: (shared.ctx.clock)(),
    };
    let mut messages = vec![SqsMessage {
        id: "0".to_owned(),
        body: failure_message(&ctx, records).to_body(),
        attributes: Vec::new(),
    }];
    let mut stop = shared.stop.clone();
    let mut failures = 0;
    loop {
        let error = match shared.ctx.sqs.send_all(&queue_url, messages.clone()).await {
            Ok(outcome) if outcome.failed.is_empty() => break,
            Ok(outcome) => {
                let failed: HashSet<usize> = outcome.failed.iter().map(|f| f.index).collect();
                let error = outcome
                    .failed
                    .first()
                    .map(|f| f.error.to_string())
                    .unwrap_or_default();
                messages = messages
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| failed.contains(i))
                    .map(|(_, m)| m)
                    .collect();
                error
            }
            Err(e) => e.to_string(),
        };
        tracing::error!(shard = %shared.shard_id(), error = %error, "on-failure destination refused records; retrying");
        if pause(&mut stop, call_backoff(&mut failures)).await {
            return Err(Interrupted);
        }
    }
    tracing::warn!(
        shard = %shared.shard_id(), condition = condition.as_str(),
        start = first.seq(), end = last.seq(), count = records.len(),
        "records sent to the on-failure destination"
    );
    Ok(())
}

/// The next pause after a failed call; counts the failure.
fn call_backoff(failures: &mut u32) -> Duration {
    let wait = backoff::full_jitter(*failures, CALL_BACKOFF_BASE, CALL_BACKOFF_MAX);
    *failures = failures.saturating_add(1);
    wait
}

/// Sleeps `d` unless shutdown comes first; true when shutting down.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
        () = tokio::time::sleep(d) => *stop.borrow(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
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

    #[test]
    fn checkpoint_stops_at_the_lowest_unfinished_record() {
        let mut p = Progress::default();
        for seq in ["8", "9", "10", "11", "100"] {
            p.track(seq);
        }
        p.finish("9");
        p.finish("11");
        assert_eq!(p.advance(), None, "8 is not finished");
        p.finish("8");
        assert_eq!(p.advance(), Some("9".to_owned()), "10 holds the rest back");
        p.finish("10");
        assert_eq!(p.advance(), Some("11".to_owned()));
        p.finish("100");
        assert_eq!(p.advance(), Some("100".to_owned()));
        assert_eq!(p.advance(), None);
        p.finish("7");
        assert_eq!(p.advance(), None, "an untracked record changes nothing");
    }

    #[test]
    fn arns_give_region_and_account() {
        assert_eq!(
            arn_region_account("arn:aws:kinesis:eu-west-1:123456789012:stream/raw"),
            Some(("eu-west-1".to_owned(), "123456789012".to_owned()))
        );
        assert_eq!(arn_region_account("nope"), None);
    }

    #[tokio::test]
    async fn pause_ends_early_on_shutdown() {
        let (tx, mut rx) = watch::channel(false);
        assert!(!pause(&mut rx, Duration::from_millis(1)).await);
        let handle = tokio::spawn(async move { pause(&mut rx, Duration::from_secs(600)).await });
        tx.send(true).unwrap();
        assert!(handle.await.unwrap());
    }
}
