//! A batch's record spans (`riffle-trace`): opened as each record's envelope is read, which
//! rewrites its trace header for the envelope the stage writes on, and closed with what
//! became of the record once its effect landed (or did not). The batch's finished spans go
//! to the tracer's export thread together, at [`BatchSpans::flush`] or when dropped.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::SystemTime;

use riffle_aws::calls::{Call, CallLog};
use riffle_codec::Envelope;
use riffle_runtime::{KinesisEvent, KinesisEventResponse, LAMBDA_RUNTIME_API_ENV};
use riffle_trace::invocation::LAMBDA_TRACE_ENV;
use riffle_trace::{BatchSummary, FinishedSpan, RecordSpan, TraceId};
pub use riffle_trace::{Outcome, Tracer};

/// The traced Lambda invocation a batch runs in, and the event traces its spans gathered.
struct Gathered {
    trace: TraceId,
    summary: BatchSummary,
}

tokio::task_local! {
    static INVOCATION: RefCell<Gathered>;
}

fn on_lambda() -> bool {
    std::env::var_os(LAMBDA_RUNTIME_API_ENV).is_some()
}

/// What the batch is: how many records, from which shard, between which positions.
fn summary_of(event: &KinesisEvent) -> BatchSummary {
    let records = &event.records;
    BatchSummary {
        records: records.len(),
        shard: records.first().map(|r| r.source.shard_id.clone()),
        first_sequence: records.first().map(|r| r.kinesis.sequence_number.clone()),
        last_sequence: records.last().map(|r| r.kinesis.sequence_number.clone()),
        ..BatchSummary::default()
    }
}

/// Traced records of a batch that carry its AWS calls as child spans. The calls are the
/// batch's, the same for every record, and each costs the export thread a document: with
/// every record traced (the demo) a child per call per record cut the twin's throughput by
/// a sixth on two cores. At the default 5 % sampling a batch rarely holds more traced
/// records than this, so a sampled trace nearly always shows them.
pub const CALL_SPANS_PER_BATCH: usize = 16;

/// The spans of one batch's records, by index in the batch. With tracing off (or no record
/// sampled) it holds nothing and every call returns at once.
#[derive(Debug)]
pub struct BatchSpans {
    stage: &'static str,
    tracer: Tracer,
    started: SystemTime,
    open: Vec<Option<RecordSpan>>,
    finished: Vec<FinishedSpan>,
    /// The batch's AWS calls, when it runs in a log ([`BatchSpans::scope`]).
    calls: Option<CallLog>,
}

impl BatchSpans {
    /// Spans for a batch of `stage` taken up now, recorded by `tracer`.
    pub fn new(stage: &'static str, tracer: &Tracer) -> Self {
        BatchSpans {
            stage,
            tracer: tracer.clone(),
            started: SystemTime::now(),
            open: Vec::new(),
            finished: Vec::new(),
            calls: riffle_aws::calls::current(),
        }
    }

    /// Runs a batch's handling (`handle(event)`) with its AWS calls recorded when `tracer`
    /// is on, so the spans of its records show them ([`riffle_aws::calls`]). On Lambda,
    /// when the invocation is traced (`_X_AMZN_TRACE_ID` sampled), the batch also gets its
    /// own span in the function's trace, and its records' spans name that trace
    /// ([`riffle_trace::invocation`]).
    pub async fn scope<E, F>(
        tracer: &Tracer,
        stage: &'static str,
        event: KinesisEvent,
        handle: impl FnOnce(KinesisEvent) -> F,
    ) -> Result<KinesisEventResponse, E>
    where
        E: std::fmt::Display,
        F: std::future::Future<Output = Result<KinesisEventResponse, E>>,
    {
        let invocation = if tracer.is_on() && on_lambda() {
            std::env::var(LAMBDA_TRACE_ENV)
                .ok()
                .and_then(|h| tracer.invocation(stage, &h, SystemTime::now()))
        } else {
            None
        };
        let Some(span) = invocation else {
            return riffle_aws::calls::recorded(tracer.call_log(), handle(event)).await;
        };
        let mut summary = summary_of(&event);
        let gathered = RefCell::new(Gathered {
            trace: span.trace_id(),
            summary: BatchSummary::default(),
        });
        let (result, gathered) = INVOCATION
            .scope(gathered, async {
                let result = riffle_aws::calls::recorded(tracer.call_log(), handle(event)).await;
                let gathered = INVOCATION.with(|g| std::mem::take(&mut g.borrow_mut().summary));
                (result, gathered)
            })
            .await;
        summary.traced = gathered.traced;
        summary.event_traces = gathered.event_traces;
        match &result {
            Ok(response) => summary.failed = response.batch_item_failures.len(),
            Err(e) => summary.error = Some(e.to_string()),
        }
        tracer.export_invocation(span.finish(summary, SystemTime::now()));
        tracer.flush();
        result
    }

