//! riffle-aggregator: folds events from the `enriched` stream into the DynamoDB
//! materialized view, one item per (agg_key, window_start) holding count, sum, min and max.
//!
//! Layout:
//! - [`handler`]: [`Aggregator`], the pure batch handler; its dependencies are ports.
//! - [`aggregate`]: pre-aggregation per view item and the merge into the stored item, which
//!   skips what the item already holds (per input shard, the highest record position
//!   applied), so redelivered records count once.
//! - [`store`]: the [`ViewStore`] port and its DynamoDB implementation (BatchGetItem, then
//!   one conditional PutItem per item per batch).
//!
//! Decoding the batch's envelopes and parking the records no retry can fix on the stage's
//! dead-letter queue are shared with the archiver, which reads the same stream:
//! `riffle_stage::decode` and `riffle_stage::dead_letter` (whose doc explains why they are
//! parked rather than reported as batch item failures). So are the origin marks that drop a
//! copy of an event already applied (a producer retry, an upstream re-publish):
//! `riffle_stage::marks`. docs/adr/0009-exactly-once-effects.md (A, the position guard in each
//! item) and docs/adr/0010-exactly-once-at-batch-cost.md tell how the two guards make the view
//! count every event once, and where that stops.
//! - [`config`]: the typed [`Config::from_env`].
//! - [`error`]: [`AggregatorError`], which knows whether a failed batch is worth retrying.
//!
//! `main.rs` only wires these to the AWS clients and `riffle_runtime`.

pub mod aggregate;
pub mod config;
mod error;
pub mod handler;
pub mod store;

pub use config::Config;
pub use error::AggregatorError;
pub use handler::{Aggregator, BatchReport, window_lengths};
pub use store::{DynamoViewStore, ViewStore};
