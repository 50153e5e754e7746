//! riffle-autoscaler: when to reshard a provisioned Kinesis stream, decided from the
//! stream's per-minute metrics (utilization, consumer lag) and its recent reshards, within
//! UpdateShardCount's limits. The decision is pure ([`decide`]); what reads the metrics and
//! calls Kinesis lives apart, so the same decisions run on AWS (UpdateShardCount) and locally
//! (SplitShard/MergeShards, which is all the local Kinesis has).
//!
//! The rules follow the published reference for Kinesis autoscaling (aws-samples'
//! kinesis-auto-scaling): utilization is the larger of the byte and the record rate against a
//! shard's write limits; scale up when it stays at or above 75% for 5 minutes, down when it
//! stays below 25% for an hour; double or halve at most.
//!
//! Layout: `decide` (the decision, pure); [`reshard`] (a target count as SplitShard and
//! MergeShards calls, pure, for the local twin); [`aws`] (the function on AWS: CloudWatch's
//! minutes in, UpdateShardCount out, reshard times kept in a stream tag); `main.rs` (the
//! scheduled Lambda function over [`aws`]).

pub mod aws;
mod decide;
pub mod reshard;

pub use decide::{Decision, Direction, Hold, Minute, Observation, Policy, decide, utilization};

/// A shard's write limit in bytes per second (1 MiB/s).
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// A shard's write limit in records per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// UpdateShardCount calls allowed per stream in a rolling 24 hours.
pub const UPDATES_PER_DAY: usize = 10;
/// Seconds in the rolling window of [`UPDATES_PER_DAY`].
pub const DAY_SECS: i64 = 24 * 60 * 60;
