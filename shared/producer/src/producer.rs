//! [`Producer`]: the handle callers send through, its [`ProducerBuilder`], the background task
//! that puts what is queued, and the counters behind [`Producer::stats`].
//!
//! Buffer space is two semaphores (records and bytes). A record holds its permits from `send`
//! until it is acknowledged or given up on, so a full buffer makes `send` wait and `try_send`
//! fail, whatever stage the records are in (queued, in flight, waiting for a retry).

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle_aws::AwsError;
use riffle_aws::backoff::full_jitter;
use riffle_codec::EnvelopeCodec;
use riffle_stage::aggregate::{AGGREGATE_MAX_BYTES, SHARD_MAP_TTL, ShardMap};
use riffle_telemetry::Metrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::event::now_ms;
use crate::port::{EntryResults, KinesisPort, PutEntry, PutRecordsPort};
use crate::scheduler::{Packing, Record, Scheduler, Unit};
use crate::{
    FailedRecord, PARTITION_KEY_MAX_CHARS, ProducerError, ProducerEvent, RECORD_MAX_BYTES,
    payload_units,
};

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
/// The semaphore API counts permits in `u32`.
const MAX_SEMAPHORE_PERMITS: usize = u32::MAX as usize >> 3;
/// Per-entry error code for a shard over its write throughput.
const THROTTLED: &str = "ProvisionedThroughputExceededException";
/// Messages handled per wake-up of the task before it looks at requests again.
const DRAIN_BATCH: usize = 1024;
/// Wake-up when nothing is scheduled (the task wakes on messages and replies anyway).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Counts since the producer was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// User records acknowledged by Kinesis.
    pub records: u64,
    /// Their bytes (framed data plus partition key).
    pub bytes: u64,
    /// Kinesis records written (plain records and aggregates).
    pub kinesis_records: u64,
    /// Of those, KPL aggregates.
    pub aggregates: u64,
    /// PUT payload units the written Kinesis records cost (see [`crate::payload_units`]).
    pub payload_units: u64,
    /// PutRecords requests made, retries included.
    pub put_requests: u64,
    /// Entries answered with ProvisionedThroughputExceeded.
    pub throttled: u64,
    /// Entries scheduled for another attempt.
    pub retries: u64,
    /// User records given up on (reported by [`Producer::flush`] / [`Producer::close`]).
    pub failed: u64,
    /// User records in the buffer now (queued, in flight or waiting for a retry).
    pub buffered_records: u64,
    /// Their bytes.
    pub buffered_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    kinesis_records: AtomicU64,
    aggregates: AtomicU64,
    payload_units: AtomicU64,
    put_requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            records: get(&self.records),
            bytes: get(&self.bytes),
            kinesis_records: get(&self.kinesis_records),
            aggregates: get(&self.aggregates),
            payload_units: get(&self.payload_units),
            put_requests: get(&self.put_requests),
            throttled: get(&self.throttled),
            retries: get(&self.retries),
            failed: get(&self.failed),
            buffered_records: 0,
            buffered_bytes: 0,
        }
    }
}

