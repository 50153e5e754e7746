//! The export thread: a batch's finished spans arrive in one message and go out from there,
//! off the handler's path: to an X-Ray daemon as segment documents written straight from the
//! spans (`DaemonSink`), or as OpenTelemetry span data through an exporter
//! (`SpanDataSink`: AWS's, for a batch invocation's span, or a test's own). The
//! handler's own cost per traced record is then a few field copies (see `tracer`).

use std::borrow::Cow;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Socket, Type};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_aws::xray_exporter::daemon_client::XrayDaemonClient;
use opentelemetry_aws::xray_exporter::{SegmentTranslator, XrayExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};

use riffle_aws::calls::Call;

use crate::invocation::FinishedInvocation;
use crate::tracer::{FinishedSpan, Outcome};
use crate::{header, keys, segment};

/// Batches waiting for the export thread. A stage hands over one message per batch, so
/// this is minutes of batches; past it a batch's spans are dropped (and counted) rather
/// than the handler made to wait for tracing.
const QUEUED_BATCHES: usize = 1024;

enum Job {
    Spans(Vec<FinishedSpan>),
    Invocation(Box<FinishedInvocation>),
    /// Answer once every span handed over before it is exported.
    Flush(SyncSender<()>),
}

/// Away from Lambda, spans go out in slices of this many with a pause between: a batch's
/// thousands of documents sent at once overflow a daemon's UDP buffer whenever the daemon
/// is short of CPU (the local one shares two cores with the whole twin), and UDP drops
/// what overflows. On Lambda the invocation waits for the export, so there is no pause.
/// 128 documents a millisecond at most: a 4 MiB receive buffer holds about 1,800 of them,
/// so the daemon may stall for 10 ms and lose nothing.
const PACED_SLICE: usize = 128;
const PACE: Duration = Duration::from_millis(1);

/// Emptied span buffers kept for the next batches: a batch of thousands of traced records
/// fills a megabyte or two, and fresh memory each time costs the handler its page faults.
const SPARE_BUFFERS: usize = 4;

/// Span buffers the export thread hands back once it has read them.
#[derive(Debug, Default)]
pub(crate) struct Spares(Mutex<Vec<Vec<FinishedSpan>>>);

impl Spares {
    /// An empty buffer, warm if one is spare.
    pub fn take(&self) -> Vec<FinishedSpan> {
        self.0
            .lock()
            .ok()
            .and_then(|mut spares| spares.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut buffer: Vec<FinishedSpan>) {
        buffer.clear();
        if let Ok(mut spares) = self.0.lock()
            && spares.len() < SPARE_BUFFERS
        {
            spares.push(buffer);
        }
    }
}

/// What the export thread did, for benches and the stage's logs.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    busy_nanos: AtomicU64,
}

impl ExportStats {
    /// Spans handed to the exporter.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Time the export thread spent translating and sending.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed))
    }
}

/// The handle the tracer keeps: a queue to the export thread.
pub(crate) struct Exporter {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<ExportStats>,
    pub spares: Arc<Spares>,
    /// Whether exports are paced (away from Lambda; see [`PACED_SLICE`]).
    pub paced: Arc<AtomicBool>,
}

impl Exporter {
    /// Starts the thread exporting through `sink`, in paced slices when `paced` (see
    /// [`PACED_SLICE`]).
    pub fn start(sink: impl Sink, paced: bool) -> std::io::Result<Self> {
        let paced = Arc::new(AtomicBool::new(paced));
        let (jobs, queue) = mpsc::sync_channel(QUEUED_BATCHES);
        let stats = Arc::new(ExportStats::default());
        let spares = Arc::new(Spares::default());
        let (thread_stats, thread_spares) = (Arc::clone(&stats), Arc::clone(&spares));
        let thread = std::thread::Builder::new()
            .name("riffle-trace-export".into())
            .spawn({
                let paced = Arc::clone(&paced);
                move || run(sink, &queue, &thread_stats, &thread_spares, &paced)
            })?;
        Ok(Exporter {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
            spares,
            paced,
        })
    }

