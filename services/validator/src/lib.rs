//! The validator stage: proves every raw record against its payload schema and its subject's
//! contract, passes valid events on to the validated stream and rejects the rest with a reason.
//!
//! Layout: [`Config`] (environment), [`Validator`] (the pure handler, generic over its ports),
//! [`verdict`] (the decision for one record, free of I/O).
//!
//! Outcomes per record: a copy of one handled already (not above its origin's mark, see
//! `riffle_stage::marks`) -> dropped; valid -> validated stream, same partition key, with the
//! validator's stage time and origin `validator/<shard>` at its raw position; invalid -> rejects queue with a code and the original bytes; registry down ->
//! reported as a batch item failure so Lambda retries it (never rejected for our outage).

mod config;
pub mod verdict;

use riffle_telemetry::names;

use riffle_codec::source::SchemaSource;
use riffle_codec::{CodecError, Envelope, EnvelopeCodec, SchemaCache};
use riffle_stage::marks::{MarkStore, Marks, Republish};
use riffle_stage::schemas::BatchSchemas;
use riffle_stage::schemas::learn_envelope_versions;
use riffle_stage::trace::{BatchSpans, Outcome, Tracer};
use riffle_stage::{
    Failures, KinesisEvent, KinesisEventRecord, KinesisEventResponse, OutRecord, Output,
    OutputError, RejectMessage, Rejects,
};
use riffle_telemetry::Metrics;

pub use config::{Config, ConfigError};
use verdict::Verdict;

/// The stage name written into `stage_times` and reject messages.
pub use riffle_stage::stages::VALIDATOR as STAGE;

/// Why a whole batch failed (Lambda retries or bisects it).
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    /// The output stream or the rejects queue could not be written at all.
    #[error("output failed: {0}")]
    Output(#[from] OutputError),
    /// The origin marks could not be read or written (ADR 0010).
    #[error("marks: {0}")]
    Marks(#[source] OutputError),
}

impl ValidatorError {
    /// Whether retrying the batch may help.
    pub fn retryable(&self) -> bool {
        match self {
            ValidatorError::Output(e) | ValidatorError::Marks(e) => e.retryable(),
        }
    }
}

/// The validator's handler.
pub struct Validator<S, O, R, M> {
    envelopes: EnvelopeCodec,
    schemas: SchemaCache<S>,
    output: O,
    rejects: R,
    marks: Marks<M>,
    tracer: Tracer,
}

impl<S, O, R, M> std::fmt::Debug for Validator<S, O, R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("envelopes", &self.envelopes)
            .finish_non_exhaustive()
    }
}

impl<S: SchemaSource, O: Output, R: Rejects, M: MarkStore> Validator<S, O, R, M> {
    /// A validator writing envelopes with `envelopes`, resolving payload schemas through
    /// `schemas`, enforcing the contract registered with each payload schema (ADR 0020),
    /// dropping copies by the origin marks in
    /// `marks` (producer retries, its own redeliveries).
    pub fn new(
        envelopes: EnvelopeCodec,
        schemas: SchemaCache<S>,
        output: O,
        rejects: R,
        marks: Marks<M>,
    ) -> Self {
        Validator {
            envelopes,
            schemas,
            output,
            rejects,
            marks,
            tracer: Tracer::off(),
        }
    }

