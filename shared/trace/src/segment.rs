//! X-Ray segment documents written straight from a record's span and its AWS calls, the
//! documents AWS's exporter writes for the same spans (a test holds the two to each other),
//! without the way through OpenTelemetry's span data and AWS's translator.
//!
//! Why: with every record traced, the export thread was more than a third of a stage's CPU
//! in the demo (perf), about 9 µs a span of which half was the translation (attribute
//! builders, a regex per annotation key, a document tree per span) and half the UDP send.
//! A record's span has a fixed shape, so its document is a few appends to one buffer.

use std::time::SystemTime;

use opentelemetry::trace::{SpanId, TraceId};
use riffle_aws::calls::Call;

use crate::tracer::{FinishedSpan, Outcome};
use crate::{header, keys};

/// What the X-Ray daemon expects before every document (one document a datagram).
pub(crate) const DAEMON_HEADER: &[u8] = b"{\"format\": \"json\", \"version\": 1}\n";

/// The SDK name AWS's exporter writes into every document (`aws.xray.sdk`), kept so the
/// service's views group Riffle's documents as before.
const SDK: &str = "opentelemetry for rust";

/// Writes documents into one buffer, each after [`DAEMON_HEADER`], ready to send.
#[derive(Debug)]
pub(crate) struct Writer {
    buf: Vec<u8>,
    /// The segments' name (the service, e.g. `riffle-validator`), already a JSON string.
    name: Vec<u8>,
}

impl Writer {
    /// A writer for `service`'s documents.
    pub fn new(service: &str) -> Self {
        let mut name = Vec::with_capacity(service.len() + 2);
        string(&mut name, service);
        let mut buf = Vec::with_capacity(2048);
        buf.extend_from_slice(DAEMON_HEADER);
        Writer { buf, name }
    }

