//! The local event source mapping: reads a Kinesis stream shard by shard and invokes the
//! handler in-process with Lambda's semantics, checkpointing in DynamoDB.
//!
//! Shape: [`run_local`] is the coordinator. It lists the shards (again every
//! [`SHARD_DISCOVERY_INTERVAL`] and whenever a shard finishes), starts one reader task per
//! shard whose parents are done, and on shutdown waits for every reader to finish its
//! batch. A reader ([`ShardReader`]) keeps a buffer of fetched records, cuts batches from
//! it, and [`ShardReader::deliver`] runs a batch to completion: retries, bisection,
//! partial failures, record age, the on-failure destination, checkpoints.
//!
//! A parallelization factor above 1 would give each reader several in-flight batches with
//! disjoint partition keys; the reader owns its buffer, so that fits here later.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use chrono::Utc;
use riffle_aws::{AwsError, SqsMessage, SqsSender, backoff};
use riffle_telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::checkpoint::{Checkpoint, CheckpointStore, SHARD_END};
use crate::config::{EsmConfig, StartingPosition};
use crate::destination::{Condition, FailureContext, failure_messages};
use crate::event::{Pending, Source, Verdict, bisect, cut_batch, event_of, split_expired, verdict};
use crate::{KinesisHandler, RuntimeError};

/// Kinesis limit: records per GetRecords call.
pub const GET_RECORDS_MAX_LIMIT: usize = 10_000;
/// Pause after an empty GetRecords. Lambda polls a shard about once a second; a shorter
/// pause keeps local latency low, and is well inside the 5 reads/s a shard allows.
pub const EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the shard list is read for new shards.
pub const SHARD_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
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

