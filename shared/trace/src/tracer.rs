//! The stages' side: [`Tracer`] continues (or starts) an event's trace per record and hands
//! back a [`RecordSpan`] to end with the record's [`Outcome`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanExporter;

use riffle_aws::calls::{Call, CallLog};

use crate::export::{DaemonSink, ExportStats, Exporter, Sink, SpanDataSink};
use crate::invocation::{FinishedInvocation, InvocationSpan};
use crate::{DAEMON_ADDRESS_ENV, DEFAULT_SAMPLE_RATE, SAMPLE_RATE_ENV, header, keys};

/// What became of a record in a stage: the span's `outcome` annotation, and its fault flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed on to the next stream.
    Published,
    /// Sent to the rejects queue with this code.
    Rejected(String),
    /// Counted into this view item.
    Viewed(String),
    /// Written into this archive object.
    Archived(String),
    /// Left for a retry of the batch (Lambda's partial batch failure), with why.
    Retried(String),
    /// Parked in the stage's dead-letter queue, with why.
    DeadLettered(String),
}

impl Outcome {
    pub(crate) fn parts(&self) -> (&'static str, Option<(&'static str, &str)>) {
        match self {
            Outcome::Published => ("published", None),
            Outcome::Rejected(code) => ("rejected", Some((keys::REASON, code))),
            Outcome::Viewed(key) => ("viewed", Some((keys::WHERE, key))),
            Outcome::Archived(object) => ("archived", Some((keys::WHERE, object))),
            Outcome::Retried(why) => ("retried", Some((keys::REASON, why))),
            Outcome::DeadLettered(why) => ("dead_lettered", Some((keys::REASON, why))),
        }
    }
}

/// A stage's tracer; [`Tracer::off`] costs nothing. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    exporter: Exporter,
    sample_rate: f64,
    /// Export at the end of every batch (Lambda freezes the process between invocations);
    /// elsewhere the export thread sends in the background, off the handler's path.
    flush_each_batch: bool,
    /// Emptied buffers of open spans, for the next batches (see [`Tracer::open_buffer`]).
    open_spares: std::sync::Mutex<Vec<Vec<Option<RecordSpan>>>>,
}

/// Open-span buffers kept: one per batch handled at once (the local mapping reads a few
/// shards at a time; Lambda one batch).
const OPEN_SPARES: usize = 4;

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("on", &self.inner.is_some())
            .field("sample_rate", &self.inner.as_ref().map(|i| i.sample_rate))
            .finish()
    }
}

impl Tracer {
    /// No tracing: every record is left as it came.
    pub fn off() -> Self {
        Tracer::default()
    }

