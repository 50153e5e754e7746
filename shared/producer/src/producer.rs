//! [`Producer`]: the handle callers send through, its [`ProducerBuilder`], the background task
//! that puts what is queued, and the counters behind [`Producer::stats`].
//!
//! Buffer space is two semaphores (records and bytes). A record holds its permits from `send`
//! until it is acknowledged or given up on, so a full buffer makes `send` wait and `try_send`
//! fail, whatever stage the records are in (queued, in flight, waiting for a retry).
//!
//! Layout, one job per file:
//! - `builder`: [`ProducerBuilder`], the options with their defaults and the checks that
//!   refuse options that cannot work; `build` starts the background task;
//! - `handle`: [`Producer`], what callers hold: each record checked, its buffer space taken,
//!   and handed to the task; flush and close are messages to the task too;
//! - `task`: the background task: requests cut and put, their outcomes (acknowledged,
//!   retried after a backoff, given up on), flushes and close, the shard map kept fresh;
//! - `stats`: [`Stats`], the counters behind it and their EMF metrics.

mod builder;
mod handle;
mod stats;
mod task;

pub use builder::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_EMF_INTERVAL, DEFAULT_LINGER,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_RECORDS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRIES, MAX_AGGREGATE_BYTES, MIN_AGGREGATE_BYTES, ProducerBuilder,
};
pub use handle::Producer;
pub use stats::Stats;
