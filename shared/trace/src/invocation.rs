//! The batch invocation's own span, in the function's trace. On Lambda with active tracing
//! every invocation has a trace of its own: Lambda writes the function's segment and names
//! it in the invocation's header (`_X_AMZN_TRACE_ID`). The records' spans live in the
//! events' traces (one per event, see the crate's root), so without this the function's
//! trace would hold Lambda's segment and nothing of what the batch did. This span, a
//! subsegment under Lambda's segment, says which records came (shard, first and last
//! position, how many), how many failed or why the whole batch did, and which event traces
//! it carried; each record span names the invocation's trace back
//! ([`crate::keys::INVOCATION_TRACE`]). X-Ray drops links between traces, so these two
//! annotations are the way from one to the other.

use std::time::SystemTime;

use opentelemetry::trace::{SpanId, TraceId};

/// Where Lambda's runtime puts the invocation's trace header when the function traces
/// actively (`lambda_runtime` sets it before each invocation).
pub const LAMBDA_TRACE_ENV: &str = "_X_AMZN_TRACE_ID";

/// Event traces a batch span lists by id: a hundred ids are about 3.5 KB of its document,
/// well inside a UDP datagram; the count of traced records is given in full.
pub const LISTED_TRACES: usize = 100;

/// A batch invocation's span, open while the batch is handled.
#[derive(Debug)]
pub struct InvocationSpan {
    pub(crate) stage: &'static str,
    pub(crate) trace_id: TraceId,
    /// Lambda's function segment.
    pub(crate) parent: SpanId,
    pub(crate) span_id: SpanId,
    pub(crate) start: SystemTime,
}

impl InvocationSpan {
    /// The function's trace (Lambda's) the span belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Ends the span at `end` with what the batch was and what came of it.
    pub fn finish(self, summary: BatchSummary, end: SystemTime) -> FinishedInvocation {
        FinishedInvocation {
            span: self,
            summary,
            end,
        }
    }
}

/// What a batch was and what came of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchSummary {
    /// Records in the batch.
    pub records: usize,
    /// The shard they came from.
    pub shard: Option<String>,
    /// The first and last record's sequence numbers.
    pub first_sequence: Option<String>,
    pub last_sequence: Option<String>,
    /// Records answered as partial batch failures (retried by Lambda from the first).
    pub failed: usize,
    /// Why the whole batch failed, when it did (Lambda retries it, then bisects).
    pub error: Option<String>,
    /// Records whose events are traced.
    pub traced: usize,
    /// The first [`LISTED_TRACES`] of their traces.
    pub event_traces: Vec<TraceId>,
}

impl BatchSummary {
    /// Notes a traced record's event trace.
    pub fn add_trace(&mut self, trace: TraceId) {
        self.traced += 1;
        if self.event_traces.len() < LISTED_TRACES {
            self.event_traces.push(trace);
        }
    }

    /// `ok`, `partial` (some records failed) or `failed` (the whole batch).
    pub fn outcome(&self) -> &'static str {
        if self.error.is_some() {
            "failed"
        } else if self.failed > 0 {
            "partial"
        } else {
            "ok"
        }
    }
}

/// An invocation's span ended, waiting for [`crate::Tracer::export_invocation`].
#[derive(Debug)]
pub struct FinishedInvocation {
    pub(crate) span: InvocationSpan,
    pub(crate) summary: BatchSummary,
    pub(crate) end: SystemTime,
}