    /// Tracing for `service` (the segments' name, e.g. `riffle-validator`) to the daemon at
    /// [`DAEMON_ADDRESS_ENV`], starting traces at [`SAMPLE_RATE_ENV`]; off when the address
    /// is unset, and off with a warning when it cannot be used.
    pub fn from_env(service: &str) -> Self {
        let Ok(address) = std::env::var(DAEMON_ADDRESS_ENV) else {
            return Tracer::off();
        };
        let sample_rate = match std::env::var(SAMPLE_RATE_ENV) {
            Ok(raw) => match raw.trim().parse::<f64>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
                _ => {
                    tracing::warn!(value = %raw, "{SAMPLE_RATE_ENV} is not within 0..=1; using the default");
                    DEFAULT_SAMPLE_RATE
                }
            },
            Err(_) => DEFAULT_SAMPLE_RATE,
        };
        match daemon_address(&address).and_then(|a| Tracer::to_daemon(service, a, sample_rate)) {
            Ok(tracer) => tracer,
            Err(e) => {
                tracing::warn!(%address, error = %e, "X-Ray daemon address unusable; tracing off");
                Tracer::off()
            }
        }
    }

    /// Tracing for `service` to the daemon at `address`, starting traces at `sample_rate`.
    ///
    /// # Errors
    /// The UDP socket or the export thread cannot be made.
    pub fn to_daemon(
        service: &str,
        address: SocketAddr,
        sample_rate: f64,
    ) -> std::io::Result<Self> {
        Tracer::with_sink(DaemonSink::new(service, address)?, sample_rate)
    }

    /// Tracing for `service` through `exporter` (tests and benches pass their own).
    ///
    /// # Errors
    /// The export thread cannot be started.
    pub fn with_exporter(
        service: &str,
        exporter: impl SpanExporter + 'static,
        sample_rate: f64,
    ) -> std::io::Result<Self> {
        Tracer::with_sink(SpanDataSink::new(service, exporter), sample_rate)
    }

    fn with_sink(sink: impl Sink, sample_rate: f64) -> std::io::Result<Self> {
        let on_lambda = std::env::var_os(LAMBDA_RUNTIME_API_ENV).is_some();
        Ok(Tracer {
            inner: Some(Arc::new(Inner {
                exporter: Exporter::start(sink, !on_lambda)?,
                sample_rate: sample_rate.clamp(0.0, 1.0),
                flush_each_batch: on_lambda,
                open_spares: std::sync::Mutex::default(),
            })),
        })
    }

    /// Whether spans are recorded at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// A fresh log for one batch's AWS calls, to run the batch in
    /// ([`riffle_aws::calls::recorded`]); none with tracing off, so nothing is recorded.
    pub fn call_log(&self) -> Option<CallLog> {
        self.inner.as_ref().map(|_| CallLog::new())
    }

    /// The span of one record in `stage`, begun at `start` (when the batch was taken up), if
    /// the record is traced: its `header` says `Sampled=1`, or it has no sampling decision,
    /// `may_start` is set and the sample rate draws it. `header` then names the new span as
    /// the parent, for the envelope the stage writes on.
    ///
    /// This runs for every traced record on the handler's path, so it only reads the
    /// header, draws a span id and rewrites the parent's digits in place; the span becomes
    /// OpenTelemetry data on the export thread.
    pub fn record(
        &self,
        stage: &'static str,
        header: &mut Option<String>,
        event_id: &str,
        start: SystemTime,
        may_start: bool,
    ) -> Option<RecordSpan> {
        let inner = self.inner.as_ref()?;
        let span_id = header::new_span_id();
        // The layout Riffle writes is read at fixed offsets; any other, as it comes.
        if let Some(h) = header.as_mut()
            && let Some(read) = header::canonical(h)
        {
            let sampled = read?;
            header::reparent(h, &sampled, span_id);
            return Some(RecordSpan {
                stage,
                trace_id: sampled.trace_id,
                parent: sampled.parent,
                span_id,
                event_id: EventId::new(event_id),
                ingest_time: None,
                start,
            });
        }
        let decided = header.as_deref().and_then(header::decision);
        let (trace_id, parent) = match (header.as_mut(), decided) {
            (_, Some(false)) => return None,
            (Some(h), Some(true)) => {
                // A sampled header whose root cannot be read is left alone: a new trace
                // here would split the event's path in two.
                let sampled = header::parse(h)?;
                header::reparent(h, &sampled, span_id);
                (sampled.trace_id, sampled.parent)
            }
            // No decision yet: the first stage makes it, continuing a readable root.
            (known, _) if may_start && rand::random::<f64>() < inner.sample_rate => {
                let continued = known.and_then(|h| header::parse(h));
                let trace_id = continued
                    .map_or_else(|| header::new_trace_id(epoch_secs(start)), |s| s.trace_id);
                *header = Some(header::new_header(trace_id, span_id));
                (trace_id, continued.and_then(|s| s.parent))
            }
            _ => return None,
        };
        Some(RecordSpan {
            stage,
            trace_id,
            parent,
            span_id,
            event_id: EventId::new(event_id),
            ingest_time: None,
            start,
        })
    }

    /// The span of a batch invocation in the function's trace, begun at `start`, when
    /// `lambda_header` (the invocation's `_X_AMZN_TRACE_ID`) is sampled and names Lambda's
    /// segment as the parent; see [`crate::invocation`].
    pub fn invocation(
        &self,
        stage: &'static str,
        lambda_header: &str,
        start: SystemTime,
    ) -> Option<InvocationSpan> {
        self.inner.as_ref()?;
        if header::decision(lambda_header) != Some(true) {
            return None;
        }
        let sampled = header::parse(lambda_header)?;
        Some(InvocationSpan {
            stage,
            trace_id: sampled.trace_id,
            parent: sampled.parent?,
            span_id: header::new_span_id(),
            start,
        })
    }

    /// Hands a batch invocation's span to the export thread.
    pub fn export_invocation(&self, span: FinishedInvocation) {
        if let Some(inner) = &self.inner {
            inner.exporter.send_invocation(span);
        }
    }

    /// An empty buffer for a batch's finished spans (one the export thread has emptied, when
    /// there is one).
    pub fn span_buffer(&self) -> Vec<FinishedSpan> {
        self.inner
            .as_ref()
            .map(|i| i.exporter.spares.take())
            .unwrap_or_default()
    }

    /// An empty buffer for a batch's open spans, by index in the batch: one a batch before
    /// gave back when there is one. A batch of thousands of traced records holds a
    /// megabyte of them, and fresh memory each batch cost the handler its page faults and
    /// the copies of growing.
    pub fn open_buffer(&self) -> Vec<Option<RecordSpan>> {
        self.inner
            .as_ref()
            .and_then(|i| i.open_spares.lock().ok()?.pop())
            .unwrap_or_default()
    }

    /// Takes back a batch's open-span buffer (emptied here) for the next batches.
    pub fn give_open_buffer(&self, mut buffer: Vec<Option<RecordSpan>>) {
        buffer.clear();
        if buffer.capacity() == 0 {
            return;
        }
        if let Some(inner) = &self.inner
            && let Ok(mut spares) = inner.open_spares.lock()
            && spares.len() < OPEN_SPARES
        {
            spares.push(buffer);
        }
    }

    /// Hands finished spans to the export thread (one message for all of them).
    pub fn export(&self, spans: Vec<FinishedSpan>) {
        if let Some(inner) = &self.inner
            && !spans.is_empty()
        {
            inner.exporter.send(spans);
        }
    }

    /// Ends a batch: on Lambda, which freezes the process between invocations, every span
    /// handed over so far is sent to the daemon before the invocation answers; elsewhere
    /// the export thread sends them in the background.
    pub fn flush(&self) {
        if let Some(inner) = &self.inner
            && inner.flush_each_batch
        {
            inner.exporter.flush();
        }
    }

    /// Sends every span handed over so far to the daemon now (and waits for it).
    pub fn force_flush(&self) {
        if let Some(inner) = &self.inner {
            inner.exporter.flush();
        }
    }

    /// What the export thread has done (none with tracing off).
    pub fn export_stats(&self) -> Option<Arc<ExportStats>> {
        self.inner.as_ref().map(|i| Arc::clone(&i.exporter.stats))
    }

    /// The same tracer, flushing at the end of every batch as on Lambda (or not), whatever
    /// the environment says: for benches that measure either.
    #[must_use]
    pub fn flushing_each_batch(self, on: bool) -> Self {
        let inner = self.inner.map(|inner| match Arc::try_unwrap(inner) {
            Ok(mut inner) => {
                inner.flush_each_batch = on;
                inner
                    .exporter
                    .paced
                    .store(!on, std::sync::atomic::Ordering::Relaxed);
                Arc::new(inner)
            }
            Err(shared) => shared,
        });
        Tracer { inner }
    }
}

