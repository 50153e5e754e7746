//! Riffle's producer library: put events on a Kinesis stream, framed in the Riffle envelope,
//! batched and retried in the background, with order per partition key kept across retries.
//!
//! A caller builds one [`Producer`] per stream ([`Producer::builder`]), then [`Producer::send`]s
//! [`ProducerEvent`]s: each is wrapped in an envelope, Confluent-framed with the registered
//! envelope id, checked against Kinesis' per-record limits and queued. A background task cuts the
//! queue into PutRecords requests (at most [`PUT_RECORDS_MAX_RECORDS`] records and
//! [`PUT_RECORDS_MAX_BYTES`] bytes, sent when full or when the linger time has passed), retries
//! only the entries Kinesis refused (exponential backoff, full jitter), and optionally packs
//! records into KPL aggregates per target shard. [`Producer::flush`] waits for everything sent
//! so far and hands back what finally failed; nothing is dropped silently.
//!
//! # Order per partition key
//! Inside one PutRecords request a throttled entry can be overtaken by a later entry with the
//! same key, so the scheduler never lets two records of one *lane* be in flight at once: a lane
//! is the partition key (plain records) or the target shard (aggregates). A record whose lane is
//! busy (in a request, or waiting for its retry) stays queued behind it. When a record finally
//! fails, its lane is released: later records of the key go on, and the failure is reported.
//!
//! Layout:
//! - this file: [`ProducerError`], [`FailedRecord`], the limits;
//! - [`event`]: [`ProducerEvent`], what a caller sends, and how it becomes an envelope;
//! - [`port`]: the [`PutRecordsPort`] through which requests reach Kinesis, and
//!   [`KinesisPort`], the real one;
//! - `scheduler` (private): the pure batching logic (lanes, linger, request limits, aggregation);
//! - [`producer`]: [`Producer`], its builder, the background task and [`Stats`], one file
//!   each (`handle`, `builder`, `task`, `stats`).

pub mod event;
pub mod port;
pub mod producer;
mod scheduler;

pub use event::ProducerEvent;
pub use port::{KinesisPort, PutEntry, PutRecordsPort};
pub use producer::{Producer, ProducerBuilder, Stats};
pub use riffle_aws::AwsError;
pub use riffle_aws::kinesis::{
    PARTITION_KEY_MAX_CHARS, PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS, RECORD_MAX_BYTES,
};

/// Kinesis bills PUT payload units of 25 KiB: a record costs `ceil(size / 25 KiB)` units.
pub const PUT_PAYLOAD_UNIT_BYTES: usize = 25 * 1024;

/// The PUT payload units a record of `size` bytes (data plus partition key) costs.
pub fn payload_units(size: usize) -> u64 {
    size.div_ceil(PUT_PAYLOAD_UNIT_BYTES).max(1) as u64
}

/// What went wrong producing an event.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The framed record plus its partition key is larger than Kinesis takes.
    #[error("record of {bytes} bytes (data plus partition key) exceeds the limit of {limit}")]
    Oversize {
        /// Size as Kinesis counts it.
        bytes: usize,
        /// The limit ([`RECORD_MAX_BYTES`]).
        limit: usize,
    },
    /// The partition key is empty or longer than Kinesis allows.
    #[error("partition key of {chars} characters is outside 1..={max}")]
    InvalidPartitionKey {
        /// Length in characters.
        chars: usize,
        /// The limit ([`PARTITION_KEY_MAX_CHARS`]).
        max: usize,
    },
    /// The event cannot be written as an envelope.
    #[error("event cannot be encoded: {0}")]
    Unencodable(String),
    /// [`Producer::try_send`] found the buffer full.
    #[error("producer buffer is full")]
    Full,
    /// The producer was closed (or its background task is gone).
    #[error("producer is closed")]
    Closed,
    /// The builder was given options that cannot work.
    #[error("invalid producer configuration: {0}")]
    Config(String),
    /// A call to Kinesis failed (reading the shard map at start).
    #[error(transparent)]
    Aws(#[from] AwsError),
}

impl ProducerError {
    /// Whether trying again later may succeed: a full buffer drains, AWS errors by their
    /// code; a bad event or a closed producer stays so.
    pub fn retryable(&self) -> bool {
        match self {
            ProducerError::Full => true,
            ProducerError::Aws(e) => e.retryable(),
            ProducerError::Oversize { .. }
            | ProducerError::InvalidPartitionKey { .. }
            | ProducerError::Unencodable(_)
            | ProducerError::Closed
            | ProducerError::Config(_) => false,
        }
    }
}

/// A record the producer gave up on, with all it takes to send it again.
#[derive(Debug, Clone)]
pub struct FailedRecord {
    /// The envelope's event id (`None` for records sent pre-framed).
    pub event_id: Option<String>,
    /// The record's partition key.
    pub partition_key: String,
    /// The framed record.
    pub data: Vec<u8>,
    /// The last error Kinesis gave for it.
    pub error: AwsError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_units_round_up_per_25_kib() {
        assert_eq!(payload_units(0), 1);
        assert_eq!(payload_units(1), 1);
        assert_eq!(payload_units(PUT_PAYLOAD_UNIT_BYTES), 1);
        assert_eq!(payload_units(PUT_PAYLOAD_UNIT_BYTES + 1), 2);
        assert_eq!(payload_units(RECORD_MAX_BYTES), 41);
    }

    #[test]
    fn retryability() {
        assert!(ProducerError::Full.retryable());
        assert!(!ProducerError::Closed.retryable());
        assert!(!ProducerError::Oversize { bytes: 2, limit: 1 }.retryable());
        let throttled = AwsError::Entry {
            code: "ProvisionedThroughputExceededException".into(),
            message: String::new(),
        };
        assert!(ProducerError::Aws(throttled).retryable());
    }
}
