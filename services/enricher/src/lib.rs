//! The enricher stage: joins each validated event with its reference data, derives the view key,
//! metric and window from the subject's contract, and passes the enriched envelope on.
//!
//! Layout: [`Config`] (environment), [`reference`] (reference data port, DynamoDB source and TTL
//! cache), [`Enricher`] (the pure handler, generic over its ports).
//!
//! Missing reference data is not an error: the event flows on with `reference_found = false`
//! and `unknown` in the key. A record that cannot be decoded here passed the validator, so it
//! was written by something else or the contracts changed under it; retrying cannot fix it, so
//! it goes to the stage's dead-letter queue with its reason and bytes instead of blocking the
//! shard. A registry or DynamoDB outage fails the batch, and Lambda retries it.

mod config;
pub mod reference;

use riffle_telemetry::names;
use std::collections::HashMap;
use std::sync::Arc;

use riffle_codec::datum::read_record;
use riffle_codec::rules::{DEFAULT_ALLOWED_LATENESS_SECS, EnrichSpec, closes_at};
use riffle_codec::source::SchemaSource;
use riffle_codec::{CodecError, CompiledSchema, Enrichment, Envelope, EnvelopeCodec, SchemaCache};
use riffle_stage::marks::{MarkStore, Marks, Republish};
use riffle_stage::schemas::{BatchSchemas, learn_envelope_versions, payload_schema, take_outage};
use riffle_stage::trace::{BatchSpans, Outcome, Tracer};
use riffle_stage::{
    Failures, KinesisEvent, KinesisEventRecord, KinesisEventResponse, OutRecord, Output,
    OutputError, RejectMessage, Rejects,
};
use riffle_telemetry::Metrics;

pub use config::{Config, ConfigError};
use reference::{Attributes, ReferenceCache, ReferenceSource};

/// The stage name written into `stage_times`.
pub use riffle_stage::stages::ENRICHER as STAGE;
/// Window length for subjects whose contract has no enrichment section.
pub use riffle_view::DEFAULT_WINDOW_SECS;

