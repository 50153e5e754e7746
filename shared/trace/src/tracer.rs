//! The stages' side: [`Tracer`] continues (or starts) an event's trace per record and hands
//! back a [`RecordSpan`] to end with the record's [`Outcome`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_aws::trace::xray_propagator::{span_context_from_str, span_context_to_string};
use opentelemetry_aws::xray_exporter::daemon_client::XrayDaemonClient;
use opentelemetry_aws::xray_exporter::{SegmentTranslator, XrayExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span, SpanExporter,
};

use crate::{DAEMON_ADDRESS_ENV, DEFAULT_SAMPLE_RATE, SAMPLE_RATE_ENV, keys};

/// Spans waiting for export; a stage's batch holds at most a few thousand records, and a
/// span dropped for room is a gap in someone's trace.
const MAX_QUEUED_SPANS: usize = 65_536;
/// How often queued spans go out between flushes.
const EXPORT_DELAY: Duration = Duration::from_millis(200);

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
    fn parts(&self) -> (&'static str, Option<(&'static str, &str)>) {
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
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    sample_rate: f64,
    /// Export at the end of every batch (Lambda freezes the process between invocations);
    /// elsewhere the batch processor exports in the background, off the handler's path.
    flush_each_batch: bool,
}

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
    /// The UDP socket cannot be made.
    pub fn to_daemon(
        service: &str,
        address: SocketAddr,
        sample_rate: f64,
    ) -> std::io::Result<Self> {
        let client = XrayDaemonClient::new(address)?;
        Ok(Tracer::with_exporter(
            service,
            xray_exporter(client),
            sample_rate,
        ))
    }

    /// Tracing for `service` through `exporter` (tests and benches pass their own).
    pub fn with_exporter(
        service: &str,
        exporter: impl SpanExporter + 'static,
        sample_rate: f64,
    ) -> Self {
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_scheduled_delay(EXPORT_DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build();
        let provider = SdkTracerProvider::builder()
            // X-Ray refuses trace ids that do not start with their epoch seconds.
            .with_id_generator(XrayIdGenerator::default())
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("riffle");
        Tracer {
            inner: Some(Arc::new(Inner {
                provider,
                tracer,
                sample_rate: sample_rate.clamp(0.0, 1.0),
                flush_each_batch: std::env::var_os(LAMBDA_RUNTIME_API_ENV).is_some(),
            })),
        }
    }

    /// Whether spans are recorded at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The span of one record in `stage`, begun at `start` (when the batch was taken up), if
    /// the record is traced: its `header` says `Sampled=1`, or it has no sampling decision,
    /// `may_start` is set and the sample rate draws it. `header` then names the new span as
    /// the parent, for the envelope the stage writes on.
    pub fn record(
        &self,
        stage: &'static str,
        header: &mut Option<String>,
        event_id: &str,
        start: SystemTime,
        may_start: bool,
    ) -> Option<RecordSpan> {
        let inner = self.inner.as_ref()?;
        let parent = match header.as_deref() {
            // The common case stays a substring search: no parse for an unsampled record.
            Some(h) if h.contains("Sampled=0") => return None,
            Some(h) if h.contains("Sampled=1") => {
                span_context_from_str(h).filter(|c| c.is_valid() && c.is_sampled())
            }
            _ => None,
        };
        let cx = match parent {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None if may_start && rand::random::<f64>() < inner.sample_rate => Context::new(),
            None => return None,
        };
        let span = inner
            .tracer
            .span_builder(stage)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new(
                    Key::from_static_str(ANNOTATION_EVENT_ID),
                    event_id.to_owned(),
                ),
                KeyValue::new(Key::from_static_str(ANNOTATION_STAGE), stage),
            ])
            .start_with_context(&inner.tracer, &cx);
        *header = span_context_to_string(span.span_context());
        Some(RecordSpan { span })
    }

    /// Ends a batch: on Lambda, which freezes the process between invocations, every span
    /// ended so far is sent to the daemon before the invocation answers; elsewhere the spans
    /// go out in the background within [`EXPORT_DELAY`].
    pub fn flush(&self) {
        if let Some(inner) = &self.inner
            && inner.flush_each_batch
        {
            self.force_flush();
        }
    }

    /// Sends every span ended so far to the daemon now (and waits for it).
    pub fn force_flush(&self) {
        if let Some(inner) = &self.inner
            && let Err(e) = inner.provider.force_flush()
        {
            tracing::warn!(error = %e, "trace flush failed");
        }
    }

    /// The same tracer, flushing at the end of every batch as on Lambda (or not), whatever
    /// the environment says: for benches that measure either.
    #[must_use]
    pub fn flushing_each_batch(self, on: bool) -> Self {
        let inner = self.inner.map(|inner| match Arc::try_unwrap(inner) {
            Ok(mut inner) => {
                inner.flush_each_batch = on;
                Arc::new(inner)
            }
            Err(shared) => shared,
        });
        Tracer { inner }
    }
}

/// The attribute AWS's translator turns into annotation `key`.
fn annotation(key: &str) -> String {
    format!("annotation.{key}")
}

/// The annotations every span has, as attribute keys made once (no allocation per span).
const ANNOTATION_EVENT_ID: &str = "annotation.event_id";
const ANNOTATION_STAGE: &str = "annotation.stage";
const ANNOTATION_OUTCOME: &str = "annotation.outcome";
/// Set by Lambda for a function's process.
const LAMBDA_RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// The exporter to the daemon behind `client`, annotating what the path reader looks up.
fn xray_exporter(client: XrayDaemonClient) -> XrayExporter<XrayDaemonClient> {
    XrayExporter::new(client).with_translator(SegmentTranslator::new())
}

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

/// One record's span in a stage; end it with what became of the record.
#[derive(Debug)]
pub struct RecordSpan {
    span: Span,
}

impl RecordSpan {
    /// Adds annotation `key` (see [`keys`]).
    pub fn annotate(&mut self, key: &str, value: impl Into<opentelemetry::Value>) {
        self.span
            .set_attribute(KeyValue::new(annotation(key), value));
    }

    /// Ends the span with `outcome`; retries and dead letters mark it as a fault.
    pub fn end(mut self, outcome: &Outcome) {
        let (name, detail) = outcome.parts();
        self.span.set_attribute(KeyValue::new(
            Key::from_static_str(ANNOTATION_OUTCOME),
            name,
        ));
        if let Some((key, value)) = detail {
            self.span
                .set_attribute(KeyValue::new(annotation(key), value.to_owned()));
        }
        if let Outcome::Retried(why) | Outcome::DeadLettered(why) = outcome {
            self.span.set_status(Status::error(why.clone()));
        }
        self.span.end();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn static_annotation_keys_are_the_annotations() {
        assert_eq!(ANNOTATION_EVENT_ID, annotation(keys::EVENT_ID));
        assert_eq!(ANNOTATION_STAGE, annotation(keys::STAGE));
        assert_eq!(ANNOTATION_OUTCOME, annotation(keys::OUTCOME));
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