    /// Hands a batch's spans over without waiting.
    pub fn send(&self, spans: Vec<FinishedSpan>) {
        let Some(jobs) = &self.jobs else { return };
        let count = spans.len() as u64;
        match jobs.try_send(Job::Spans(spans)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(spans = count, "trace export queue full; spans dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// Hands a batch invocation's span over without waiting.
    pub fn send_invocation(&self, span: FinishedInvocation) {
        let Some(jobs) = &self.jobs else { return };
        if jobs.try_send(Job::Invocation(Box::new(span))).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything handed over so far has been exported.
    pub fn flush(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (done, wait) = mpsc::sync_channel(1);
        if jobs.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has exported what was queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the export thread sends a batch's spans.
pub(crate) trait Sink: Send + 'static {
    /// Exports `spans` (leaving the buffer empty), each followed by its AWS calls' spans,
    /// telling `pace` after every document or slice of them.
    fn spans(&mut self, spans: &mut Vec<FinishedSpan>, pace: &mut Pace);
    /// Exports a batch invocation's span.
    fn invocation(&mut self, span: FinishedInvocation);
}

/// Paces the documents of one batch: a pause after every [`PACED_SLICE`] of them, when
/// paced, kept out of the busy time.
pub(crate) struct Pace {
    paced: bool,
    in_slice: usize,
    paused: Duration,
}

impl Pace {
    pub(crate) fn new(paced: bool) -> Self {
        Pace {
            paced,
            in_slice: 0,
            paused: Duration::ZERO,
        }
    }

    /// Documents a slice may hold before its pause.
    fn slice(&self) -> usize {
        if self.paced { PACED_SLICE } else { usize::MAX }
    }

    /// `n` more documents went out.
    fn sent(&mut self, n: usize) {
        self.in_slice += n;
        if self.paced && self.in_slice >= PACED_SLICE {
            let paused = Instant::now();
            std::thread::sleep(PACE);
            self.paused += paused.elapsed();
            self.in_slice = 0;
        }
    }
}

fn run(
    mut sink: impl Sink,
    queue: &Receiver<Job>,
    stats: &ExportStats,
    spares: &Spares,
    paced: &AtomicBool,
) {
    while let Ok(job) = queue.recv() {
        match job {
            Job::Spans(mut spans) => {
                let started = Instant::now();
                let count = spans.len() as u64;
                let mut pace = Pace::new(paced.load(Ordering::Relaxed));
                sink.spans(&mut spans, &mut pace);
                spares.give(spans);
                stats.exported.fetch_add(count, Ordering::Relaxed);
                let busy = started.elapsed().saturating_sub(pace.paused);
                let nanos = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
                stats.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
            }
            Job::Invocation(span) => {
                let started = Instant::now();
                sink.invocation(*span);
                stats.exported.fetch_add(1, Ordering::Relaxed);
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                stats.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Spans through an OpenTelemetry exporter (AWS's X-Ray exporter, or a test's own).
pub(crate) struct SpanDataSink<E> {
    exporter: E,
    scope: InstrumentationScope,
}

impl<E: SpanExporter + 'static> SpanDataSink<E> {
    /// `exporter`, its resource naming `service`.
    pub fn new(service: &str, mut exporter: E) -> Self {
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.to_owned())
                .build(),
        );
        SpanDataSink {
            exporter,
            scope: InstrumentationScope::builder("riffle").build(),
        }
    }
}

impl<E: SpanExporter + 'static> Sink for SpanDataSink<E> {
    fn spans(&mut self, spans: &mut Vec<FinishedSpan>, pace: &mut Pace) {
        let mut data: Vec<SpanData> = Vec::with_capacity(spans.len());
        for span in spans.drain(..) {
            push_span_data(span, &self.scope, &mut data);
        }
        // Slices taken off the front, each span moved once (splitting the rest off each
        // time moved it again per slice: quadratic in the batch).
        let slice = pace.slice();
        let mut rest = data.into_iter();
        loop {
            let part: Vec<SpanData> = rest.by_ref().take(slice).collect();
            if part.is_empty() {
                break;
            }
            let n = part.len();
            if let Err(e) = block_on(self.exporter.export(part)) {
                tracing::warn!(error = %e, "trace export failed");
            }
            pace.sent(n);
        }
    }

    fn invocation(&mut self, span: FinishedInvocation) {
        if let Err(e) = block_on(
            self.exporter
                .export(vec![invocation_data(span, &self.scope)]),
        ) {
            tracing::warn!(error = %e, "trace export failed");
        }
    }
}

/// The export socket's send buffer: a paced slice of documents and then some.
const SEND_BUFFER: usize = 4 << 20;

/// Spans to an X-Ray daemon over UDP, a record's span and its calls written straight into
/// documents ([`segment`]); a batch invocation's span (one a batch) through AWS's exporter.
pub(crate) struct DaemonSink {
    socket: UdpSocket,
    writer: segment::Writer,
    invocations: SpanDataSink<XrayExporter<XrayDaemonClient>>,
}

impl DaemonSink {
    /// Documents of `service` to the daemon at `address`.
    ///
    /// # Errors
    /// A UDP socket cannot be bound or connected.
    pub fn new(service: &str, address: SocketAddr) -> std::io::Result<Self> {
        let domain = if address.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::DGRAM, None)?;
        // A datagram on loopback counts against the sender's buffer until the daemon has
        // read it: with the default buffer a batch's burst filled it and every send slept
        // and woke (perf: a fifth of the export thread in task switches). The kernel caps
        // the size at `net.core.wmem_max` without an error (4 MiB on the development
        // machine; Linux's default is 208 KiB).
        if let Err(e) = socket.set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!(error = %e, "trace export keeps the default send buffer");
        }
        socket.connect(&address.into())?;
        let socket: UdpSocket = socket.into();
        let aws = XrayExporter::new(XrayDaemonClient::new(address)?)
            .with_translator(SegmentTranslator::new());
        Ok(DaemonSink {
            socket,
            writer: segment::Writer::new(service),
            invocations: SpanDataSink::new(service, aws),
        })
    }

    fn send(&mut self, document: Document<'_>, failed: &mut Option<std::io::Error>) {
        let datagram = match document {
            Document::Record(span) => self.writer.record(span),
            Document::Call(call, trace, parent) => self.writer.call(call, trace, parent),
        };
        // A blocking send: on loopback and to Lambda's daemon it only waits for the socket's
        // own buffer; a datagram the daemon has no room for is dropped on its side, as UDP.
        if let Err(e) = self.socket.send(datagram)
            && failed.is_none()
        {
            *failed = Some(e);
        }
    }
}

enum Document<'a> {
    Record(&'a FinishedSpan),
    Call(
        &'a Call,
        opentelemetry::trace::TraceId,
        opentelemetry::trace::SpanId,
    ),
}

impl Sink for DaemonSink {
    fn spans(&mut self, spans: &mut Vec<FinishedSpan>, pace: &mut Pace) {
        let mut failed = None;
        for span in spans.drain(..) {
            self.send(Document::Record(&span), &mut failed);
            let mut sent = 1;
            for call in span.calls.iter().flat_map(|c| c.iter()) {
                if overlaps(call, &span) {
                    self.send(
                        Document::Call(call, span.trace_id, span.span_id),
                        &mut failed,
                    );
                    sent += 1;
                }
            }
            pace.sent(sent);
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "trace export failed");
        }
    }

    fn invocation(&mut self, span: FinishedInvocation) {
        self.invocations.invocation(span);
    }
}

/// Whether `call` was made while `span`'s record was in hand: those become its children.
pub(crate) fn overlaps(call: &Call, span: &FinishedSpan) -> bool {
    call.start < span.end && call.end > span.start
}

/// Runs an export to its end on this thread. AWS's daemon client sends over a non-blocking
/// socket and never waits, so its future is ready when first polled; a pending one is
/// polled again after a yield rather than pulling in an async runtime for it.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// A finished span as OpenTelemetry's span data, followed by its children: one client span
/// per AWS call its batch made while the record was in hand (see [`call_span`]).
fn push_span_data(span: FinishedSpan, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
    let calls = span.calls.clone();
    let children: Vec<&Call> = calls
        .iter()
        .flat_map(|c| c.iter())
        .filter(|call| overlaps(call, &span))
        .collect();
    let (trace_id, span_id) = (span.trace_id, span.span_id);
    out.push(span_data(span, scope));
    for call in children {
        out.push(call_span(call, trace_id, span_id, scope));
    }
}

/// One AWS call as a client span under the record's: AWS's translator makes it a subsegment
/// in the `aws` namespace named for the service, with the operation (the semantic
/// conventions of `rpc.system = aws-api`).
fn call_span(
    call: &Call,
    trace_id: opentelemetry::trace::TraceId,
    parent: opentelemetry::trace::SpanId,
    scope: &InstrumentationScope,
) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("rpc.system", "aws-api"),
        KeyValue::new("rpc.service", call.service.clone()),
        KeyValue::new("rpc.method", call.operation.clone()),
        // How many of the batch's calls of this operation the span stands for.
        KeyValue::new("riffle.calls", i64::from(call.count)),
    ];
    if call.conditions_not_met > 0 {
        // Not a failure (an optimistic write that lost a race and was redone), but worth
        // seeing when a hot view item keeps writers racing.
        attributes.push(KeyValue::new(
            "riffle.conditions_not_met",
            i64::from(call.conditions_not_met),
        ));
    }
    let status = match &call.error {
        Some(why) => Status::error(why.clone()),
        None => Status::Unset,
    };
    SpanData {
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: Cow::Owned(call.service.clone()),
        start_time: call.start,
        end_time: call.end,
        attributes,
        status,
        ..span_base(trace_id, crate::header::new_span_id(), scope)
    }
}

