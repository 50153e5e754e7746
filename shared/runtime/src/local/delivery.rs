//! Delivery of one lane's batch to the handler with Lambda's semantics: record age,
//! retries with backoff, bisection on function errors, partial batch failures, and the
//! on-failure destination for records given up on.

use riffle_telemetry::names;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use riffle_aws::{SqsMessage, backoff};
use riffle_telemetry::Metrics;
use tokio::sync::watch;

use super::shard::ShardShared;
use super::{RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX, call_backoff, pause};
use crate::destination::{Condition, FailureContext, failure_message};
use crate::event::{Pending, Verdict, bisect, event_of, split_expired, verdict};
use crate::{HandlerError, KinesisEventResponse, KinesisHandler};

/// A batch was cut short by shutdown: its unfinished records stay after the checkpoint.
pub(super) struct Interrupted;

/// One batch segment on its way: the records and the retries spent on them.
struct Segment {
    records: Vec<Pending>,
    attempts: u32,
}

/// How the handler's run went: its answer, its error, or the task it ran in dying.
type Outcome = Result<Result<KinesisEventResponse, HandlerError>, tokio::task::JoinError>;

/// What an invocation of a segment leaves to do.
enum Judged {
    /// Every record is done.
    Done,
    /// The records from this index on failed (0: the whole segment).
    FailedFrom(usize),
    /// The handler failed the whole segment, and bisection splits it in two.
    Split,
}

/// Runs one batch of one lane to its end with Lambda's semantics. Segments are handled
/// front to back; every record finished (processed, or handed to the destination) is
/// reported to the shard's progress as soon as it is.
pub(super) async fn deliver<H: KinesisHandler>(
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
        metrics.millis(names::ITERATOR_AGE_MS, age.max(behind) as f64);
    }
    let mut segments = VecDeque::from([Segment {
        records: batch,
        attempts: 0,
    }]);
    let result = deliver_segments(&shared, &mut segments, &mut metrics).await;
    metrics.flush();
    result
}

/// Works through the segments of one batch until none is left: a segment is invoked,
/// then finished, split, retried or given up on.
async fn deliver_segments<H: KinesisHandler>(
    shared: &ShardShared<H>,
    segments: &mut VecDeque<Segment>,
    metrics: &mut Metrics,
) -> Result<(), Interrupted> {
    let mut stop = shared.stop.clone();
    while let Some(mut segment) = segments.pop_front() {
        give_up_expired(shared, &mut segment, metrics).await?;
        if segment.records.is_empty() {
            continue;
        }
        if segment.attempts > 0 && shared.halted() {
            // Stop retrying at shutdown or without a lease; these records are delivered
            // after a restart, or by the instance that holds the shard next.
            return Err(Interrupted);
        }
        let outcome = invoke(shared, &segment.records, metrics).await;
        let judged = judge(shared, &segment.records, outcome, metrics);
        // Per invocation, as Lambda reports its metrics: a batch retried for a minute shows
        // its errors in every minute, not all at its end.
        metrics.flush();
        match judged {
            Judged::Done => shared.finish(&segment.records).await,
            Judged::Split => {
                let (first, second) = bisect(segment.records);
                segments.push_front(Segment {
                    records: second,
                    attempts: 0,
                });
                segments.push_front(Segment {
                    records: first,
                    attempts: 0,
                });
            }
            Judged::FailedFrom(i) => {
                retry_or_give_up(shared, segments, segment, i, metrics, &mut stop).await?;
            }
        }
    }
    Ok(())
}