    /// Traces the records through `tracer` (X-Ray; the validator starts the traces of
    /// events that carry none).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Validates one batch.
    ///
    /// # Errors
    /// Only when the output stream or rejects queue refuses the whole call.
    pub async fn handle(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, ValidatorError> {
        let records = &event.records;
        let mut spans = BatchSpans::new(STAGE, &self.tracer);
        let data = records.iter().map(|r| r.kinesis.data.as_slice());
        let unavailable = learn_envelope_versions(&self.envelopes, &self.schemas, data).await;
        let mut envelopes: Vec<_> = records
            .iter()
            .map(|r| self.envelopes.decode(&r.kinesis.data))
            .collect();
        let (batch, schemas) = self
            .marks
            .republish_resolving(STAGE, records, &mut envelopes, &self.schemas)
            .await
            .map_err(ValidatorError::Marks)?;
        let now = verdict::now_ms();
        let judged = Judging {
            schemas: &schemas,
            plans: &verdict::plans(&schemas),
            unavailable: &unavailable,
            now,
        };
        let sorted = self.sort(records, envelopes, &batch, &judged, &mut spans);

        let mut metrics = Metrics::new(STAGE);
        metrics.count(names::RECORDS_IN, records.len() as u64);
        metrics.count(names::RECORDS_OUT, sorted.valid.len() as u64);
        metrics.count(names::REJECTED, sorted.rejected.len() as u64);
        metrics.count(names::RECORDS_RETRIED, sorted.failures.len() as u64);
        metrics.count(names::DUPLICATES_DROPPED, batch.copies() as u64);

        let failures = self.deliver(sorted, &mut spans).await?;
        spans.flush();
        self.marks
            .finish_reported(
                STAGE,
                batch,
                records,
                &failures,
                now.div_euclid(1000),
                metrics,
            )
            .await
            .map_err(ValidatorError::Marks)?;
        Ok(failures.into_response())
    }

    /// Judges every record that is not a copy: valid ones become output records, invalid
    /// ones reject messages, and those the registry could not judge are failed for a retry.
    fn sort<'r>(
        &self,
        records: &'r [KinesisEventRecord],
        envelopes: Vec<Result<Envelope, CodecError>>,
        batch: &Republish,
        judging: &Judging<'_>,
        spans: &mut BatchSpans,
    ) -> Sorted<'r> {
        let mut sorted = Sorted {
            valid: Vec::with_capacity(records.len()),
            rejected: Vec::new(),
            failures: Failures::default(),
        };
        for (i, (record, mut envelope)) in records.iter().zip(envelopes).enumerate() {
            if batch.is_copy(i) {
                continue;
            }
            if let Ok(e) = &mut envelope {
                spans.open(i, e, true);
            }
            match verdict::judge(
                &self.envelopes,
                judging.schemas,
                judging.plans,
                judging.unavailable,
                envelope,
                judging.now,
            ) {
                Verdict::Valid(bytes) => sorted.valid.push((
                    (i, record),
                    OutRecord {
                        partition_key: record.kinesis.partition_key.clone(),
                        data: bytes,
                    },
                )),
                Verdict::Reject(reject) => sorted
                    .rejected
                    .push(((i, record), reject.into_message(STAGE, record))),
                Verdict::Retry(why) => {
                    tracing::warn!(seq = %record.kinesis.sequence_number, %why, "will retry record");
                    spans.close(i, Outcome::Retried(why));
                    sorted.failures.fail(record);
                }
            }
        }
        sorted
    }

    /// Publishes the valid records and sends the rejects, at the same time; what either
    /// refuses is failed for a retry. Closes every record's span with what became of it.
    ///
    /// # Errors
    /// The stream or the queue refused the whole call.
    async fn deliver(
        &self,
        sorted: Sorted<'_>,
        spans: &mut BatchSpans,
    ) -> Result<Failures, ValidatorError> {
        let Sorted {
            valid,
            rejected,
            mut failures,
        } = sorted;
        let (valid_records, out): (Vec<_>, Vec<_>) = valid.into_iter().unzip();
        // Codes kept for the spans before the messages become SQS bodies.
        let reject_codes: Vec<(usize, String)> = if spans.any() {
            rejected
                .iter()
                .map(|((i, _), msg)| (*i, msg.code.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let (rejected_records, messages): (Vec<_>, Vec<_>) = rejected
            .into_iter()
            .enumerate()
            .map(|(i, (record, msg))| (record, msg.to_sqs(i.to_string())))
            .unzip();
        let (published, sent) =
            tokio::join!(self.output.publish(out), self.rejects.reject(messages));
        for index in published? {
            if let Some((i, record)) = valid_records.get(index) {
                let why = "the validated stream refused it";
                spans.close(*i, Outcome::Retried(why.into()));
                failures.fail(record);
            }
        }
        for index in sent? {
            if let Some((i, record)) = rejected_records.get(index) {
                spans.close(*i, Outcome::Retried("the rejects queue refused it".into()));
                failures.fail(record);
            }
        }
        for (i, code) in reject_codes {
            spans.close(i, Outcome::Rejected(code));
        }
        spans.close_all(&Outcome::Published);
        Ok(failures)
    }
}

/// What judging a batch's records needs besides the records: their schemas resolved once,
/// the contracts' plans per schema, the envelope versions the registry could not be asked
/// about, and the time.
struct Judging<'a> {
    schemas: &'a BatchSchemas,
    plans: &'a verdict::Plans,
    unavailable: &'a [u32],
    now: i64,
}

/// A batch's records by verdict, each with its index in the batch.
struct Sorted<'r> {
    valid: Vec<((usize, &'r KinesisEventRecord), OutRecord)>,
    rejected: Vec<((usize, &'r KinesisEventRecord), RejectMessage)>,
    failures: Failures,
}

impl<S, O, R, M> riffle_runtime::KinesisHandler for Validator<S, O, R, M>
where
    S: SchemaSource + 'static,
    O: Output + 'static,
    R: Rejects + 'static,
    M: MarkStore,
{
    async fn handle(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, riffle_runtime::HandlerError> {
        riffle_stage::trace::BatchSpans::scope(&self.tracer, STAGE, event, |event| {
            Validator::handle(self, event)
        })
        .await
        .map_err(Into::into)
    }
}