fn epoch_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Set by Lambda for a function's process.
const LAMBDA_RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// `host:port`, or Lambda's long form `tcp:host:port udp:host:port` (the UDP part).
fn daemon_address(raw: &str) -> std::io::Result<SocketAddr> {
    let udp = raw
        .split_whitespace()
        .find_map(|part| part.strip_prefix("udp:"))
        .unwrap_or(raw.trim());
    udp.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no address in {raw:?}"),
        )
    })
}

/// Event ids up to this long are kept inline (UUIDs are 36 bytes, ULIDs 26).
const INLINE_ID: usize = 40;

/// A span's event id, without an allocation when it is short: a traced record's copy was a
/// malloc on the handler's path and a free on the export thread's, about a third of what
/// opening its span cost.
#[derive(Clone)]
pub(crate) enum EventId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<str>),
}

impl EventId {
    pub(crate) fn new(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE_ID => {
                let mut bytes = [0; INLINE_ID];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                EventId::Inline { len, bytes }
            }
            _ => EventId::Heap(id.into()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // The bytes of a whole `&str`: always UTF-8.
            EventId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            EventId::Heap(id) => id,
        }
    }
}

impl std::fmt::Debug for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One record's open span in a stage; finish it with what became of the record.
#[derive(Debug)]
pub struct RecordSpan {
    stage: &'static str,
    trace_id: TraceId,
    parent: Option<SpanId>,
    span_id: SpanId,
    event_id: EventId,
    ingest_time: Option<i64>,
    start: SystemTime,
}