/// Runs the mapping until `shutdown` completes; then every reader finishes the batch it
/// is on, checkpoints, and this returns.
///
/// # Errors
/// A setting out of Lambda's limits, or a stream that cannot be described.
pub async fn run_local<H: KinesisHandler>(
    handler: Arc<H>,
    config: EsmConfig,
    sdk: &aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RuntimeError> {
    config.validate()?;
    if config.parallelization_factor > 1 {
        tracing::warn!(
            factor = config.parallelization_factor,
            "parallelization factor above 1 runs as 1 locally"
        );
    }
    let kinesis = riffle_aws::kinesis_client(sdk);
    let (stop_tx, stop_rx) = watch::channel(false);
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
    let ctx = Arc::new(Ctx {
        function_arn: format!(
            "arn:aws:lambda:{region}:{account}:function:{}",
            config.function_name
        ),
        invoke_identity_arn: format!("arn:aws:iam::{account}:role/{}", config.function_name),
        region,
        stream_arn,
        checkpoints: CheckpointStore::new(
            riffle_aws::dynamodb_client(sdk),
            config.checkpoint_table.clone(),
            &config.function_name,
            &config.stream_name,
        ),
        sqs: SqsSender::new(riffle_aws::sqs_client(sdk)),
        kinesis,
        handler,
        config,
        stop: stop_rx,
    });
    tracing::info!(stream = %ctx.config.stream_name, function = %ctx.config.function_name, "local event source mapping started");

    let mut readers: JoinSet<(String, Result<ShardEnd, RuntimeError>)> = JoinSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut list_failures: u32 = 0;
    loop {
        match list_shards(&ctx.kinesis, &ctx.config.stream_name).await {
            Ok(shards) => {
                list_failures = 0;
                for shard_id in startable(&shards, &running, &finished) {
                    running.insert(shard_id.clone());
                    let ctx = ctx.clone();
                    readers.spawn(async move {
                        let result = ShardReader::run(ctx, shard_id.clone()).await;
                        (shard_id, result)
                    });
                }
            }
            Err(e) => {
                list_failures += 1;
                tracing::warn!(error = %e, "ListShards failed; will try again");
            }
        }
        let pause = if list_failures > 0 {
            backoff::full_jitter(list_failures - 1, CALL_BACKOFF_BASE, CALL_BACKOFF_MAX)
        } else {
            SHARD_DISCOVERY_INTERVAL
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = readers.join_next(), if !readers.is_empty() => {
                handle_reader_end(joined, &mut running, &mut finished);
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("shutting down: finishing in-flight batches");
    let _ = stop_tx.send(true);
    while let Some(joined) = readers.join_next().await {
        handle_reader_end(joined, &mut running, &mut finished);
    }
    Ok(())
}

fn handle_reader_end(
    joined: Result<(String, Result<ShardEnd, RuntimeError>), tokio::task::JoinError>,
    running: &mut HashSet<String>,
    finished: &mut HashSet<String>,
) {
    match joined {
        Ok((shard_id, result)) => {
            running.remove(&shard_id);
            match result {
                Ok(ShardEnd::Finished) => {
                    tracing::info!(shard = %shard_id, "shard finished");
                    finished.insert(shard_id);
                }
                Ok(ShardEnd::Stopped) => {}
                // Started again at the next shard listing.
                Err(e) => tracing::error!(shard = %shard_id, error = %e, "shard reader failed"),
            }
        }
        // A reader task cannot panic on its own data (the handler runs in its own task),
        // so this is a bug; its shard id is lost, so it is not restarted.
        Err(e) => tracing::error!(error = %e, "shard reader task died"),
    }
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` -> (REGION, ACCOUNT).
fn arn_region_account(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.split(':');
    let region = parts.nth(3)?;
    let account = parts.next()?;
    Some((region.to_owned(), account.to_owned()))
}

/// Shards to start now: not running, not finished, and each parent either finished or
/// gone from the listing (trimmed away). Children wait for parents so a key's records in
/// the parent are handled before its records in the child.
fn startable(
    shards: &[Shard],
    running: &HashSet<String>,
    finished: &HashSet<String>,
) -> Vec<String> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
    let done = |p: Option<&str>| p.is_none_or(|p| finished.contains(p) || !listed.contains(p));
    shards
        .iter()
        .filter(|s| !running.contains(s.shard_id()) && !finished.contains(s.shard_id()))
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
    sqs: SqsSender,
    stream_arn: String,
    region: String,
    function_arn: String,
    invoke_identity_arn: String,
    stop: watch::Receiver<bool>,
}

/// How a reader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardEnd {
    /// The shard is closed and read to its end.
    Finished,
    /// Shutdown.
    Stopped,
}

/// A batch was cut short by shutdown: its unfinished records stay after the checkpoint.
struct Interrupted;

/// One batch segment on its way: the records and the retries spent on them.
struct Segment {
    records: Vec<Pending>,
    attempts: u32,
}

struct ShardReader<H> {
    ctx: Arc<Ctx<H>>,
    stop: watch::Receiver<bool>,
    source: Source,
    iterator: Option<String>,
    /// Where reading began in this run, for a new iterator when nothing was fetched yet.
    start: Checkpoint,
    last_fetched: Option<String>,
    buffer: VecDeque<Pending>,
    closed: bool,
    millis_behind: Option<i64>,
}

impl<H: KinesisHandler> ShardReader<H> {
    async fn run(ctx: Arc<Ctx<H>>, shard_id: String) -> Result<ShardEnd, RuntimeError> {
        let mut stop = ctx.stop.clone();
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
        let source = Source {
            aws_region: ctx.region.clone(),
            event_source_arn: ctx.stream_arn.clone(),
            invoke_identity_arn: ctx.invoke_identity_arn.clone(),
            shard_id,
        };
        let mut reader = ShardReader {
            ctx,
            stop,
            source,
            iterator: None,
            start,
            last_fetched: None,
            buffer: VecDeque::new(),
            closed: false,
            millis_behind: None,
        };
        reader.read().await
    }

    fn shard_id(&self) -> &str {
        &self.source.shard_id
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn read(&mut self) -> Result<ShardEnd, RuntimeError> {
        let batch_size = self.ctx.config.batch_size as usize;
        let window = Duration::from_secs(u64::from(self.ctx.config.maximum_batching_window_secs));
        let mut window_deadline: Option<Instant> = None;
        let mut failures: u32 = 0;
        loop {
            if self.stopped() {
                return Ok(ShardEnd::Stopped);
            }
            if self.closed && self.buffer.is_empty() {
                self.save_checkpoint(SHARD_END).await;
                return Ok(ShardEnd::Finished);
            }
            let buffered_bytes: usize = self.buffer.iter().map(|p| p.size).sum();
            let ready = !self.buffer.is_empty()
                && (self.closed
                    || self.buffer.len() >= batch_size
                    || buffered_bytes >= crate::event::INVOCATION_PAYLOAD_MAX_BYTES
                    || window_deadline.is_none_or(|d| Instant::now() >= d));
            if ready {
                let batch = cut_batch(&mut self.buffer, batch_size);
                if self.deliver(batch).await.is_err() {
                    return Ok(ShardEnd::Stopped);
                }
                window_deadline = (!self.buffer.is_empty()).then(|| Instant::now() + window);
                continue;
            }
            if self.iterator.is_none() {
                match self.new_iterator().await {
                    Ok(()) => failures = 0,
                    Err(e) if e.retryable() => {
                        tracing::warn!(shard = %self.shard_id(), error = %e, "GetShardIterator failed");
                        if pause(&mut self.stop, call_backoff(&mut failures)).await {
                            return Ok(ShardEnd::Stopped);
                        }
                    }
                    Err(e) => return Err(RuntimeError::Aws(e)),
                }
                continue;
            }
            let limit = batch_size
                .saturating_sub(self.buffer.len())
                .clamp(1, GET_RECORDS_MAX_LIMIT);
            match self.fetch(limit).await {
                Ok(0) => {
                    failures = 0;
                    let mut wait = EMPTY_POLL_INTERVAL;
                    if let Some(d) = window_deadline {
                        wait = wait.min(d.saturating_duration_since(Instant::now()));
                    }
                    if !self.closed && pause(&mut self.stop, wait).await {
                        return Ok(ShardEnd::Stopped);
                    }
                }
                Ok(_) => {
                    failures = 0;
                    if window_deadline.is_none() {
                        window_deadline = Some(Instant::now() + window);
                    }
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some("ExpiredIteratorException" | "InvalidArgumentException")
                    ) =>
                {
                    // Resume right after what was fetched; the buffer keeps what it has.
                    tracing::info!(shard = %self.shard_id(), code = ?e.code(), "iterator lost; getting a new one");
                    self.iterator = None;
                }
                Err(e) if e.retryable() => {
                    tracing::warn!(shard = %self.shard_id(), error = %e, "GetRecords failed; backing off");
                    if pause(&mut self.stop, call_backoff(&mut failures)).await {
                        return Ok(ShardEnd::Stopped);
                    }
                }
                Err(e) => return Err(RuntimeError::Aws(e)),
            }
        }
    }

    async fn new_iterator(&mut self) -> Result<(), AwsError> {
        let config = &self.ctx.config;
        let mut request = self
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

    /// One GetRecords into the buffer; the number of records fetched.
    async fn fetch(&mut self, limit: usize) -> Result<usize, AwsError> {
        let Some(iterator) = self.iterator.clone() else {
            return Ok(0);
        };
        let out = self
            .ctx
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetRecords", e))?;
        let records = out.records();
        for r in records {
            self.buffer.push_back(Pending::new(self.source.record(r)));
        }
        if let Some(last) = records.last() {
            self.last_fetched = Some(last.sequence_number().to_owned());
        }
        self.millis_behind = out.millis_behind_latest();
        self.iterator = out.next_shard_iterator().map(str::to_owned);
        if self.iterator.is_none() {
            self.closed = true;
        }
        Ok(records.len())
    }

    /// Runs one batch to its end with Lambda's semantics. Segments are handled front to
    /// back, so when a segment is done every record before it is done too, and the
    /// checkpoint can move to its last record.
    async fn deliver(&mut self, batch: Vec<Pending>) -> Result<(), Interrupted> {
        let config = self.ctx.config.clone();
        let mut metrics = Metrics::new(config.function_name.clone());
        if let Some(last) = batch.last() {
            let age = (Utc::now() - last.arrival()).num_milliseconds().max(0);
            let behind = self.millis_behind.unwrap_or(0);
            metrics.millis("IteratorAgeMs", age.max(behind) as f64);
        }
        let mut segments = VecDeque::from([Segment {
            records: batch,
            attempts: 0,
        }]);
        let result = self
            .deliver_segments(&config, &mut segments, &mut metrics)
            .await;
        metrics.flush();
        result
    }

    async fn deliver_segments(
        &mut self,
        config: &EsmConfig,
        segments: &mut VecDeque<Segment>,
        metrics: &mut Metrics,
    ) -> Result<(), Interrupted> {
        while let Some(mut segment) = segments.pop_front() {
            let (expired, fresh) = split_expired(
                std::mem::take(&mut segment.records),
                config.max_record_age(),
                Utc::now(),
            );
            if !expired.is_empty() {
                self.give_up(
                    &expired,
                    Condition::RecordAgeExceeded,
                    segment.attempts,
                    metrics,
                )
                .await?;
            }
            segment.records = fresh;
            let Some(last_seq) = segment.records.last().map(|p| p.seq().to_owned()) else {
                if let Some(last) = expired.last() {
                    self.save_checkpoint(last.seq()).await;
                }
                continue;
            };
            if segment.attempts > 0 && self.stopped() {
                // Stop retrying at shutdown; these records are delivered after a restart.
                return Err(Interrupted);
            }
            metrics.count("Batches", 1);
            metrics.count("Records", segment.records.len() as u64);
            let started = Instant::now();
            let handler = self.ctx.handler.clone();
            let event = crate::deaggregate::expand(event_of(&segment.records));
            // Its own task, so a panicking handler fails the batch like a crashed function.
            let outcome = tokio::spawn(async move { handler.handle(event).await }).await;
            metrics.millis("HandlerMs", started.elapsed().as_secs_f64() * 1000.0);
            let failed_from = match outcome {
                Ok(Ok(response)) => match verdict(
                    &segment.records,
                    &response,
                    config.report_batch_item_failures,
                ) {
                    Verdict::Success => None,
                    Verdict::FailedFrom(i) => Some(i),
                    Verdict::WholeBatchFailed => {
                        tracing::warn!(shard = %self.shard_id(), "batch item failures name no record of the batch");
                        Some(0)
                    }
                },
                Ok(Err(e)) => {
                    tracing::warn!(shard = %self.shard_id(), error = %e, records = segment.records.len(), "handler failed");
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
                    tracing::error!(shard = %self.shard_id(), error = %join, "handler panicked");
                    metrics.count("BatchErrors", 1);
                    Some(0)
                }
            };
            let Some(i) = failed_from else {
                self.save_checkpoint(&last_seq).await;
                continue;
            };
            if i > 0 {
                if let Some(done) = segment.records.get(i - 1) {
                    let seq = done.seq().to_owned();
                    self.save_checkpoint(&seq).await;
                }
                segment.records.drain(..i);
            }
            segment.attempts += 1;
            if config.retries_exhausted(segment.attempts) {
                self.give_up(
                    &segment.records,
                    Condition::RetryAttemptsExhausted,
                    segment.attempts,
                    metrics,
                )
                .await?;
                self.save_checkpoint(&last_seq).await;
                continue;
            }
            metrics.count("Retries", 1);
            let wait =
                backoff::full_jitter(segment.attempts - 1, RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX);
            segments.push_front(segment);
            if pause(&mut self.stop, wait).await {
                return Err(Interrupted);
            }
        }
        Ok(())
    }

    /// Sends records given up on to the on-failure destination, retrying until it takes
    /// them (losing them is worse than waiting); without a destination they are logged
    /// and dropped, as Lambda does.
    async fn give_up(
        &mut self,
        records: &[Pending],
        condition: Condition,
        attempts: u32,
        metrics: &mut Metrics,
    ) -> Result<(), Interrupted> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        metrics.count("RecordsToDestination", records.len() as u64);
        let Some(queue_url) = self.ctx.config.on_failure_queue_url.clone() else {
            tracing::error!(
                shard = %self.shard_id(), condition = condition.as_str(),
                start = first.seq(), end = last.seq(), count = records.len(),
                "dropping records: no on-failure destination"
            );
            return Ok(());
        };
        let ctx = FailureContext {
            function_arn: &self.ctx.function_arn,
            stream_arn: &self.ctx.stream_arn,
            shard_id: &self.source.shard_id,
            condition,
            invoke_count: attempts,
            now: Utc::now(),
        };
        let mut messages: Vec<SqsMessage> = failure_messages(&ctx, records)
            .into_iter()
            .enumerate()
            .map(|(i, body)| SqsMessage {
                id: i.to_string(),
                body,
                attributes: Vec::new(),
            })
            .collect();
        let mut failures = 0;
        loop {
            let error = match self.ctx.sqs.send_all(&queue_url, messages.clone()).await {
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
            tracing::error!(shard = %self.shard_id(), error = %error, "on-failure destination refused records; retrying");
            if pause(&mut self.stop, call_backoff(&mut failures)).await {
                return Err(Interrupted);
            }
        }
        tracing::warn!(
            shard = %self.shard_id(), condition = condition.as_str(),
            start = first.seq(), end = last.seq(), count = records.len(),
            "records sent to the on-failure destination"
        );
        Ok(())
    }

    async fn save_checkpoint(&mut self, seq: &str) {
        let mut failures = 0;
        loop {
            match self.ctx.checkpoints.save(self.shard_id(), seq).await {
                Ok(()) => return,
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

    #[test]
    fn children_wait_for_their_parents() {
        let shards = vec![
            shard("s0", None, None),
            shard("s1", None, None),
            shard("s2", Some("s0"), Some("s1")),
            shard("s3", Some("gone"), None),
        ];
        let none = HashSet::new();
        assert_eq!(startable(&shards, &none, &none), ["s0", "s1", "s3"]);
        let running: HashSet<String> = ["s1".to_owned()].into();
        let finished: HashSet<String> = ["s0".to_owned()].into();
        assert_eq!(startable(&shards, &running, &finished), ["s3"]);
        let finished: HashSet<String> = ["s0".to_owned(), "s1".to_owned()].into();
        assert_eq!(startable(&shards, &none, &finished), ["s2", "s3"]);
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
