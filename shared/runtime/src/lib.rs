//! Riffle's function runtime: runs a Kinesis handler under Lambda on AWS, and under a
//! local event source mapping with Lambda's semantics everywhere else.
//!
//! Layout:
//! - this file: the [`KinesisHandler`] trait, [`run_kinesis`] (picks Lambda or local),
//!   shutdown signals, [`RuntimeError`];
//! - [`config`]: [`EsmConfig`], the mapping's settings with Lambda's limits;
//! - [`record`]: the Lambda Kinesis event's types, parsed with few allocations;
//! - [`event`]: building the Lambda Kinesis event, and the pure rules of the mapping
//!   (batch cutting, partial failures, bisection, record age);
//! - [`shard_item`]: the one DynamoDB item per (function, stream, shard) that holds both
//!   the shard's checkpoint and its lease: attribute names, keys, the failed-condition code;
//! - [`checkpoint`]: per-shard checkpoints in that item;
//! - [`lease`]: per-shard leases in the same items, and the fair-share plan that spreads
//!   shards over the instances of one function;
//! - [`destination`]: the on-failure SQS messages;
//! - [`local`]: the local event source mapping itself, [`run_local`]: `local/mod.rs` (entry
//!   points, options, shared context), `local/coordinator.rs` (leases held, shard listing,
//!   lease renewal), `local/reader.rs` (one shard's reader and its lanes),
//!   `local/shard.rs` (what a shard's lanes share: progress, checkpoint writes) and
//!   `local/delivery.rs` (one batch to the handler: retries, bisection, on-failure);
//! - [`deaggregate`]: KPL aggregates unpacked before any handler sees them;
//! - [`fault`]: transient handler errors injected for fault tests (local mapping only, off
//!   unless `RIFFLE_FAULT_HANDLER_ERROR_RATE` is set).

/// Every binary that runs a stage (and its benches and tests) allocates through mimalloc:
/// the aggregator and the archiver hold a whole batch of decoded envelopes (a dozen small
/// allocations each) at once, and glibc's allocator spent most of their decode time in its
/// slow paths (`malloc_consolidate`, measured with perf in the aggregator bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod checkpoint;
pub mod config;
pub mod deaggregate;
pub mod destination;
pub mod event;
pub mod fault;
pub mod lease;
pub mod local;
pub mod record;
pub mod shard_item;

use riffle_telemetry::names;
use std::error::Error;
use std::future::Future;
use std::sync::Arc;

pub use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
pub use config::{EsmConfig, StartingPosition};
pub use local::{Clock, LocalOptions, run_local, run_local_with};
pub use record::{KinesisEvent, KinesisEventRecord, KinesisRecord, Source};

/// What a handler returns to fail a whole batch (retry, bisect, on-failure destination).
/// The same type `lambda_runtime` uses.
pub type HandlerError = Box<dyn Error + Send + Sync>;

/// Environment variable Lambda sets; its presence means "running on AWS".
pub const LAMBDA_RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";
/// Set to `1` to stop when stdin closes, so a child never outlives its orchestrator.
pub const EXIT_ON_STDIN_EOF_ENV: &str = "RIFFLE_EXIT_ON_STDIN_EOF";

/// A function fed with Kinesis batches.
pub trait KinesisHandler: Send + Sync + 'static {
    /// Handles one batch. Per-record failures go in `batch_item_failures` (sequence
    /// numbers); `Err` fails the whole batch.
    fn handle(
        &self,
        event: KinesisEvent,
    ) -> impl Future<Output = Result<KinesisEventResponse, HandlerError>> + Send;
}

/// Why the runtime could not run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The mapping's settings are missing or out of limits.
    #[error("invalid event source mapping: {0}")]
    Config(String),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] riffle_aws::AwsError),
    /// The stream is not what the mapping expects.
    #[error("stream: {0}")]
    Stream(String),
    /// Another instance holds the lease of this shard now.
    #[error("lease of shard {0} lost")]
    LeaseLost(String),
}

impl RuntimeError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            RuntimeError::Aws(e) => e.retryable(),
            RuntimeError::Config(_) | RuntimeError::Stream(_) | RuntimeError::LeaseLost(_) => false,
        }
    }
}

/// Runs a function's `main` future on the tokio runtime that suits where it runs: one
/// thread under Lambda, which hands a sandbox one invocation at a time (the handlers'
/// concurrency is `join!` within a batch, not threads), and worker threads elsewhere, where
/// the local event source mapping reads every shard at once. Under Lambda the extra worker
/// threads bought nothing and cost memory: each thread keeps its own allocator pages, the
/// largest part of a function's resident set at start (measured with `riffle-dev coldstart`).
///
/// # Errors
/// The runtime could not be built (no threads or file descriptors left), or what `main`
/// returns.
pub fn block_on<T>(
    main: impl Future<Output = Result<T, Box<dyn Error + Send + Sync>>>,
) -> Result<T, Box<dyn Error + Send + Sync>> {
    let mut builder = if std::env::var_os(LAMBDA_RUNTIME_API_ENV).is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()?.block_on(main)
}