impl RecordSpan {
    /// Notes when the producer put the event (epoch ms): the first stage's span shows the
    /// wait before it.
    pub fn set_ingest_time(&mut self, at: i64) {
        self.ingest_time = Some(at);
    }

    /// Ends the span at `end` with `outcome`; retries and dead letters mark it as a fault.
    pub fn finish(self, outcome: Outcome, end: SystemTime) -> FinishedSpan {
        FinishedSpan {
            stage: self.stage,
            trace_id: self.trace_id,
            parent: self.parent,
            span_id: self.span_id,
            event_id: self.event_id,
            ingest_time: self.ingest_time,
            start: self.start,
            end,
            outcome,
            calls: None,
            invocation: None,
        }
    }
}

/// A span ended, waiting for [`Tracer::export`].
#[derive(Debug)]
pub struct FinishedSpan {
    pub(crate) stage: &'static str,
    pub(crate) trace_id: TraceId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) span_id: SpanId,
    pub(crate) event_id: EventId,
    pub(crate) ingest_time: Option<i64>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) outcome: Outcome,
    /// The AWS calls of the span's batch; those made while the record was in hand become
    /// its child spans.
    pub(crate) calls: Option<Arc<[Call]>>,
    /// The trace of the Lambda invocation whose batch held the record.
    pub(crate) invocation: Option<TraceId>,
}

impl FinishedSpan {
    /// The event's trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Names the trace of the Lambda invocation whose batch held the record.
    pub fn set_invocation(&mut self, trace: TraceId) {
        self.invocation = Some(trace);
    }

    /// Gives the span its batch's AWS calls (shared by every span of the batch).
    pub fn set_calls(&mut self, calls: &Arc<[Call]>) {
        self.calls = Some(Arc::clone(calls));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_read_back_as_given_inline_or_not() {
        for id in [
            "",
            "01a24b93-d6db-7107-a5fb-3098fa044e02",
            "é-ü-∑",
            &"x".repeat(INLINE_ID),
            &"y".repeat(INLINE_ID + 1),
            &"z".repeat(300),
        ] {
            let kept = EventId::new(id);
            assert_eq!(kept.as_str(), id);
            assert_eq!(
                matches!(kept, EventId::Inline { .. }),
                id.len() <= INLINE_ID,
                "{id}"
            );
        }
    }

    #[test]
    fn daemon_addresses_in_both_forms() {
        assert_eq!(
            daemon_address("127.0.0.1:2000").unwrap(),
            "127.0.0.1:2000".parse().unwrap()
        );
        assert_eq!(
            daemon_address("tcp:127.0.0.1:2000 udp:127.0.0.2:2001").unwrap(),
            "127.0.0.2:2001".parse().unwrap()
        );
        assert!(daemon_address("nowhere").is_err());
    }
}
