//! The decision for one record, free of I/O so it can be tested and benchmarked alone.

use std::collections::HashMap;

use riffle_codec::datum::read_record;
use riffle_codec::rules::CheckPlan;
use riffle_codec::{CodecError, Envelope, EnvelopeCodec};
use riffle_stage::schemas::BatchSchemas;
use riffle_stage::{KinesisEventRecord, RejectMessage};

/// What happens to one record.
#[derive(Debug)]
pub enum Verdict {
    /// The re-encoded envelope for the validated stream.
    Valid(Vec<u8>),
    /// Rejected for good.
    Reject(Reject),
    /// Could not be decided now (registry down); retry later.
    Retry(String),
}

/// A rejection reason, before it becomes a queue message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Stable reason code.
    pub code: &'static str,
    /// What exactly was wrong.
    pub detail: String,
    /// The envelope, when it could be read.
    pub envelope: Option<(String, String, String)>,
}

impl Reject {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Reject {
            code,
            detail: detail.into(),
            envelope: None,
        }
    }

    fn of(mut self, envelope: &Envelope) -> Self {
        self.envelope = Some((
            envelope.event_id.clone(),
            envelope.subject.clone(),
            envelope.source.clone(),
        ));
        self
    }

    /// The queue message for `record`.
    pub fn into_message(self, stage: &str, record: &KinesisEventRecord) -> RejectMessage {
        let mut msg = RejectMessage::new(stage, record, self.code, self.detail);
        if let Some((event_id, subject, source)) = self.envelope {
            msg.event_id = Some(event_id);
            msg.subject = Some(subject);
            msg.source = Some(source);
        }
        msg
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn codec_verdict(error: CodecError, envelope: Option<&Envelope>) -> Verdict {
    if error.retryable() {
        return Verdict::Retry(error.to_string());
    }
    let reject = Reject::new(error.code(), error.to_string());
    Verdict::Reject(match envelope {
        Some(e) => reject.of(e),
        None => reject,
    })
}

/// Contract rules resolved per payload schema id of a batch (see [`plans`]).
pub type Plans = HashMap<u32, CheckPlan>;

/// Resolves, once per batch, the rules of each payload schema's contract (the one
/// registered with the schema, ADR 0020) to field positions.
pub fn plans(schemas: &BatchSchemas) -> Plans {
    schemas
        .iter()
        .filter_map(|(id, schema)| {
            let schema = schema.as_ref().ok()?;
            Some((*id, schema.contract()?.plan(schema)))
        })
        .collect()
}

/// Judges one decoded (or undecodable) envelope.
///
/// `schemas` holds the batch's payload schemas, resolved once per id; `unavailable` the
/// envelope versions the registry could not be asked about (those records are retried).
pub fn judge(
    codec: &EnvelopeCodec,
    schemas: &BatchSchemas,
    plans: &Plans,
    unavailable: &[u32],
    envelope: Result<Envelope, CodecError>,
    now: i64,
) -> Verdict {
    let mut envelope = match envelope {
        Ok(e) => e,
        Err(CodecError::UnknownSchema(id)) if unavailable.contains(&id) => {
            return Verdict::Retry(format!("envelope schema {id}: registry unavailable"));
        }
        Err(e) => return codec_verdict(e, None),
    };
    let lookup = u32::try_from(envelope.schema_id)
        .ok()
        .and_then(|id| schemas.get(&id));
    let schema = match lookup {
        Some(Ok(schema)) => schema,
        Some(Err(e)) if e.retryable() => return Verdict::Retry(e.to_string()),
        Some(Err(e)) => {
            let reject = Reject::new(e.code(), format!("payload {e}"));
            return Verdict::Reject(reject.of(&envelope));
        }
        None => {
            let detail = format!("payload schema id {} is not registered", envelope.schema_id);
            return Verdict::Reject(Reject::new("unknown_schema", detail).of(&envelope));
        }
    };
    if schema.full_name() != Some(envelope.subject.as_str()) {
        let detail = format!(
            "schema {} is {:?}, envelope says {:?}",
            schema.id(),
            schema.full_name(),
            envelope.subject
        );
        return Verdict::Reject(Reject::new("subject_mismatch", detail).of(&envelope));
    }
    let Some(contract) = schema.contract() else {
        let detail = format!(
            "schema {} of subject {:?} was registered without a contract",
            schema.id(),
            envelope.subject
        );
        return Verdict::Reject(Reject::new("unknown_subject", detail).of(&envelope));
    };
    let record = match read_record(schema, &envelope.payload) {
        Ok(record) => record,
        Err(e) => return codec_verdict(e, Some(&envelope)),
    };
    // The subject matched the schema's name, so a plan for this schema is this contract's.
    let checked = match plans.get(&schema.id()) {
        Some(plan) => {
            contract.check_planned(plan, &record, envelope.event_time, envelope.ingest_time)
        }
        None => contract.check(&record, envelope.event_time, envelope.ingest_time),
    };
    if let Err(v) = checked {
        let detail = match &v.field {
            Some(field) => format!("{field}: {}", v.detail),
            None => v.detail.clone(),
        };
        return Verdict::Reject(Reject::new(v.kind.code(), detail).of(&envelope));
    }
    envelope.stage_times.insert(crate::STAGE.to_string(), now);
    match codec.encode(&envelope) {
        Ok(bytes) => Verdict::Valid(bytes),
        Err(e) => codec_verdict(e, Some(&envelope)),
    }
}