/// Runs `handler` until the end: under Lambda when `AWS_LAMBDA_RUNTIME_API` is set,
/// otherwise as the local event source mapping described by `RIFFLE_ESM`, until SIGTERM,
/// SIGINT or (with `RIFFLE_EXIT_ON_STDIN_EOF=1`) the end of stdin.
///
/// # Errors
/// Lambda runtime failures, or the local mapping's [`RuntimeError`].
pub async fn run_kinesis<H: KinesisHandler>(
    handler: H,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let handler = Arc::new(handler);
    if std::env::var_os(LAMBDA_RUNTIME_API_ENV).is_some() {
        let function: Arc<str> = std::env::var(LAMBDA_FUNCTION_NAME_ENV)
            .unwrap_or_default()
            .into();
        // The payload is taken raw and read by `KinesisEvent::from_json`, whose scanner for
        // Lambda's shape is about three times faster than serde's generic walk.
        let service = lambda_runtime::service_fn(
            move |event: lambda_runtime::LambdaEvent<Box<serde_json::value::RawValue>>| {
                let handler = handler.clone();
                let function = function.clone();
                async move {
                    let event = KinesisEvent::from_json(event.payload.get())?;
                    let response = handler.handle(deaggregate::expand(event)).await;
                    report_usage(&function);
                    response
                }
            },
        );
        return lambda_runtime::run(service).await;
    }
    let config = EsmConfig::from_env()?;
    let function = config.function_name.clone();
    let sdk = riffle_aws::sdk_config().await;
    let exit_on_eof = std::env::var(EXIT_ON_STDIN_EOF_ENV).is_ok_and(|v| v == "1");
    let result = run_local(handler, config, &sdk, shutdown_signal(exit_on_eof)).await;
    report_usage(&function);
    result?;
    Ok(())
}

/// The variable Lambda names the function in.
pub const LAMBDA_FUNCTION_NAME_ENV: &str = "AWS_LAMBDA_FUNCTION_NAME";

/// Prints, as metrics of `service`, what this process asked of DynamoDB and Kinesis since the
/// last report (`riffle_aws::meter`): `DynamoItemsRead`, `DynamoItemsWritten`,
/// `DynamoItemsScanned`, `KinesisPutUnits`, `KinesisRecordsPut`. Called after every batch, so
/// the bookkeeping of the handler and of the runtime (checkpoints, leases) is counted with
/// the batch that caused it; each increase is reported once, whichever task reports it.
pub fn report_usage(service: &str) {
    static LAST: std::sync::Mutex<Option<riffle_aws::meter::Usage>> = std::sync::Mutex::new(None);
    let delta = {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = riffle_aws::meter::usage();
        let delta = now.since(&last.unwrap_or_default());
        *last = Some(now);
        delta
    };
    if delta == riffle_aws::meter::Usage::default() {
        return;
    }
    let mut metrics = riffle_telemetry::Metrics::new(service.to_owned());
    metrics.count(names::DYNAMO_ITEMS_READ, delta.dynamo_reads);
    metrics.count(names::DYNAMO_ITEMS_WRITTEN, delta.dynamo_writes);
    metrics.count(names::DYNAMO_ITEMS_SCANNED, delta.dynamo_scanned);
    metrics.count(names::KINESIS_PUT_UNITS, delta.kinesis_put_units);
    metrics.count(names::KINESIS_RECORDS_PUT, delta.kinesis_records);
    metrics.count(names::KINESIS_WRITE_THROTTLED, delta.kinesis_throttled);
    metrics.flush();
}

/// Completes on SIGTERM or SIGINT, or at the end of stdin when `exit_on_stdin_eof`.
pub async fn shutdown_signal(exit_on_stdin_eof: bool) {
    let stdin_closed = async {
        if exit_on_stdin_eof {
            stdin_eof().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate() => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT received"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        },
        () = stdin_closed => tracing::info!("stdin closed"),
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}

/// Reads stdin to its end, throwing the bytes away.
///
/// On a thread of its own, not the runtime's blocking pool: a stage whose start fails (its
/// stream unreachable while Kinesis restarts) returns from `main` with stdin still open, and
/// the runtime waits for its blocking tasks when it shuts down, so a read there kept the
/// failed process alive forever, never seen to exit and never restarted.
async fn stdin_eof() {
    let (done, eof) = tokio::sync::oneshot::channel::<()>();
    let reader = std::thread::Builder::new()
        .name("stdin-eof".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 1024];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = done.send(());
        });
    if let Err(e) = reader {
        tracing::warn!(error = %e, "cannot watch stdin; the end of stdin will not stop this process");
        std::future::pending::<()>().await;
    }
    let _ = eof.await;
}
