//! The local event source mapping: reads a Kinesis stream shard by shard and invokes the
//! handler in-process with Lambda's semantics, checkpointing in DynamoDB.
//!
//! Shape: [`run_local`] starts the coordinator (`coordinator.rs`). Every lease renewal
//! interval it renews the shard leases it holds, lists the shards, reads the lease table,
//! and takes or hands back leases by the fair-share [`lease::plan`]; it starts one reader
//! task per shard it holds (children only once their parents are finished, by whichever
//! instance), and on shutdown waits for every reader to finish its batches, then releases
//! its leases.
//!
//! A reader (`reader.rs`) fetches records and spreads them over `parallelization_factor`
//! lanes by a hash of the partition key, so one key's records stay in order in one lane.
//! Each lane cuts batches from its own buffer (batch size, window, payload limit) and runs
//! one batch at a time to completion (`delivery.rs`): retries, bisection, partial
//! failures, record age, the on-failure destination. A failing lane holds only itself.
//! Lanes report finished records to the shard's progress (`shard.rs`), and the checkpoint
//! moves to the end of the longest finished prefix of the shard: never past a record some
//! lane has not finished.
//!
//! This file: the entry points and their options, the settings every part shares, the
//! context one mapping runs in, and the pauses after a failure.
//!
//! [`lease::plan`]: crate::lease::plan

mod coordinator;
mod delivery;
mod reader;
mod shard;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use riffle_aws::{AwsError, SqsSender, backoff};
use tokio::sync::watch;

use crate::checkpoint::CheckpointStore;
use crate::config::EsmConfig;
use crate::lease::LeaseStore;
use crate::{KinesisHandler, RuntimeError};
use coordinator::Coordinator;

pub use reader::lane_of;

pub use riffle_aws::limits::KINESIS_GET_RECORDS_MAX as GET_RECORDS_MAX_LIMIT;
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

    let stream_arn = tokio::select! {
        arn = stream_arn(&kinesis, &config.stream_name) => arn?,
        () = &mut shutdown => return Ok(()),
    };
    let ctx = Arc::new(Ctx::new(
        handler, config, sdk, kinesis, stream_arn, options,
    )?);
    tracing::info!(
        stream = %ctx.config.stream_name, function = %ctx.config.function_name,
        instance = %ctx.leases.owner(), lanes = ctx.config.parallelization_factor,
        "local event source mapping started"
    );
    Coordinator::new(ctx).run(shutdown).await;
    Ok(())
}

/// The stream's ARN, which the events carry and the function's ARNs are built from.
async fn stream_arn(
    kinesis: &aws_sdk_kinesis::Client,
    stream_name: &str,
) -> Result<String, RuntimeError> {
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(stream_name)
        .send()
        .await;
    let summary =
        summary.map_err(|e| RuntimeError::Aws(AwsError::from_sdk("DescribeStreamSummary", e)))?;
    summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .ok_or_else(|| RuntimeError::Stream("DescribeStreamSummary gave no ARN".to_owned()))
}

/// What one mapping runs with: every reader and lane shares it.
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
    /// Fault tests only: throttled and delayed invocations (alarm drills).
    slowdown: Option<crate::fault::Slowdown>,
}

impl<H> Ctx<H> {
    /// The context of a mapping of `config` on the stream `stream_arn`; the function and
    /// role ARNs take the stream's region and account, as they would on AWS.
    fn new(
        handler: Arc<H>,
        config: EsmConfig,
        sdk: &aws_config::SdkConfig,
        kinesis: aws_sdk_kinesis::Client,
        stream_arn: String,
        options: LocalOptions,
    ) -> Result<Self, RuntimeError> {
        let (region, account) = arn_region_account(&stream_arn)
            .ok_or_else(|| RuntimeError::Stream(format!("unexpected stream ARN {stream_arn}")))?;
        let owner = options
            .instance_id
            .unwrap_or_else(|| format!("{}-{:016x}", std::process::id(), rand::random::<u64>()));
        let dynamo = riffle_aws::dynamodb_client(sdk);
        Ok(Self {
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
            slowdown: crate::fault::Slowdown::from_env()?,
        })
    }
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` -> (REGION, ACCOUNT).
fn arn_region_account(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.split(':');
    let region = parts.nth(3)?;
    let account = parts.next()?;
    Some((region.to_owned(), account.to_owned()))
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
