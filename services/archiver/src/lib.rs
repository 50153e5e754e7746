//! riffle-archiver: writes every event from the `enriched` stream to the S3 archive as
//! Parquet, partitioned `subject=/dt=/hour=` by event time, the event log from which the
//! view can be rebuilt and analysts query with Athena or DuckDB.
//!
//! Layout:
//! - [`handler`]: [`Archiver`], the pure batch handler; its dependencies are ports. Each
//!   event lands once: event-id claims (`riffle_stage::dedup`), marked applied per object
//!   written, and write intents for the window between an object's write and its marks
//!   (docs/adr/0009-exactly-once-effects.md, "Amendment: the archive"). It runs the steps
//!   below in order and reports what the batch did.
//! - `rows`: a batch's decoded envelopes as archive rows (payloads rendered by their writer
//!   schemas, partition, Kinesis coordinates); what can never be a row is parked.
//! - `recover`: which of the batch's records an earlier attempt already wrote, found through
//!   the shard's write intents in the objects they name (or in the compacted objects that
//!   replaced them); intents no record can come back for are forgotten.
//! - `group`: the rows to write as one Parquet object per (partition, shard), named by the
//!   rows' sequence range and never over an existing object.
//! - `write`: the objects written in waves behind their intents, the marks moved over them,
//!   the intents the marks cover removed.
//! - [`intent`]: the [`Intents`] port (which objects an attempt was about to write, per
//!   shard) in the claims table and in memory.
//! - [`config`]: the typed [`Config::from_env`].
//! - [`error`]: [`ArchiverError`], which knows whether a failed batch is worth retrying.
//! - `fixtures` (tests only): the in-memory archiver and events every step's tests run.
//!
//! The archive's format and layout (Parquet schema, object keys, the object store and bucket
//! ports, compaction) are the `riffle_archive` crate's, shared with the operator tools.
//!
//! Decoding the batch's envelopes, resolving payload schemas once per batch and parking the
//! records no retry can fix on the stage's dead-letter queue are shared with the other
//! stages: `riffle_stage::decode`, `riffle_stage::schemas` and `riffle_stage::dead_letter`
//! (whose doc explains why they are parked rather than reported as batch item failures).
//!
//! `main.rs` only wires these to the AWS clients and `riffle_runtime`.

pub mod config;
mod error;
#[cfg(test)]
mod fixtures;
mod group;
pub mod handler;
pub mod intent;
mod recover;
mod rows;
mod write;

pub use config::Config;
pub use error::ArchiverError;
pub use handler::{Archiver, BatchReport};
pub use intent::{DynamoIntents, Intent, Intents, MemoryIntents};