    /// The datagram of a record's span: a segment named for the service, its parent the
    /// upstream span (when the record came with one), the record's annotations, and the
    /// fault flag for a retry or a dead letter.
    pub fn record(&mut self, span: &FinishedSpan) -> &[u8] {
        self.buf.truncate(DAEMON_HEADER.len());
        let out = &mut self.buf;
        out.extend_from_slice(b"{\"name\":");
        out.extend_from_slice(&self.name);
        common(out, span.span_id, span.trace_id, span.start, span.end);
        if let Some(parent) = span.parent {
            parent_id(out, parent);
        }
        if matches!(span.outcome, Outcome::Retried(_) | Outcome::DeadLettered(_)) {
            out.extend_from_slice(b",\"fault\":true");
        }
        out.extend_from_slice(b",\"aws\":{\"xray\":{\"sdk\":\"");
        out.extend_from_slice(SDK.as_bytes());
        out.extend_from_slice(b"\"}},\"annotations\":{");
        let (outcome, detail) = span.outcome.parts();
        member(out, keys::EVENT_ID, true);
        string(out, span.event_id.as_str());
        member(out, keys::STAGE, false);
        string(out, span.stage);
        member(out, keys::OUTCOME, false);
        string(out, outcome);
        if let Some((key, value)) = detail {
            member(out, key, false);
            string(out, value);
        }
        if let Some(at) = span.ingest_time {
            member(out, keys::INGEST_TIME, false);
            out.extend_from_slice(itoa::Buffer::new().format(at).as_bytes());
        }
        if let Some(trace) = span.invocation {
            member(out, keys::INVOCATION_TRACE, false);
            out.push(b'"');
            trace_id(out, trace);
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        &self.buf
    }

    /// The datagram of one AWS call under the record's span `parent` in `trace`: a
    /// subsegment in the `aws` namespace named for the service, with the operation.
    pub fn call(&mut self, call: &Call, trace: TraceId, parent: SpanId) -> &[u8] {
        self.buf.truncate(DAEMON_HEADER.len());
        let out = &mut self.buf;
        out.extend_from_slice(b"{\"type\":\"subsegment\",\"name\":");
        string(out, &call.service);
        common(out, header::new_span_id(), trace, call.start, call.end);
        parent_id(out, parent);
        out.extend_from_slice(b",\"namespace\":\"aws\"");
        if call.error.is_some() {
            out.extend_from_slice(b",\"fault\":true");
        }
        out.extend_from_slice(b",\"aws\":{\"xray\":{\"sdk\":\"");
        out.extend_from_slice(SDK.as_bytes());
        out.extend_from_slice(b"\"},\"operation\":");
        string(out, &call.operation);
        out.extend_from_slice(b"}}");
        &self.buf
    }
}

/// `,"id":..,"trace_id":..,"start_time":..,"end_time":..`
fn common(out: &mut Vec<u8>, id: SpanId, trace: TraceId, start: SystemTime, end: SystemTime) {
    out.extend_from_slice(b",\"id\":\"");
    span_id(out, id);
    out.extend_from_slice(b"\",\"trace_id\":\"");
    trace_id(out, trace);
    out.extend_from_slice(b"\",\"start_time\":");
    seconds(out, start);
    out.extend_from_slice(b",\"end_time\":");
    seconds(out, end);
}

fn parent_id(out: &mut Vec<u8>, parent: SpanId) {
    out.extend_from_slice(b",\"parent_id\":\"");
    span_id(out, parent);
    out.push(b'"');
}

/// `"key":` (after a comma unless `first`); annotation keys are Riffle's own constants,
/// already in X-Ray's alphabet.
fn member(out: &mut Vec<u8>, key: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `s` as a JSON string, escaped.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Epoch seconds with their fraction, as X-Ray's documents carry times.
fn seconds(out: &mut Vec<u8>, at: SystemTime) {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    out.extend_from_slice(ryu::Buffer::new().format_finite(secs).as_bytes());
}

fn span_id(out: &mut Vec<u8>, id: SpanId) {
    let mut digits = [0u8; 16];
    header::hex_into(&mut digits, u64::from_be_bytes(id.to_bytes()).into());
    out.extend_from_slice(&digits);
}

/// `1-<8 hex>-<24 hex>`, as [`header::root`] writes it.
fn trace_id(out: &mut Vec<u8>, trace: TraceId) {
    let id = u128::from_be_bytes(trace.to_bytes());
    let mut digits = [0u8; 35];
    digits[0] = b'1';
    digits[1] = b'-';
    header::hex_into(&mut digits[2..10], id >> 96);
    digits[10] = b'-';
    header::hex_into(&mut digits[11..], id & ((1 << 96) - 1));
    out.extend_from_slice(&digits);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry_aws::xray_exporter::{
        SegmentDocument, SegmentDocumentExporter, SegmentTranslator, XrayExporter,
    };
    use serde_json::Value;

    use super::*;
    use crate::export::{Pace, Sink, SpanDataSink, overlaps};
    use crate::tracer::EventId;

    /// What AWS's exporter writes, kept as text.
    #[derive(Debug, Default, Clone)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl SegmentDocumentExporter for Capture {
        type Error = std::io::Error;

        async fn export_segment_documents(
            &self,
            batch: Vec<SegmentDocument<'_>>,
        ) -> Result<(), Self::Error> {
            let mut kept = self.0.lock().unwrap();
            for document in &batch {
                let mut text = Vec::new();
                document.to_writer(&mut text);
                kept.push(String::from_utf8(text).unwrap());
            }
            Ok(())
        }
    }

    fn call(service: &str, operation: &str, start: SystemTime, ms: u64) -> Call {
        Call {
            service: service.into(),
            operation: operation.into(),
            start,
            end: start + Duration::from_millis(ms),
            error: None,
            conditions_not_met: 0,
            count: 1,
        }
    }

    /// Spans of every shape a stage finishes: each outcome, with and without a parent, an
    /// ingest time, an invocation, calls inside and outside the record's time, failed calls,
    /// text that needs escaping, an event id too long to keep inline.
    fn spans() -> Vec<FinishedSpan> {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let start = now - Duration::from_millis(40);
        let end = now;
        let mut failed = call(
            "Kinesis",
            "PutRecords",
            start + Duration::from_millis(5),
            12,
        );
        failed.error = Some("throttled".into());
        let mut raced = call("DynamoDB", "PutItem", start + Duration::from_millis(1), 3);
        raced.conditions_not_met = 2;
        raced.count = 7;
        let calls: Arc<[Call]> = vec![
            call("DynamoDB", "GetItem", start + Duration::from_nanos(1), 2),
            failed,
            raced,
            // Before the record was in hand, and after it: not its children.
            call(
                "SQS",
                "SendMessageBatch",
                start - Duration::from_millis(30),
                10,
            ),
            call("S3", "PutObject", end + Duration::from_millis(1), 10),
        ]
        .into();
        let outcomes = [
            Outcome::Published,
            Outcome::Rejected("bad_magic".into()),
            Outcome::Viewed("web#2026-12-08T01:00".into()),
            Outcome::Archived("archive/dt=2026-12-08/\"quoted\\ü\".parquet".into()),
            Outcome::Retried("throttled:\n\tthe stream".into()),
            Outcome::DeadLettered("poison \u{1} record".into()),
        ];
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                let long = format!("{}-{}", "é".repeat(30), i);
                let event_id = if i % 2 == 0 {
                    format!("01a2535c-8e31-7107-a5fb-3098fa044e0{i}")
                } else {
                    long
                };
                FinishedSpan {
                    stage: ["validator", "enricher", "aggregator", "archiver"][i % 4],
                    trace_id: header::new_trace_id(secs),
                    parent: (i != 1).then(header::new_span_id),
                    span_id: header::new_span_id(),
                    event_id: EventId::new(&event_id),
                    ingest_time: (i % 3 == 0).then_some(1_796_694_904_392 + i as i64),
                    start: start + Duration::from_nanos(i as u64 * 1_234_567),
                    end,
                    outcome,
                    calls: (i < 3 || i == 4).then(|| Arc::clone(&calls)),
                    invocation: (i == 2).then(|| header::new_trace_id(secs)),
                }
            })
            .collect()
    }

    /// A document with the ids drawn for each call's span left out (each side draws its own).
    fn comparable(mut document: Value) -> Value {
        if document["type"] == "subsegment" {
            let id = document["id"].as_str().unwrap();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            document["id"] = Value::Null;
        }
        document
    }

    #[test]
    fn documents_are_what_aws_exporter_writes_for_the_same_spans() {
        let capture = Capture::default();
        let aws = XrayExporter::new(capture.clone()).with_translator(SegmentTranslator::new());
        let mut sink = SpanDataSink::new("riffle-validator", aws);
        let mut theirs_spans = spans();
        // The same spans again, for this writer: the ids and times of `spans()` are drawn
        // anew, so copy them over from the first set.
        let mut ours_spans = spans();
        for (ours, theirs) in ours_spans.iter_mut().zip(&theirs_spans) {
            ours.trace_id = theirs.trace_id;
            ours.parent = theirs.parent;
            ours.span_id = theirs.span_id;
            ours.start = theirs.start;
            ours.end = theirs.end;
            ours.invocation = theirs.invocation;
            ours.calls.clone_from(&theirs.calls);
        }
        sink.spans(&mut theirs_spans, &mut Pace::new(false));
        let theirs: Vec<Value> = capture
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|d| comparable(serde_json::from_str(d).unwrap()))
            .collect();

        let mut writer = Writer::new("riffle-validator");
        let mut ours = Vec::new();
        let parse = |datagram: &[u8]| {
            assert!(datagram.starts_with(DAEMON_HEADER));
            comparable(serde_json::from_slice(&datagram[DAEMON_HEADER.len()..]).unwrap())
        };
        for span in &ours_spans {
            ours.push(parse(writer.record(span)));
            for call in span.calls.iter().flat_map(|c| c.iter()) {
                if overlaps(call, span) {
                    ours.push(parse(writer.call(call, span.trace_id, span.span_id)));
                }
            }
        }
        // 6 records; of the calls, 3, 3, 2 and 1 were made while the four records that
        // carry them were in hand (the later records were taken up later).
        assert_eq!(theirs.len(), 6 + 3 + 3 + 2 + 1);
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn documents_fit_a_datagram_and_reuse_one_buffer() {
        let mut writer = Writer::new("riffle-archiver");
        let spans = spans();
        let first = writer.record(&spans[0]).len();
        let again = writer.record(&spans[0]).len();
        assert_eq!(first, again);
        for span in &spans {
            assert!(writer.record(span).len() < 2048);
        }
    }
}
