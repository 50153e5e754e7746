//! [`TraceError`], the crate's one error: reading documents (a file, X-Ray's API) and finding
//! an event in them.

use aws_sdk_xray::error::{BoxError, DisplayErrorContext};

/// Errors reading documents or finding an event in them.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The documents could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No document names the event.
    #[error(
        "no trace names event {0}: either it was not sampled (traces start at the validator's \
         RIFFLE_TRACE_SAMPLE_RATE, or the producer's Sampled flag), its stages have not run yet, \
         or no such event was produced"
    )]
    Unknown(String),
    /// X-Ray holds no trace naming the event in the window asked.
    #[error(
        "no trace in X-Ray names event {event_id} from {window}: either it was not sampled \
         (RIFFLE_TRACE_SAMPLE_RATE, or the producer's Sampled flag), or X-Ray has not indexed its \
         trace yet (that takes up to a minute or so after the stages ran), or it ran outside the \
         window (widen it with --from/--to or --minutes; X-Ray keeps traces 30 days){}",
        scan_note(*.scanned, *.capped)
    )]
    NotInWindow {
        /// The event.
        event_id: String,
        /// The window, as a person reads it.
        window: String,
        /// When the service refused the filter expression: how many of the window's traces
        /// were read unfiltered and matched here instead.
        scanned: Option<usize>,
        /// Whether that read stopped at its cap (older traces of the window unread).
        capped: bool,
    },
    /// The event id cannot be carried in an X-Ray filter expression.
    #[error("event id {event_id:?} cannot be looked up in X-Ray: {why}")]
    BadEventId {
        /// The id as given.
        event_id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The time window given is not one.
    #[error("bad time window: {0}")]
    BadWindow(String),
    /// An X-Ray API call failed (after the SDK's own retries).
    #[error("X-Ray {operation} failed: {}", DisplayErrorContext(.source.as_ref()))]
    Api {
        /// The operation (`GetTraceSummaries`, `BatchGetTraces`).
        operation: &'static str,
        /// The SDK's error.
        source: BoxError,
    },
}

impl TraceError {
    /// Whether trying again later may succeed: X-Ray throttled or failed, or had not indexed
    /// the trace yet. A bad id, window or file stays bad.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            TraceError::Api { .. } | TraceError::NotInWindow { .. }
        )
    }
}

fn scan_note(scanned: Option<usize>, capped: bool) -> String {
    match scanned {
        None => String::new(),
        Some(n) if capped => format!(
            ". X-Ray refused the filter expression, so the window's {n} most recent traces were \
             read and matched here; older ones were not read: narrow the window"
        ),
        Some(n) => format!(
            ". X-Ray refused the filter expression, so all {n} traces of the window were read \
             and matched here"
        ),
    }
}