/// A finished span as OpenTelemetry's span data: a server span named for the stage, the
/// annotations AWS's translator indexes (`annotation.*` attributes), a fault status for
/// retries and dead letters.
fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
    let FinishedSpan {
        stage,
        trace_id,
        parent,
        span_id,
        event_id,
        ingest_time,
        start,
        end,
        outcome,
        calls: _,
        invocation,
    } = span;
    let (name, detail) = outcome.parts();
    let mut attributes = Vec::with_capacity(5);
    attributes.push(annotation(
        keys::EVENT_ID,
        event_id.as_str().to_owned().into(),
    ));
    attributes.push(annotation(keys::STAGE, stage.into()));
    attributes.push(annotation(keys::OUTCOME, name.into()));
    if let Some((key, value)) = detail {
        attributes.push(annotation(key, value.to_owned().into()));
    }
    if let Some(at) = ingest_time {
        attributes.push(annotation(keys::INGEST_TIME, at.into()));
    }
    if let Some(trace) = invocation {
        attributes.push(annotation(
            keys::INVOCATION_TRACE,
            header::root(trace).into(),
        ));
    }
    let status = match &outcome {
        Outcome::Retried(why) | Outcome::DeadLettered(why) => Status::error(why.clone()),
        _ => Status::Unset,
    };
    SpanData {
        parent_span_id: parent.unwrap_or(opentelemetry::trace::SpanId::INVALID),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Borrowed(stage),
        start_time: start,
        end_time: end,
        attributes,
        status,
        ..span_base(trace_id, span_id, scope)
    }
}

