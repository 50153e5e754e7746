//! riffle-archiver: writes every event from the `enriched` stream to the S3 archive as
//! Parquet, partitioned `subject=/dt=/hour=` by event time, the event log from which the
//! view can be rebuilt and analysts query with Athena or DuckDB.
//!
//! Layout:
//! - [`handler`]: [`Archiver`], the pure batch handler; its dependencies are ports. Each
//!   event lands once: event-id claims (`riffle_stage::dedup`), marked applied per object
//!   written, and write intents for the window between an object's write and its marks
//!   (docs/adr/0009-exactly-once-effects.md, "Amendment: the archive").
//! - [`intent`]: the [`Intents`] port (which objects an attempt was about to write, per
//!   shard) in the claims table and in memory.
//! - [`config`]: the typed [`Config::from_env`].
//! - [`error`]: [`ArchiverError`], which knows whether a failed batch is worth retrying.
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
pub mod handler;
pub mod intent;

pub use config::Config;
pub use error::ArchiverError;
pub use handler::{Archiver, BatchReport};
pub use intent::{DynamoIntents, Intent, Intents, MemoryIntents};