/// Hands the segment's records older than the maximum record age to the destination
/// before anything else, as Lambda does: an old record is never invoked again, whatever
/// retries it has left.
async fn give_up_expired<H: KinesisHandler>(
    shared: &ShardShared<H>,
    segment: &mut Segment,
    metrics: &mut Metrics,
) -> Result<(), Interrupted> {
    let (expired, fresh) = split_expired(
        std::mem::take(&mut segment.records),
        shared.ctx.config.max_record_age(),
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
    Ok(())
}

/// Invokes the handler once on `records`, with any injected fault.
async fn invoke<H: KinesisHandler>(
    shared: &ShardShared<H>,
    records: &[Pending],
    metrics: &mut Metrics,
) -> Outcome {
    if let Some(slowdown) = &shared.ctx.slowdown {
        // A throttled invocation never reached the function: not a batch, not a retry.
        metrics.count(names::THROTTLES, slowdown.admit().await);
    }
    metrics.count(names::BATCHES, 1);
    metrics.count(names::RECORDS, records.len() as u64);
    let started = Instant::now();
    let handler = shared.ctx.handler.clone();
    let event = crate::deaggregate::expand(event_of(records));
    let fault = shared
        .ctx
        .faults
        .as_ref()
        .and_then(crate::fault::Faults::draw);
    if fault.is_some() {
        metrics.count(names::FAULTS_INJECTED, 1);
    }
    // Its own task, so a panicking handler fails the batch like a crashed function.
    let outcome = crate::fault::apply(fault, async move {
        tokio::spawn(async move { handler.handle(event).await }).await
    })
    .await;
    metrics.millis(names::HANDLER_MS, started.elapsed().as_secs_f64() * 1000.0);
    crate::report_usage(&shared.ctx.config.function_name);
    outcome
}

/// Reads an invocation's outcome: which records failed, or whether to bisect.
fn judge<H: KinesisHandler>(
    shared: &ShardShared<H>,
    records: &[Pending],
    outcome: Outcome,
    metrics: &mut Metrics,
) -> Judged {
    let config = &shared.ctx.config;
    match outcome {
        Ok(Ok(response)) => match verdict(records, &response, config.report_batch_item_failures) {
            Verdict::Success => Judged::Done,
            Verdict::FailedFrom(i) => Judged::FailedFrom(i),
            Verdict::WholeBatchFailed => {
                tracing::warn!(shard = %shared.shard_id(), "batch item failures name no record of the batch");
                Judged::FailedFrom(0)
            }
        },
        Ok(Err(e)) => {
            tracing::warn!(shard = %shared.shard_id(), error = %e, records = records.len(), "handler failed");
            metrics.count(names::BATCH_ERRORS, 1);
            if config.bisect_batch_on_function_error && records.len() > 1 {
                // A split costs no retry: retries count per segment, so a poison
                // record cannot drag good neighbours into the destination.
                metrics.count(names::BISECTIONS, 1);
                return Judged::Split;
            }
            Judged::FailedFrom(0)
        }
        Err(join) => {
            tracing::error!(shard = %shared.shard_id(), error = %join, "handler panicked");
            metrics.count(names::BATCH_ERRORS, 1);
            Judged::FailedFrom(0)
        }
    }
}

/// Finishes the records before `failed_from`, then puts the rest back at the front for a
/// retry after a backoff, or gives up on them once the retries are spent.
async fn retry_or_give_up<H: KinesisHandler>(
    shared: &ShardShared<H>,
    segments: &mut VecDeque<Segment>,
    mut segment: Segment,
    failed_from: usize,
    metrics: &mut Metrics,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Interrupted> {
    if failed_from > 0 {
        let done: Vec<Pending> = segment.records.drain(..failed_from).collect();
        shared.finish(&done).await;
    }
    segment.attempts += 1;
    if shared.ctx.config.retries_exhausted(segment.attempts) {
        give_up(
            shared,
            &segment.records,
            Condition::RetryAttemptsExhausted,
            segment.attempts,
            metrics,
        )
        .await?;
        shared.finish(&segment.records).await;
        return Ok(());
    }
    metrics.count(names::RETRIES, 1);
    let wait = backoff::full_jitter(segment.attempts - 1, RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX);
    segments.push_front(segment);
    if pause(stop, wait).await {
        return Err(Interrupted);
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
    metrics.count(names::RECORDS_TO_DESTINATION, records.len() as u64);
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
    let message = SqsMessage {
        id: "0".to_owned(),
        body: failure_message(&ctx, records).to_body(),
        attributes: Vec::new(),
    };
    send_until_taken(shared, &queue_url, vec![message]).await?;
    tracing::warn!(
        shard = %shared.shard_id(), condition = condition.as_str(),
        start = first.seq(), end = last.seq(), count = records.len(),
        "records sent to the on-failure destination"
    );
    Ok(())
}

/// Sends `messages` to the destination queue, again and again with a backoff, until every
/// one is taken; only shutdown stops it.
async fn send_until_taken<H: KinesisHandler>(
    shared: &ShardShared<H>,
    queue_url: &str,
    mut messages: Vec<SqsMessage>,
) -> Result<(), Interrupted> {
    let mut stop = shared.stop.clone();
    let mut failures = 0;
    loop {
        let error = match shared.ctx.sqs.send_all(queue_url, messages.clone()).await {
            Ok(outcome) if outcome.failed.is_empty() => return Ok(()),
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
}