/// A batch invocation's span as OpenTelemetry's span data: an internal span under Lambda's
/// function segment, which AWS's translator sends as a subsegment of it, with the batch's
/// records, failures and event traces (see [`crate::invocation`]).
fn invocation_data(finished: FinishedInvocation, scope: &InstrumentationScope) -> SpanData {
    let FinishedInvocation { span, summary, end } = finished;
    let count = |n: usize| Value::I64(i64::try_from(n).unwrap_or(i64::MAX));
    let mut attributes = vec![
        annotation(keys::STAGE, span.stage.into()),
        annotation(keys::OUTCOME, summary.outcome().into()),
        annotation(keys::RECORDS, count(summary.records)),
        annotation(keys::FAILED, count(summary.failed)),
        annotation(keys::TRACED, count(summary.traced)),
    ];
    if let Some(shard) = &summary.shard {
        attributes.push(annotation(keys::SHARD, shard.clone().into()));
    }
    // The translator turns an error status into the fault flag alone; the why goes with it.
    if let Some(why) = &summary.error {
        attributes.push(annotation(keys::REASON, why.clone().into()));
    }
    for (key, value) in [
        ("first_sequence", &summary.first_sequence),
        ("last_sequence", &summary.last_sequence),
    ] {
        if let Some(value) = value {
            attributes.push(metadata(key, value.clone().into()));
        }
    }
    if !summary.event_traces.is_empty() {
        let traces = summary
            .event_traces
            .iter()
            .map(|t| header::root(*t).into())
            .collect();
        attributes.push(metadata(
            "event_traces",
            Value::Array(opentelemetry::Array::String(traces)),
        ));
    }
    let status = match &summary.error {
        Some(why) => Status::error(why.clone()),
        None => Status::Unset,
    };
    SpanData {
        parent_span_id: span.parent,
        parent_span_is_remote: true,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(format!("{} batch", span.stage)),
        start_time: span.start,
        end_time: end,
        attributes,
        status,
        ..span_base(span.trace_id, span.span_id, scope)
    }
}

/// What every span Riffle exports shares (sampled, no events or links), for `trace_id` and
/// `span_id`; the rest is filled in by the caller.
fn span_base(
    trace_id: opentelemetry::trace::TraceId,
    span_id: opentelemetry::trace::SpanId,
    scope: &InstrumentationScope,
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: opentelemetry::trace::SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(""),
        start_time: std::time::UNIX_EPOCH,
        end_time: std::time::UNIX_EPOCH,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

/// The attribute AWS's translator turns into metadata `key`.
fn metadata(key: &str, value: Value) -> KeyValue {
    KeyValue::new(Key::new(format!("metadata.{key}")), value)
}

/// The attribute AWS's translator turns into annotation `key`.
fn annotation(key: &str, value: Value) -> KeyValue {
    KeyValue::new(Key::new(format!("annotation.{key}")), value)
}