    /// Opens record `index`'s span if its envelope is traced (see [`Tracer::record`]); the
    /// first stage (`first`) starts traces for records that carry none, and notes when the
    /// producer put the event so the path shows the wait before it.
    pub fn open(&mut self, index: usize, envelope: &mut Envelope, first: bool) {
        let ingest_time = first.then_some(envelope.ingest_time);
        self.open_header(
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
        index: usize,
        header: &mut Option<String>,
        event_id: &str,
        ingest_time: Option<i64>,
    ) {
        if !self.tracer.is_on() {
            return;
        }
        let first = ingest_time.is_some();
        let Some(mut span) = self
            .tracer
            .record(self.stage, header, event_id, self.started, first)
        else {
            return;
        };
        if let Some(at) = ingest_time {
            span.set_ingest_time(at);
        }
        if self.open.len() <= index {
            if self.open.capacity() == 0 {
                self.open = self.tracer.open_buffer();
            }
            self.open.resize_with(index + 1, || None);
        }
        if self.finished.capacity() == 0 {
            self.finished = self.tracer.span_buffer();
        }
        self.open[index] = Some(span);
    }

    /// Closes record `index`'s span, if open, with `outcome`.
    pub fn close(&mut self, index: usize, outcome: Outcome) {
        if let Some(span) = self.open.get_mut(index).and_then(Option::take) {
            self.finished.push(span.finish(outcome, SystemTime::now()));
        }
    }

    /// Closes every span still open with `outcome` (what the batch's success means).
    pub fn close_all(&mut self, outcome: &Outcome) {
        if self.open.is_empty() {
            return;
        }
        let end = SystemTime::now();
        for span in self.open.drain(..).flatten() {
            self.finished.push(span.finish(outcome.clone(), end));
        }
    }

    /// Whether any record of the batch is traced.
    pub fn any(&self) -> bool {
        !self.finished.is_empty() || self.open.iter().any(Option::is_some)
    }

    /// Hands the finished spans to the export thread; on Lambda waits until they are sent
    /// (see [`Tracer::flush`]).
    pub fn flush(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        if let Some(log) = &self.calls {
            let calls: Arc<[Call]> = log.take_grouped().into();
            if !calls.is_empty() {
                for span in self.finished.iter_mut().take(CALL_SPANS_PER_BATCH) {
                    span.set_calls(&calls);
                }
            }
        }
        // Within a traced invocation ([`BatchSpans::scope`]) each record names its trace
        // and the invocation lists the records'.
        let _ = INVOCATION.try_with(|gathered| {
            let mut gathered = gathered.borrow_mut();
            let trace = gathered.trace;
            for span in &mut self.finished {
                span.set_invocation(trace);
                gathered.summary.add_trace(span.trace_id());
            }
        });
        self.tracer.export(std::mem::take(&mut self.finished));
        self.tracer.flush();
    }
}

impl Drop for BatchSpans {
    fn drop(&mut self) {
        // A batch that failed as a whole (an error returned early) is retried by Lambda.
        self.close_all(&Outcome::Retried("the batch failed".to_owned()));
        self.flush();
        self.tracer.give_open_buffer(std::mem::take(&mut self.open));
    }
}
