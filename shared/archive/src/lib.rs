//! riffle-archive: the S3 archive's format and layout, one definition for everyone who
//! writes or reads it: the archiver (writes), compaction, replay and the local harness
//! (read), and analysts' tools (the Parquet schema and the Hive partitions they query).
//!
//! Layout:
//! - [`table`]: the Parquet schema, [`write_rows`] and [`read_rows`];
//! - [`key`]: partitions (`subject=/dt=/hour=` by event time) and deterministic object keys;
//! - [`store`]: the [`ObjectStore`] port (write) and its S3 implementation;
//! - [`bucket`]: the [`ArchiveBucket`] port (list, read, delete) for operator tools;
//! - [`scan`]: partitions, and which objects are live once compaction has run;
//! - [`compact`]: merging a partition's small objects ([`compact::plan_partition`] pure,
//!   [`compact::run`] against the bucket);
//! - `error`: [`ArchiveError`].

pub mod bucket;
pub mod compact;
mod error;
pub mod key;
pub mod scan;
pub mod store;
pub mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use bucket::{ArchiveBucket, ObjectInfo};
pub use error::ArchiveError;
pub use store::{ObjectStore, S3ObjectStore};
pub use table::{ArchivedRow, read_rows, write_rows};
