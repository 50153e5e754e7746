//! [`ProducerBuilder`]: a producer's options with their defaults, the checks that refuse
//! options that cannot work, and the start of the background task.

use std::sync::Arc;
use std::time::Duration;

use riffle_codec::EnvelopeCodec;
use riffle_stage::aggregate::{AGGREGATE_MAX_BYTES, ShardMap};
use tokio::sync::mpsc;

use super::Producer;
use super::stats::Counters;
use super::task::{Task, TaskSettings};
use crate::port::PutRecordsPort;
use crate::scheduler::Packing;
use crate::{PARTITION_KEY_MAX_CHARS, ProducerError, RECORD_MAX_BYTES};

/// How long a record may wait for others to fill its request.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(50);
/// Buffer bytes (data plus keys of records not yet acknowledged).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;
/// Buffer records (not yet acknowledged).
pub const DEFAULT_MAX_BUFFERED_RECORDS: usize = 100_000;
/// Retries per entry after its first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 8;
/// Backoff before the first retry; doubles per retry, with full jitter.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Backoff ceiling.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(2);
/// PutRecords requests in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// How often EMF metrics are printed when enabled (and on every flush).
pub const DEFAULT_EMF_INTERVAL: Duration = Duration::from_secs(60);
/// Smallest aggregate size accepted: below it, aggregation buys nothing.
pub const MIN_AGGREGATE_BYTES: usize = 1024;
/// Largest aggregate size: room is left for the longest partition key (4 bytes per character).
pub const MAX_AGGREGATE_BYTES: usize = RECORD_MAX_BYTES - 4 * PARTITION_KEY_MAX_CHARS;
/// Longest name for [`ProducerBuilder::origins`]: the stages keep every origin id in their marks.
pub const MAX_ORIGIN_NAME: usize = 64;
/// The most a stamped origin adds to a record: its id (name, `-`, 32 hex digits, `/`, lane and
/// epoch), a sequence of up to 20 digits, and their lengths.
pub(crate) const ORIGIN_MAX_BYTES: usize = MAX_ORIGIN_NAME + 96;
/// The semaphore API counts permits in `u32`.
const MAX_SEMAPHORE_PERMITS: usize = u32::MAX as usize >> 3;

/// Builds a [`Producer`]; see [`Producer::builder`].
#[derive(Debug)]
pub struct ProducerBuilder<P> {
    port: P,
    stream: String,
    codec: EnvelopeCodec,
    linger: Duration,
    max_buffered_bytes: usize,
    max_buffered_records: usize,
    aggregation: bool,
    compression: bool,
    aggregate_max_bytes: usize,
    max_retries: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_in_flight: usize,
    emf_service: Option<String>,
    emf_interval: Duration,
    origins: Option<String>,
}

impl<P: PutRecordsPort> ProducerBuilder<P> {
    /// A builder putting through `port` to `stream`, writing envelopes with `codec` (get it from
    /// `riffle_registry_client::RegistryClient::envelope_codec`, which registers the envelope).
    pub fn with_port(port: P, stream: impl Into<String>, codec: EnvelopeCodec) -> Self {
        ProducerBuilder {
            port,
            stream: stream.into(),
            codec,
            linger: DEFAULT_LINGER,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_buffered_records: DEFAULT_MAX_BUFFERED_RECORDS,
            aggregation: false,
            compression: false,
            aggregate_max_bytes: AGGREGATE_MAX_BYTES,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            emf_service: None,
            emf_interval: DEFAULT_EMF_INTERVAL,
            origins: None,
        }
    }

    /// How long a record may wait for others to fill its request ([`DEFAULT_LINGER`]).
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Buffer limit in bytes ([`DEFAULT_MAX_BUFFERED_BYTES`]).
    #[must_use]
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Buffer limit in records ([`DEFAULT_MAX_BUFFERED_RECORDS`]).
    #[must_use]
    pub fn max_buffered_records(mut self, records: usize) -> Self {
        self.max_buffered_records = records;
        self
    }

    /// Pack records into KPL aggregates per target shard (off by default).
    #[must_use]
    pub fn aggregation(mut self, on: bool) -> Self {
        self.aggregation = on;
        self
    }