/// The EMF metrics for the change from `before` to `now`.
fn emf_delta(service: &str, before: &Stats, now: &Stats) -> Metrics {
    let mut m = Metrics::new(service.to_owned());
    for (name, a, b) in [
        ("RecordsPut", before.records, now.records),
        ("BytesPut", before.bytes, now.bytes),
        (
            "KinesisRecordsPut",
            before.kinesis_records,
            now.kinesis_records,
        ),
        ("PutPayloadUnits", before.payload_units, now.payload_units),
        ("PutRequests", before.put_requests, now.put_requests),
        ("Throttled", before.throttled, now.throttled),
        ("Retries", before.retries, now.retries),
        ("RecordsFailed", before.failed, now.failed),
    ] {
        m.count(name, b.saturating_sub(a));
    }
    m
}

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
    aggregate_max_bytes: usize,
    max_retries: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_in_flight: usize,
    emf_service: Option<String>,
    emf_interval: Duration,
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
            aggregate_max_bytes: AGGREGATE_MAX_BYTES,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            emf_service: None,
            emf_interval: DEFAULT_EMF_INTERVAL,
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
            }
        } else {
            Packing::Plain
        };
        let stats = Arc::new(Counters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            port: Arc::new(self.port),
            stream: Arc::from(self.stream.as_str()),
            max_attempts: self.max_retries.saturating_add(1),
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            max_in_flight: self.max_in_flight,
            scheduler: Scheduler::new(packing, self.linger),
            shard_map: shard_map.map(|m| (Instant::now(), m)),
            in_flight: JoinSet::new(),
            requests: HashMap::new(),
            outstanding: BTreeSet::new(),
            next_seq: 0,
            flushes: Vec::new(),
            close: None,
            failures: Vec::new(),
            stats: Arc::clone(&stats),
            emf_service: self.emf_service,
            emf_interval: self.emf_interval,
            emitted: Stats::default(),
            last_emit: Instant::now(),
        };
        let handle = tokio::spawn(task.run(rx));
        Ok(Producer {
            tx,
            records: Arc::new(Semaphore::new(self.max_buffered_records)),
            bytes: Arc::new(Semaphore::new(self.max_buffered_bytes)),
            max_buffered_bytes: self.max_buffered_bytes,
            max_buffered_records: self.max_buffered_records,
            codec: self.codec,
            stats,
            closed: AtomicBool::new(false),
            task: Mutex::new(Some(handle)),
        })
    }
}

enum Msg {
    Record(Record),
    Flush(oneshot::Sender<Vec<FailedRecord>>),
    Close(oneshot::Sender<Vec<FailedRecord>>),
}

/// Puts events on one Kinesis stream in the background. Share it behind an `Arc`; call
/// [`Producer::close`] before dropping it.
pub struct Producer {
    tx: mpsc::UnboundedSender<Msg>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_buffered_bytes: usize,
    max_buffered_records: usize,
    codec: EnvelopeCodec,
    stats: Arc<Counters>,
    closed: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("envelope_id", &self.codec.id())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A builder for a producer on the real Kinesis `client`.
    pub fn builder(
        client: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        codec: EnvelopeCodec,
    ) -> ProducerBuilder<KinesisPort> {
        ProducerBuilder::with_port(KinesisPort::new(client), stream, codec)
    }

    /// Wraps `event` in an envelope and queues it, waiting while the buffer is full.
    ///
    /// # Errors
    /// An event that cannot be encoded, an oversize record or a bad partition key (nothing is
    /// queued), or a closed producer.
    pub async fn send(&self, event: ProducerEvent) -> Result<(), ProducerError> {
        let record = self.prepare_event(event)?;
        let hold = self.acquire(record.size()).await?;
        self.enqueue(record, hold)
    }

    /// As [`Producer::send`], but fails with [`ProducerError::Full`] instead of waiting.
    ///
    /// # Errors
    /// As [`Producer::send`], plus [`ProducerError::Full`].
    pub fn try_send(&self, event: ProducerEvent) -> Result<(), ProducerError> {
        let record = self.prepare_event(event)?;
        let hold = self.try_acquire(record.size())?;
        self.enqueue(record, hold)
    }

    /// Queues a record that is already framed (from another Confluent-aware encoder), as is.
    ///
    /// # Errors
    /// As [`Producer::send`].
    pub async fn send_framed(
        &self,
        partition_key: impl Into<String>,
        data: Vec<u8>,
    ) -> Result<(), ProducerError> {
        let record = self.prepare(partition_key.into(), None, data)?;
        let hold = self.acquire(record.size()).await?;
        self.enqueue(record, hold)
    }

    /// As [`Producer::send_framed`], but fails with [`ProducerError::Full`] instead of waiting.
    ///
    /// # Errors
    /// As [`Producer::try_send`].
    pub fn try_send_framed(
        &self,
        partition_key: impl Into<String>,
        data: Vec<u8>,
    ) -> Result<(), ProducerError> {
        let record = self.prepare(partition_key.into(), None, data)?;
        let hold = self.try_acquire(record.size())?;
        self.enqueue(record, hold)
    }

