//! riffle-aggregator: folds events from the `enriched` stream into the DynamoDB
//! materialized view, one item per (agg_key, window_start) holding count, sum, min and max.
//!
//! Layout:
//! - [`handler`]: [`Aggregator`], the pure batch handler; its dependencies are ports. It runs
//!   the steps below in order, writes the marks once the items are written, and reports what
//!   the batch did (metrics, ingest-to-view latency).
//! - `admit`: which records of the batch count: the usable ones (non-finite metrics and
//!   records without a Kinesis position are parked), with their subject's window, less the
//!   copies the origin marks know.
//! - [`aggregate`]: pre-aggregation per view item and the merge into the stored item, which
//!   skips what the item already holds (per input shard, the highest record position
//!   applied), so redelivered records count once.
//! - `write`: the view items read, merged and written back, a bounded number at a time,
//!   each re-read and merged again after a lost race.
//! - [`store`]: the [`ViewStore`] port and its DynamoDB implementation (BatchGetItem, then
//!   one conditional PutItem per item per batch).
//! - [`config`]: the typed [`Config::from_env`].
//! - [`error`]: [`AggregatorError`], which knows whether a failed batch is worth retrying.
//! - `fixtures` (tests only): the in-memory view and aggregator every step's tests run.
//!
//! Decoding the batch's envelopes and parking the records no retry can fix on the stage's
//! dead-letter queue are shared with the archiver, which reads the same stream:
//! `riffle_stage::decode` and `riffle_stage::dead_letter` (whose doc explains why they are
//! parked rather than reported as batch item failures). So are the origin marks that drop a
//! copy of an event already applied (a producer retry, an upstream re-publish):
//! `riffle_stage::marks`. docs/adr/0009-exactly-once-effects.md (A, the position guard in each
//! item) and docs/adr/0010-exactly-once-at-batch-cost.md tell how the two guards make the view
//! count every event once, and where that stops.
//!
//! `main.rs` only wires these to the AWS clients and `riffle_runtime`.

mod admit;
pub mod aggregate;
pub mod config;
mod error;
#[cfg(test)]
mod fixtures;
pub mod handler;
pub mod store;
mod write;

pub use config::Config;
pub use error::AggregatorError;
pub use handler::{Aggregator, BatchReport, window_lengths};
pub use store::{DynamoViewStore, ViewStore};
