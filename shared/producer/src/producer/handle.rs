//! [`Producer`]: the handle callers hold. It checks each record against Kinesis' limits,
//! takes its buffer space and hands it to the background task; flush and close are messages
//! to the task too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use riffle_codec::EnvelopeCodec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::builder::ORIGIN_MAX_BYTES;
use super::stats::Counters;
use super::task::Msg;
use super::{ProducerBuilder, Stats};
use crate::event::now_ms;
use crate::port::KinesisPort;
use crate::scheduler::Record;
use crate::{
    FailedRecord, PARTITION_KEY_MAX_CHARS, ProducerError, ProducerEvent, RECORD_MAX_BYTES,
};

/// Puts events on one Kinesis stream in the background. Share it behind an `Arc`; call
/// [`Producer::close`] before dropping it.
pub struct Producer {
    tx: mpsc::UnboundedSender<Msg>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_buffered_bytes: usize,
    max_buffered_records: usize,
    codec: EnvelopeCodec,
    /// Whether envelopes naming no origin get one when they are put.
    stamps: bool,
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
    /// A handle on the task `task` that reads `tx`, with room for `max_buffered_records`
    /// records of `max_buffered_bytes` bytes in all.
    pub(super) fn new(
        tx: mpsc::UnboundedSender<Msg>,
        task: JoinHandle<()>,
        codec: EnvelopeCodec,
        max_buffered_records: usize,
        max_buffered_bytes: usize,
        stats: Arc<Counters>,
        stamps: bool,
    ) -> Self {
        Producer {
            tx,
            records: Arc::new(Semaphore::new(max_buffered_records)),
            bytes: Arc::new(Semaphore::new(max_buffered_bytes)),
            max_buffered_bytes,
            max_buffered_records,
            codec,
            stamps,
            stats,
            closed: AtomicBool::new(false),
            task: Mutex::new(Some(task)),
        }
    }

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

    /// Queues a record that is already framed (from another Confluent-aware encoder), as is;
    /// with [`ProducerBuilder::origins`], an envelope of this producer's version that names no
    /// origin gets one when it is put.
    ///
    /// # Errors
    /// As [`Producer::send`].
    pub async fn send_framed(
        &self,
        partition_key: impl Into<String>,
        data: Vec<u8>,
    ) -> Result<(), ProducerError> {
        let record = self.prepare_framed(partition_key.into(), data)?;
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
        let record = self.prepare_framed(partition_key.into(), data)?;
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
        // A new envelope names no origin: it gets one when put, if the producer stamps.
        let origin = (self.stamps, None);
        self.prepare(key, Some(event_id), data, origin)
    }

    /// [`Producer::prepare`] for a framed record: stamped when put if the producer stamps and
    /// it is an envelope of its version naming no origin; one naming an origin already (a
    /// record handed back and sent again) keeps it, and its origin id is noted.
    fn prepare_framed(
        &self,
        partition_key: String,
        data: Vec<u8>,
    ) -> Result<Record, ProducerError> {
        let origin = match self.stamps.then(|| self.codec.origin_id(&data)).flatten() {
            Some(None) => (true, None),
            Some(Some(id)) => (false, Some(id)),
            None => (false, None),
        };
        self.prepare(partition_key, None, data, origin)
    }

    /// Checks a record against Kinesis' limits; `(stamp, origin)` says whether it is stamped
    /// when put, or which origin it names already.
    fn prepare(
        &self,
        partition_key: String,
        event_id: Option<String>,
        data: Vec<u8>,
        (stamp, origin): (bool, Option<String>),
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
        // Room for the origin it gets when put, so stamping never makes it oversize.
        let bytes = data.len() + partition_key.len() + if stamp { ORIGIN_MAX_BYTES } else { 0 };
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
            stamp,
            origin,
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