    /// Waits until every record queued before this call is acknowledged or given up on, and
    /// returns the records given up on since the last flush (each failure is handed out once).
    ///
    /// # Errors
    /// [`ProducerError::Closed`] when the producer is closed.
    pub async fn flush(&self) -> Result<Vec<FailedRecord>, ProducerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| ProducerError::Closed)?;
        rx.await.map_err(|_| ProducerError::Closed)
    }

    /// Refuses further sends, puts everything queued, stops the background task and returns
    /// the records given up on that no flush has returned yet.
    ///
    /// # Errors
    /// [`ProducerError::Closed`] when it was closed already.
    pub async fn close(&self) -> Result<Vec<FailedRecord>, ProducerError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Err(ProducerError::Closed);
        }
        // Wakes senders waiting for buffer space; they get `Closed`.
        self.records.close();
        self.bytes.close();
        let (tx, rx) = oneshot::channel();
        let failures = match self.tx.send(Msg::Close(tx)) {
            Ok(()) => rx.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let handle = self.task.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "producer task failed");
        }
        Ok(failures)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.snapshot();
        stats.buffered_records =
            self.max_buffered_records
                .saturating_sub(self.records.available_permits()) as u64;
        stats.buffered_bytes = self
            .max_buffered_bytes
            .saturating_sub(self.bytes.available_permits()) as u64;
        stats
    }

    fn prepare_event(&self, event: ProducerEvent) -> Result<Record, ProducerError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(ProducerError::Closed);
        }
        let (key, event_id, data) = event.encode(&self.codec, now_ms())?;
        self.prepare(key, Some(event_id), data)
    }

    fn prepare(
        &self,
        partition_key: String,
        event_id: Option<String>,
        data: Vec<u8>,
    ) -> Result<Record, ProducerError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(ProducerError::Closed);
        }
        let chars = partition_key.chars().count();
        if chars == 0 || chars > PARTITION_KEY_MAX_CHARS {
            return Err(ProducerError::InvalidPartitionKey {
                chars,
                max: PARTITION_KEY_MAX_CHARS,
            });
        }
        let bytes = data.len() + partition_key.len();
        if bytes > RECORD_MAX_BYTES {
            return Err(ProducerError::Oversize {
                bytes,
                limit: RECORD_MAX_BYTES,
            });
        }
        Ok(Record {
            seq: 0,
            partition_key,
            event_id,
            data,
            enqueued: Instant::now(),
            hold: Vec::new(),
        })
    }

    /// Byte permits for a record of `size`: a record larger than the whole buffer takes it all,
    /// rather than waiting forever.
    fn byte_permits(&self, size: usize) -> u32 {
        u32::try_from(size.clamp(1, self.max_buffered_bytes)).unwrap_or(u32::MAX)
    }

    async fn acquire(&self, size: usize) -> Result<Vec<OwnedSemaphorePermit>, ProducerError> {
        let record = Arc::clone(&self.records)
            .acquire_owned()
            .await
            .map_err(|_| ProducerError::Closed)?;
        let bytes = Arc::clone(&self.bytes)
            .acquire_many_owned(self.byte_permits(size))
            .await
            .map_err(|_| ProducerError::Closed)?;
        Ok(vec![record, bytes])
    }

    fn try_acquire(&self, size: usize) -> Result<Vec<OwnedSemaphorePermit>, ProducerError> {
        let map = |e: TryAcquireError| match e {
            TryAcquireError::NoPermits => ProducerError::Full,
            TryAcquireError::Closed => ProducerError::Closed,
        };
        let record = Arc::clone(&self.records).try_acquire_owned().map_err(map)?;
        let bytes = Arc::clone(&self.bytes)
            .try_acquire_many_owned(self.byte_permits(size))
            .map_err(map)?;
        Ok(vec![record, bytes])
    }

    fn enqueue(
        &self,
        mut record: Record,
        hold: Vec<OwnedSemaphorePermit>,
    ) -> Result<(), ProducerError> {
        record.hold = hold;
        self.tx
            .send(Msg::Record(record))
            .map_err(|_| ProducerError::Closed)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Relaxed) {
            tracing::warn!(
                "riffle producer dropped without close(): queued records are still put in the \
                 background, but failures can no longer be reported and the runtime may stop first"
            );
        }
    }
}

