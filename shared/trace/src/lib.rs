//! Riffle's X-Ray tracing: one trace per event from the producer to the archive, the local
//! X-Ray daemon that collects it on one machine, and the reading of an event's path back.
//!
//! Kinesis carries no trace context, so the envelope does (`trace_header`, X-Ray's
//! `Root=...;Parent=...;Sampled=...`). Every stage continues it per record: a server span
//! named for the stage (its own node on the service map), with the event id and the stage
//! as annotations, ended with the record's outcome; the outgoing envelope's header names
//! that span as the next parent. The header's `Sampled` flag decides: an unsampled record
//! costs a substring search. The validator starts a trace for a record that carries none,
//! at the sample rate ([`SAMPLE_RATE_ENV`]).
//!
//! A record's span costs the handler a header read, a span id and a few copies; a batch's
//! finished spans go to an export thread in one message, which writes each span's segment
//! document straight into a buffer (`segment`, held by a test to what AWS's X-Ray exporter
//! writes for the same span; ADR 0023) and sends it over UDP to the daemon at
//! [`DAEMON_ADDRESS_ENV`], as Lambda provides it. Locally [`Collector`] is that
//! daemon: it keeps every document in a file that [`store`] reads back into an event's path,
//! and may forward them to an X-Ray endpoint (moto's). On AWS, [`xray`] reads the same
//! documents back from X-Ray's API.
//!
//! On Lambda each batch invocation also keeps a span of its own in the function's trace
//! ([`invocation`]).
//!
//! Layout: [`tracer`] (the stages' side), `header` (X-Ray's trace header), [`export`] (the
//! export thread), `segment` (its documents), [`collector`] (the local daemon) and
//! [`forward`] (its PutTraceSegments sender), [`store`] (the documents and an event's path
//! through them), [`xray`] (the documents from X-Ray's API, over a [`window`] of time),
//! [`error`] ([`TraceError`]).

pub mod collector;
pub mod error;
pub mod export;
pub mod forward;
mod header;
pub mod invocation;
mod segment;
pub mod store;
pub mod tracer;
pub mod window;
pub mod xray;

pub use collector::Collector;
pub use error::TraceError;
pub use export::ExportStats;
pub use forward::ForwardStats;
pub use invocation::{BatchSummary, FinishedInvocation, InvocationSpan};
pub use opentelemetry::trace::TraceId;
pub use tracer::{FinishedSpan, Outcome, RecordSpan, Tracer};

/// Where the X-Ray daemon listens (`host:port`, UDP), as Lambda sets it. Unset: no tracing.
pub const DAEMON_ADDRESS_ENV: &str = "AWS_XRAY_DAEMON_ADDRESS";
/// Share of events without a trace header the validator starts a trace for (0..=1).
pub const SAMPLE_RATE_ENV: &str = "RIFFLE_TRACE_SAMPLE_RATE";
/// X-Ray's default rule samples 5 % beyond a reservoir of one a second; Riffle keeps 5 %.
pub const DEFAULT_SAMPLE_RATE: f64 = 0.05;

/// Annotation keys (X-Ray indexes annotations for filter expressions such as
/// `annotation.event_id = "..."`).
pub mod keys {
    /// The envelope's event id.
    pub const EVENT_ID: &str = "event_id";
    /// The stage that handled the record.
    pub const STAGE: &str = "stage";
    /// What became of the record in the stage ([`crate::Outcome`]).
    pub const OUTCOME: &str = "outcome";
    /// Why: a reject code, a failure.
    pub const REASON: &str = "reason";
    /// Where it ended: a view item key, an archive object.
    pub const WHERE: &str = "where";
    /// When the producer put it (epoch ms), for the wait before the first stage.
    pub const INGEST_TIME: &str = "ingest_time";
    /// On a record's span: the trace of the Lambda invocation that handled its batch.
    pub const INVOCATION_TRACE: &str = "invocation_trace";
    /// On a batch invocation's span: records in the batch, failed ones, traced ones.
    pub const RECORDS: &str = "records";
    pub const FAILED: &str = "failed";
    pub const TRACED: &str = "traced";
    /// On a batch invocation's span: the shard its records came from.
    pub const SHARD: &str = "shard";
}
