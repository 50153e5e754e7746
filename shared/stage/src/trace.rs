//! A batch's record spans (`riffle-trace`): opened as each record's envelope is read, which
//! rewrites its trace header for the envelope the stage writes on, and closed with what
//! became of the record once its effect landed (or did not).

use std::time::SystemTime;

use riffle_codec::Envelope;
pub use riffle_trace::{Outcome, Tracer};
use riffle_trace::{RecordSpan, keys};

/// The spans of one batch's records, by index in the batch. With tracing off (or no record
/// sampled) it holds nothing and every call returns at once.
#[derive(Debug)]
pub struct BatchSpans {
    stage: &'static str,
    started: SystemTime,
    spans: Vec<Option<RecordSpan>>,
}

impl BatchSpans {
    /// Spans for a batch of `stage` taken up now.
    pub fn new(stage: &'static str) -> Self {
        BatchSpans {
            stage,
            started: SystemTime::now(),
            spans: Vec::new(),
        }
    }

    /// Opens record `index`'s span if its envelope is traced (see [`Tracer::record`]); the
    /// first stage (`first`) starts traces for records that carry none, and notes when the
    /// producer put the event so the path shows the wait before it.
    pub fn open(&mut self, tracer: &Tracer, index: usize, envelope: &mut Envelope, first: bool) {
        let ingest_time = first.then_some(envelope.ingest_time);
        self.open_header(
            tracer,
            index,
            &mut envelope.trace_header,
            &envelope.event_id,
            ingest_time,
        );
    }

    /// As [`BatchSpans::open`], for a record held as its trace `header` and `event_id` (an
    /// archive row); `ingest_time` is given by the first stage only, which starts traces.
    pub fn open_header(
        &mut self,
        tracer: &Tracer,
        index: usize,
        header: &mut Option<String>,
        event_id: &str,
        ingest_time: Option<i64>,
    ) {
        if !tracer.is_on() {
            return;
        }
        let first = ingest_time.is_some();
        let Some(mut span) = tracer.record(self.stage, header, event_id, self.started, first)
        else {
            return;
        };
        if let Some(at) = ingest_time {
            span.annotate(keys::INGEST_TIME, at);
        }
        if self.spans.len() <= index {
            self.spans.resize_with(index + 1, || None);
        }
        self.spans[index] = Some(span);
    }

    /// Closes record `index`'s span, if open, with `outcome`.
    pub fn close(&mut self, index: usize, outcome: &Outcome) {
        if let Some(span) = self.spans.get_mut(index).and_then(Option::take) {
            span.end(outcome);
        }
    }

    /// Closes every span still open with `outcome` (what the batch's success means).
    pub fn close_all(&mut self, outcome: &Outcome) {
        for span in self.spans.drain(..).flatten() {
            span.end(outcome);
        }
    }

    /// Whether any record of the batch is traced.
    pub fn any(&self) -> bool {
        self.spans.iter().any(Option::is_some)
    }
}

impl Drop for BatchSpans {
    fn drop(&mut self) {
        // A batch that failed as a whole (an error returned early) is retried by Lambda.
        self.close_all(&Outcome::Retried("the batch failed".to_owned()));
    }
}