/// The background task: owns the queue, cuts requests, handles their outcomes.
struct Task<P> {
    port: Arc<P>,
    stream: Arc<str>,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_in_flight: usize,
    scheduler: Scheduler,
    /// When aggregating: the shard map and when it was read.
    shard_map: Option<(Instant, ShardMap)>,
    in_flight: JoinSet<Result<EntryResults, AwsError>>,
    requests: HashMap<tokio::task::Id, Vec<Unit>>,
    /// Sequence numbers of records not yet acknowledged or given up on.
    outstanding: BTreeSet<u64>,
    next_seq: u64,
    /// Flush callers and the first sequence number not covered by their flush.
    flushes: Vec<(u64, oneshot::Sender<Vec<FailedRecord>>)>,
    close: Option<oneshot::Sender<Vec<FailedRecord>>>,
    failures: Vec<FailedRecord>,
    stats: Arc<Counters>,
    emf_service: Option<String>,
    emf_interval: Duration,
    emitted: Stats,
    last_emit: Instant,
}

impl<P: PutRecordsPort> Task<P> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut rx_open = true;
        loop {
            let now = Instant::now();
            let force = !self.flushes.is_empty() || self.close.is_some() || !rx_open;
            while self.in_flight.len() < self.max_in_flight {
                match self.scheduler.take_request(now, force) {
                    Some(units) => self.spawn(units),
                    None => break,
                }
            }
            self.answer_flushes();
            if !rx_open && self.outstanding.is_empty() && self.in_flight.is_empty() {
                break;
            }
            // With every request slot taken, only a completion can let anything go.
            let mut wake = if self.in_flight.len() < self.max_in_flight {
                self.scheduler.next_wakeup()
            } else {
                None
            };
            if self.emf_service.is_some() {
                let emf = self.last_emit + self.emf_interval;
                wake = Some(wake.map_or(emf, |w| w.min(emf)));
            }
            let wake = wake.unwrap_or(now + IDLE_WAKE);
            tokio::select! {
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.complete(joined);
                }
                msg = rx.recv(), if rx_open => match msg {
                    Some(msg) => {
                        self.handle(msg, &mut rx);
                        for _ in 0..DRAIN_BATCH {
                            match rx.try_recv() {
                                Ok(msg) => self.handle(msg, &mut rx),
                                Err(_) => break,
                            }
                        }
                    }
                    None => rx_open = false,
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            if self.emf_service.is_some() && self.last_emit.elapsed() >= self.emf_interval {
                self.emit();
            }
            self.refresh_shard_map().await;
        }
        self.answer_flushes();
        self.emit();
        if let Some(close) = self.close.take() {
            let _ = close.send(std::mem::take(&mut self.failures));
        } else if !self.failures.is_empty() {
            tracing::error!(
                failed = self.failures.len(),
                "riffle producer stopped with unreported failed records"
            );
        }
    }

    fn handle(&mut self, msg: Msg, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        match msg {
            Msg::Record(mut record) => {
                record.seq = self.next_seq;
                self.next_seq += 1;
                self.outstanding.insert(record.seq);
                let lane = self.lane_of(&record.partition_key);
                self.scheduler.push(lane, record);
            }
            Msg::Flush(reply) => self.flushes.push((self.next_seq, reply)),
            Msg::Close(reply) => {
                self.close = Some(reply);
                // Senders racing the close get an error; what is already sent is drained.
                rx.close();
            }
        }
    }

    fn lane_of(&self, partition_key: &str) -> u64 {
        match &self.shard_map {
            Some((_, map)) => map.shard_of(partition_key) as u64,
            None => {
                let mut hasher = DefaultHasher::new();
                partition_key.hash(&mut hasher);
                hasher.finish()
            }
        }
    }

    fn spawn(&mut self, units: Vec<Unit>) {
        let entries: Vec<PutEntry> = units
            .iter()
            .map(|u| PutEntry {
                partition_key: u.partition_key.clone(),
                data: u.data.clone(),
            })
            .collect();
        Counters::add(&self.stats.put_requests, 1);
        let port = Arc::clone(&self.port);
        let stream = Arc::clone(&self.stream);
        let handle = self
            .in_flight
            .spawn(async move { port.put_records(&stream, entries).await });
        self.requests.insert(handle.id(), units);
    }

    fn complete(
        &mut self,
        joined: Result<(tokio::task::Id, Result<EntryResults, AwsError>), tokio::task::JoinError>,
    ) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                Err(AwsError::Call {
                    operation: "PutRecords",
                    code: "TaskFailed".to_owned(),
                    message: e.to_string(),
                    retryable: true,
                }),
            ),
        };
        let Some(units) = self.requests.remove(&id) else {
            return;
        };
        let results = match result {
            Ok(results) => results,
            Err(e) => vec![Some(e); units.len()],
        };
        let mut results = results.into_iter();
        let now = Instant::now();
        for mut unit in units {
            let error = results.next().unwrap_or_else(|| {
                Some(AwsError::Entry {
                    code: "InternalFailure".to_owned(),
                    message: "no result for entry".to_owned(),
                })
            });
            let Some(error) = error else {
                self.acknowledge(unit);
                continue;
            };
            if error.code() == Some(THROTTLED) {
                Counters::add(&self.stats.throttled, 1);
            }
            unit.attempts += 1;
            if error.retryable() && unit.attempts < self.max_attempts {
                Counters::add(&self.stats.retries, 1);
                let delay = full_jitter(unit.attempts - 1, self.backoff_base, self.backoff_cap);
                self.scheduler.retry_later(unit, now + delay);
            } else {
                tracing::warn!(
                    error = %error,
                    attempts = unit.attempts,
                    records = unit.members.len(),
                    "giving up on a Kinesis entry"
                );
                let lane = unit.lane;
                for m in &unit.members {
                    self.outstanding.remove(&m.seq);
                }
                Counters::add(&self.stats.failed, unit.members.len() as u64);
                self.failures.extend(unit.into_failed(&error));
                self.scheduler.release(lane);
            }
        }
    }

    fn acknowledge(&mut self, unit: Unit) {
        let user_bytes = if unit.aggregated {
            unit.members.iter().map(Record::size).sum()
        } else {
            unit.size()
        };
        let s = &self.stats;
        Counters::add(&s.kinesis_records, 1);
        Counters::add(&s.aggregates, u64::from(unit.aggregated));
        Counters::add(&s.payload_units, payload_units(unit.size()));
        Counters::add(&s.records, unit.members.len() as u64);
        Counters::add(&s.bytes, user_bytes as u64);
        for m in &unit.members {
            self.outstanding.remove(&m.seq);
        }
        self.scheduler.release(unit.lane);
        // Dropping the unit returns its members' buffer space.
    }

    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let first_open = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let mut answered = false;
        let mut i = 0;
        while i < self.flushes.len() {
            if self.flushes[i].0 <= first_open {
                let (_, reply) = self.flushes.swap_remove(i);
                let _ = reply.send(std::mem::take(&mut self.failures));
                answered = true;
            } else {
                i += 1;
            }
        }
        if answered {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let Some(service) = &self.emf_service else {
            return;
        };
        let now = self.stats.snapshot();
        let mut metrics = emf_delta(service, &self.emitted, &now);
        metrics.flush();
        self.emitted = now;
        self.last_emit = Instant::now();
    }

    async fn refresh_shard_map(&mut self) {
        let Some((read_at, _)) = &self.shard_map else {
            return;
        };
        if read_at.elapsed() < SHARD_MAP_TTL {
            return;
        }
        match self.port.shard_starts(&self.stream).await {
            Ok(starts) if !starts.is_empty() => {
                self.shard_map = Some((Instant::now(), ShardMap::new(starts)));
            }
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "keeping the old shard map");
                }
                if let Some((at, _)) = &mut self.shard_map {
                    *at = Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn emf_reports_deltas() {
        let before = Stats {
            records: 10,
            put_requests: 1,
            ..Stats::default()
        };
        let now = Stats {
            records: 25,
            put_requests: 3,
            throttled: 2,
            ..Stats::default()
        };
        let line = emf_delta("producer-test", &before, &now)
            .to_line(0)
            .unwrap();
        let parsed = riffle_telemetry::parse_emf_line(&line).unwrap();
        assert_eq!(parsed.service, "producer-test");
        assert_eq!(parsed.sum("RecordsPut"), 15.0);
        assert_eq!(parsed.sum("PutRequests"), 2.0);
        assert_eq!(parsed.sum("Throttled"), 2.0);
        assert_eq!(parsed.sum("RecordsFailed"), 0.0);
    }
}