/// Why a whole batch failed (Lambda retries or bisects it).
#[derive(Debug, thiserror::Error)]
pub enum EnricherError {
    /// The output stream or the dead-letter queue refused the call.
    #[error("output failed: {0}")]
    Output(#[from] OutputError),
    /// Reference data could not be read.
    #[error("reference data unavailable: {0}")]
    Reference(#[from] riffle_aws::AwsError),
    /// The registry could not be asked about a schema.
    #[error("schema registry unavailable: {0}")]
    Registry(String),
    /// The origin marks could not be read or written (ADR 0010).
    #[error("marks: {0}")]
    Marks(#[source] OutputError),
}

impl EnricherError {
    /// Whether retrying the batch may help.
    pub fn retryable(&self) -> bool {
        match self {
            EnricherError::Output(e) | EnricherError::Marks(e) => e.retryable(),
            EnricherError::Reference(e) => e.retryable(),
            EnricherError::Registry(_) => true,
        }
    }
}

/// How events of `schema` are enriched: the `enrich` section of the contract registered
/// with it; none means the default (counted under the subject).
fn enrich_spec(schema: &CompiledSchema) -> Option<&EnrichSpec> {
    schema.contract()?.enrich.as_ref()
}

/// The enricher's handler.
pub struct Enricher<S, R, O, D, M> {
    envelopes: EnvelopeCodec,
    schemas: SchemaCache<S>,
    reference: ReferenceCache<R>,
    output: O,
    dlq: D,
    marks: Marks<M>,
    tracer: Tracer,
}

impl<S, R, O, D, M> std::fmt::Debug for Enricher<S, R, O, D, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("envelopes", &self.envelopes)
            .finish_non_exhaustive()
    }
}

/// What a batch's records became: enriched records for the next stream (with each one's
/// index and input record, in the same order), dead letters, and how many found no reference.
struct Sorted<'r> {
    out: Vec<OutRecord>,
    out_records: Vec<(usize, &'r KinesisEventRecord)>,
    dead: Vec<(&'r KinesisEventRecord, RejectMessage)>,
    /// Per traced dead letter: its index in the batch and in `dead`, and why; its span is
    /// closed once the queue took it (or refused it).
    dead_spans: Vec<(usize, usize, String)>,
    missing_reference: u64,
    /// Enriched records flagged late (ADR 0021).
    late: u64,
}

/// What one record becomes before the batch's reference data is known.
enum Plan {
    Enrich {
        envelope: Box<Envelope>,
        lookup: Option<String>,
        // What the payload gives, read once here; the error dead-letters with the envelope.
        derived: Result<Derived, (&'static str, String)>,
    },
    DeadLetter(&'static str, String),
}

/// The payload's part of the enrichment, taken before the reference data is known.
enum Derived {
    Spec {
        /// The payload schema, whose contract's `enrich` section applies.
        schema: Arc<CompiledSchema>,
        agg_key_fields: Vec<Option<String>>,
        metric: f64,
    },
    Default,
}

impl<S: SchemaSource, R: ReferenceSource, O: Output, D: Rejects, M: MarkStore>
    Enricher<S, R, O, D, M>
{
    /// An enricher writing with `envelopes`, deriving by the contract registered with each
    /// payload schema (ADR 0020), dropping
    /// copies by the origin marks in `marks` (the validator's re-publishes, redeliveries).
    pub fn new(
        envelopes: EnvelopeCodec,
        schemas: SchemaCache<S>,
        reference: ReferenceCache<R>,
        output: O,
        dlq: D,
        marks: Marks<M>,
    ) -> Self {
        Enricher {
            envelopes,
            schemas,
            reference,
            output,
            dlq,
            marks,
            tracer: Tracer::off(),
        }
    }

    /// Traces the records through `tracer` (X-Ray; only records whose envelope says sampled).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Enriches one batch.
    ///
    /// # Errors
    /// Registry, reference data or output unavailable: the batch is retried as a whole.
    pub async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, EnricherError> {
        let records = &event.records;
        let mut spans = BatchSpans::new(STAGE, &self.tracer);
        let data = records.iter().map(|r| r.kinesis.data.as_slice());
        let unavailable = learn_envelope_versions(&self.envelopes, &self.schemas, data).await;
        if let Some(id) = unavailable.first() {
            return Err(EnricherError::Registry(format!("envelope schema {id}")));
        }
        let mut decoded: Vec<_> = records
            .iter()
            .map(|r| self.envelopes.decode(&r.kinesis.data))
            .collect();
        let (batch, mut schemas) = self
            .marks
            .republish_resolving(STAGE, records, &mut decoded, &self.schemas)
            .await
            .map_err(EnricherError::Marks)?;
        if let Some(e) = take_outage(&mut schemas) {
            return Err(EnricherError::Registry(e.to_string()));
        }

        let plans: Vec<Plan> = decoded
            .into_iter()
            .map(|e| self.plan(e, &schemas))
            .collect();
        let keys: Vec<String> = plans
            .iter()
            .enumerate()
            .filter(|(i, _)| !batch.is_copy(*i))
            .filter_map(|(_, p)| match p {
                Plan::Enrich { lookup, .. } => lookup.clone(),
                Plan::DeadLetter(..) => None,
            })
            .collect();
        let found = self.reference.get_many(&keys).await?;

        let now = riffle_codec_now_ms();
        let mut batch = batch;
        let sorted = self.sort(records, plans, &mut batch, &found, now, &mut spans);

        let mut metrics = Metrics::new(STAGE);
        metrics.count(names::RECORDS_IN, records.len() as u64);
        metrics.count(names::RECORDS_OUT, sorted.out.len() as u64);
        metrics.count(names::REFERENCE_MISSING, sorted.missing_reference);
        metrics.count(names::LATE_EVENTS, sorted.late);
        metrics.count(names::DEAD_LETTERED, sorted.dead.len() as u64);
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
            .map_err(EnricherError::Marks)?;
        Ok(failures.into_response())
    }

    /// Enriches every record that is not a copy; what cannot be enriched (an undecodable
    /// record, a payload the contract cannot derive from) becomes a dead letter.
    fn sort<'r>(
        &self,
        records: &'r [KinesisEventRecord],
        plans: Vec<Plan>,
        batch: &mut Republish,
        found: &HashMap<String, Option<Attributes>>,
        now: i64,
        spans: &mut BatchSpans,
    ) -> Sorted<'r> {
        let mut sorted = Sorted {
            out: Vec::with_capacity(records.len()),
            out_records: Vec::with_capacity(records.len()),
            dead: Vec::new(),
            dead_spans: Vec::new(),
            missing_reference: 0,
            late: 0,
        };
        for (i, (record, plan)) in records.iter().zip(plans).enumerate() {
            if batch.is_copy(i) {
                continue;
            }
            let (mut envelope, lookup, derived) = match plan {
                Plan::Enrich {
                    envelope,
                    lookup,
                    derived,
                } => (envelope, lookup, derived),
                Plan::DeadLetter(code, why) => {
                    sorted.dead.push(dead_letter(record, code, why, None));
                    continue;
                }
            };
            spans.open(i, &mut envelope, false);
            let derived = match derived {
                Ok(derived) => derived,
                Err((code, why)) => {
                    let reason = format!("{code}: {why}");
                    sorted.dead_spans.push((i, sorted.dead.len(), reason));
                    sorted
                        .dead
                        .push(dead_letter(record, code, why, Some(&envelope)));
                    continue;
                }
            };
            let attributes = lookup
                .as_ref()
                .and_then(|k| found.get(k))
                .and_then(Option::as_deref);
            let closes_at = Self::enrich(&mut envelope, derived, lookup.is_some(), attributes);
            // The stream's clock caps the event time, so a producer whose clock runs ahead
            // cannot push the watermark past the present and make everyone else late.
            let arrival = record
                .kinesis
                .approximate_arrival_timestamp
                .timestamp_millis();
            let late = batch.judge(i, closes_at, envelope.event_time.min(arrival));
            if let Some(e) = envelope.enrichment.as_mut() {
                e.late = late;
            }
            sorted.late += u64::from(late);
            if envelope
                .enrichment
                .as_ref()
                .is_some_and(|e| !e.reference_found)
            {
                sorted.missing_reference += 1;
            }
            envelope.stage_times.insert(STAGE.to_string(), now);
            match self.envelopes.encode(&envelope) {
                Ok(bytes) => {
                    sorted.out_records.push((i, record));
                    sorted.out.push(OutRecord {
                        partition_key: record.kinesis.partition_key.clone(),
                        data: bytes,
                    });
                }
                Err(e) => {
                    sorted
                        .dead_spans
                        .push((i, sorted.dead.len(), e.to_string()));
                    let letter = dead_letter(record, e.code(), e.to_string(), Some(&envelope));
                    sorted.dead.push(letter);
                }
            }
        }
        sorted
    }

    /// Publishes the enriched records and parks the dead letters, at the same time; what
    /// either refuses is failed for a retry. Closes every record's span.
    ///
    /// # Errors
    /// The stream or the queue refused the whole call.
    async fn deliver(
        &self,
        sorted: Sorted<'_>,
        spans: &mut BatchSpans,
    ) -> Result<Failures, EnricherError> {
        let mut failures = Failures::default();
        let (dead_records, messages): (Vec<_>, Vec<_>) = sorted
            .dead
            .into_iter()
            .enumerate()
            .map(|(i, (record, msg))| (record, msg.to_sqs(i.to_string())))
            .unzip();
        let (published, sent) =
            tokio::join!(self.output.publish(sorted.out), self.dlq.reject(messages));
        for index in published? {
            if let Some((i, record)) = sorted.out_records.get(index) {
                let why = "the enriched stream refused it";
                spans.close(*i, Outcome::Retried(why.into()));
                failures.fail(record);
            }
        }
        let refused = sent?;
        for index in &refused {
            if let Some(record) = dead_records.get(*index) {
                failures.fail(record);
            }
        }
        for (i, dead, why) in sorted.dead_spans {
            let outcome = if refused.contains(&dead) {
                Outcome::Retried("the dead-letter queue refused it".into())
            } else {
                Outcome::DeadLettered(why)
            };
            spans.close(i, outcome);
        }
        spans.close_all(&Outcome::Published);
        Ok(failures)
    }

    /// Reads the payload once: which reference item the record joins and what it derives.
    fn plan(&self, decoded: Result<Envelope, CodecError>, schemas: &BatchSchemas) -> Plan {
        let envelope = match decoded {
            Ok(e) => e,
            Err(e) => return Plan::DeadLetter(e.code(), e.to_string()),
        };
        let schema = match payload_schema(schemas, &envelope) {
            Ok(schema) => schema,
            Err((code, why)) => return Plan::DeadLetter(code, why),
        };
        let spec = enrich_spec(schema);
        let record = read_record(schema, &envelope.payload);
        let (lookup, derived) = match (spec, record) {
            (Some(spec), Ok(record)) => (
                spec.lookup_key(&record),
                Ok(Derived::Spec {
                    schema: Arc::clone(schema),
                    agg_key_fields: spec.agg_key_fields(&record),
                    // The validator checked the metric's fields; a missing one would be a
                    // contract change in flight, and counting the event with 0 keeps the
                    // count right.
                    metric: spec.metric(&record).unwrap_or(0.0),
                }),
            ),
            (Some(_), Err(e)) => return Plan::DeadLetter(e.code(), e.to_string()),
            (None, Ok(_)) => (None, Ok(Derived::Default)),
            (None, Err(e)) => (None, Err((e.code(), e.to_string()))),
        };
        Plan::Enrich {
            envelope: Box::new(envelope),
            lookup,
            derived,
        }
    }

    /// Completes the enrichment of one envelope once its reference data is known; returns
    /// the event-time watermark at which the event's window is final.
    fn enrich(
        envelope: &mut Envelope,
        derived: Derived,
        joins: bool,
        reference: Option<&HashMap<String, String>>,
    ) -> i64 {
        let spec = match &derived {
            Derived::Spec { schema, .. } => enrich_spec(schema),
            Derived::Default => None,
        };
        let window_start = match spec {
            Some(spec) => spec.window_start(envelope.event_time),
            None => window_start(envelope.event_time, DEFAULT_WINDOW_SECS),
        };
        let closes_at = match spec {
            Some(spec) => spec.closes_at(window_start),
            None => closes_at(
                window_start,
                DEFAULT_WINDOW_SECS,
                i64::from(DEFAULT_ALLOWED_LATENESS_SECS) * 1000,
            ),
        };
        let enrichment = match (spec, &derived) {
            (
                Some(spec),
                Derived::Spec {
                    agg_key_fields,
                    metric,
                    ..
                },
            ) => {
                let empty = HashMap::new();
                let attributes = reference.unwrap_or(&empty);
                Enrichment {
                    agg_key: spec.agg_key_from(agg_key_fields, attributes),
                    metric: *metric,
                    window_start,
                    reference_found: !joins || reference.is_some(),
                    attributes: attributes.clone(),
                    late: false,
                }
            }
            _ => Enrichment {
                agg_key: envelope.subject.clone(),
                metric: 1.0,
                window_start,
                reference_found: true,
                attributes: HashMap::new(),
                late: false,
            },
        };
        envelope.enrichment = Some(enrichment);
        closes_at
    }
}

fn window_start(event_time: i64, secs: u32) -> i64 {
    let len = i64::from(secs) * 1000;
    event_time.div_euclid(len) * len
}

fn riffle_codec_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn dead_letter<'r>(
    record: &'r KinesisEventRecord,
    code: &str,
    why: String,
    envelope: Option<&Envelope>,
) -> (&'r KinesisEventRecord, RejectMessage) {
    let msg = RejectMessage::new(STAGE, record, code, why);
    match envelope {
        Some(e) => (record, msg.with_envelope(e)),
        None => (record, msg),
    }
}

impl<S, R, O, D, M> riffle_runtime::KinesisHandler for Enricher<S, R, O, D, M>
where
    S: SchemaSource + 'static,
    R: ReferenceSource + 'static,
    O: Output + 'static,
    D: Rejects + 'static,
    M: MarkStore,
{
    async fn handle(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, riffle_runtime::HandlerError> {
        riffle_stage::trace::BatchSpans::scope(&self.tracer, STAGE, event, |event| {
            Enricher::handle(self, event)
        })
        .await
        .map_err(Into::into)
    }
}