    /// With [`ProducerBuilder::aggregation`]: put each aggregate compressed (one zstd frame,
    /// ADR 0022; about a third of the bytes, so fewer PUT payload units and more events per
    /// shard). Riffle's validator reads both forms; leave it off (the default) when anything
    /// else reads the stream with a plain KPL library.
    #[must_use]
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Largest aggregate, data plus key (default `riffle_stage`'s `AGGREGATE_MAX_BYTES`).
    #[must_use]
    pub fn aggregate_max_bytes(mut self, bytes: usize) -> Self {
        self.aggregate_max_bytes = bytes;
        self
    }

    /// Retries per entry after its first attempt ([`DEFAULT_MAX_RETRIES`]).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Backoff base and ceiling ([`DEFAULT_BACKOFF_BASE`], [`DEFAULT_BACKOFF_CAP`]).
    #[must_use]
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// PutRecords requests in flight at once ([`DEFAULT_MAX_IN_FLIGHT`]).
    #[must_use]
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Print EMF metrics under `service` every `interval` and on every flush.
    #[must_use]
    pub fn emf(mut self, service: impl Into<String>, interval: Duration) -> Self {
        self.emf_service = Some(service.into());
        self.emf_interval = interval;
        self
    }

    /// Stamp every envelope with its origin (ADR 0010), so the stages drop the copies a retry
    /// puts at new positions (a PutRecords whose answer was lost, a caller's re-send of a
    /// [`FailedRecord`](crate::FailedRecord)): the producer id is `name` plus a part unique to
    /// this producer, one channel per target shard. Needs aggregation (with plain records every
    /// partition key would be a channel of its own). Envelopes from [`Producer::send`] are
    /// stamped, and those from [`Producer::send_framed`] that name no origin; re-send failed
    /// records as they were handed back, before anything new of their shard, and they keep
    /// their place.
    #[must_use]
    pub fn origins(mut self, name: impl Into<String>) -> Self {
        self.origins = Some(name.into());
        self
    }

    fn validate(&self) -> Result<(), ProducerError> {
        let bad = |why: String| Err(ProducerError::Config(why));
        if self.stream.is_empty() {
            return bad("empty stream name".into());
        }
        if !(1..=MAX_SEMAPHORE_PERMITS).contains(&self.max_buffered_bytes) {
            return bad(format!(
                "max buffered bytes must be within 1..={MAX_SEMAPHORE_PERMITS}"
            ));
        }
        if !(1..=MAX_SEMAPHORE_PERMITS).contains(&self.max_buffered_records) {
            return bad(format!(
                "max buffered records must be within 1..={MAX_SEMAPHORE_PERMITS}"
            ));
        }
        if !(MIN_AGGREGATE_BYTES..=MAX_AGGREGATE_BYTES).contains(&self.aggregate_max_bytes) {
            return bad(format!(
                "aggregate size must be within {MIN_AGGREGATE_BYTES}..={MAX_AGGREGATE_BYTES}"
            ));
        }
        if self.max_in_flight == 0 {
            return bad("max in flight must be at least 1".into());
        }
        if self.backoff_base > self.backoff_cap {
            return bad("backoff base above its cap".into());
        }
        if let Some(name) = &self.origins {
            if !self.aggregation {
                return bad("origins need aggregation (one channel per target shard)".into());
            }
            if name.is_empty() || name.len() > MAX_ORIGIN_NAME || name.contains('/') {
                return bad(format!(
                    "origin name must be 1..={MAX_ORIGIN_NAME} bytes without '/'"
                ));
            }
        }
        Ok(())
    }

    /// Starts the producer's background task (on the current Tokio runtime). With aggregation
    /// on, it reads the stream's shard map first.
    ///
    /// # Errors
    /// [`ProducerError::Config`] for unusable options, [`ProducerError::Aws`] when the shard map
    /// cannot be read.
    pub async fn build(self) -> Result<Producer, ProducerError> {
        self.validate()?;
        let shard_map = if self.aggregation {
            let starts = self.port.shard_starts(&self.stream).await?;
            if starts.is_empty() {
                return Err(ProducerError::Config(format!(
                    "stream {} has no open shards",
                    self.stream
                )));
            }
            Some(ShardMap::new(starts))
        } else {
            None
        };
        let packing = if self.aggregation {
            Packing::Aggregate {
                max_bytes: self.aggregate_max_bytes,
                compress: self.compression,
            }
        } else {
            Packing::Plain
        };
        let stamps = self.origins.is_some();
        let stats = Arc::new(Counters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = TaskSettings {
            max_attempts: self.max_retries.saturating_add(1),
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            max_in_flight: self.max_in_flight,
            packing,
            linger: self.linger,
            emf_service: self.emf_service,
            emf_interval: self.emf_interval,
            // A new id per producer: a channel starting over at sequence 1 under an id used
            // before would be below that id's marks, and dropped.
            origins: self
                .origins
                .map(|name| format!("{name}-{}", uuid::Uuid::now_v7().simple())),
        };
        let task = Task::new(
            self.port,
            &self.stream,
            shard_map,
            Arc::clone(&stats),
            settings,
        );
        let handle = tokio::spawn(task.run(rx));
        Ok(Producer::new(
            tx,
            handle,
            self.codec,
            self.max_buffered_records,
            self.max_buffered_bytes,
            stats,
            stamps,
        ))
    }
}
